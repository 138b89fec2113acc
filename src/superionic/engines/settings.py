"""Engine settings: typed models (one per engine and stage kind), presets, and how they merge.

Presets are data in ``configs/engines/<name>.yaml`` with one section per engine and, inside, one
per stage kind (plus engine-wide keys such as ``force_field``). Every section is checked against
its model when the preset is read: a key the model does not know is an error naming the preset
file and line, never silently ignored. The defaults are written once, here; engines read
``Model.of(settings).field`` rather than ``settings.get(key, default)``.

Merging (:func:`stage_settings`): model defaults < the campaign stage model's defaults < the
preset < values written in the campaign file.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from superionic.errors import Problem, SpecError
from superionic.paths import configs_dir


class EngineSettings(BaseModel):
    """Base of the settings models: unknown keys are refused in presets, ignored when reading."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls, settings: dict[str, Any] | EngineSettings) -> Self:
        """Read merged settings (which also hold the campaign stage's own fields) into this model.

        Raises
        ------
        SpecError
            Naming each key whose value this model refuses.
        """
        if isinstance(settings, cls):
            return settings
        data = settings.model_dump() if isinstance(settings, BaseModel) else dict(settings)
        known = {k: v for k, v in data.items() if k in cls.model_fields and v is not None}
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            raise SpecError([_problem(err, known) for err in exc.errors()]) from None


def _problem(err: Any, data: dict[str, Any]) -> Problem:
    key = ".".join(str(p) for p in err["loc"])
    value = data.get(str(err["loc"][0]), None) if err["loc"] else None
    return Problem(key, err["msg"], value, "see the engine settings in superionic.engines.settings")


# -- shared pieces ------------------------------------------------------------------------------
class MDSettings(EngineSettings):
    """What every engine's MD reads (campaign md-stage fields of the same names override them)."""

    timestep_fs: float = 2.0
    ramp_steps: int = 0
    start_temperature_K: float = 100.0
    production_steps: int = 5000
    production_chunks: int = 1
    ensemble: Literal["nvt", "npt"] = "nvt"
    thermostat: str = "nose-hoover"
    trajectory_interval: int = 10
    seed: int = 0
    pressure_kbar: float = 0.0
    frozen_species: list[str] = Field(default_factory=list)
    #: the melt-quench reads the md section: heat, hold and cool times (ps)
    heat_ps: float = 2.0
    hold_ps: float = 20.0
    quench_ps: float = 2.0
    density_ps: float = 2.0


# -- MLIP ---------------------------------------------------------------------------------------
class MLIPRelaxSettings(EngineSettings):
    """atomate2 ``ForceFieldRelaxMaker``."""

    force_field: str = "CHGNet"
    fmax_ev_per_A: float = 0.05
    max_steps: int = 500
    relax_cell: bool = True
    #: ASE optimizer; BFGS keeps a dense (3N+9)^2 Hessian, fine up to a few hundred atoms
    optimizer: Literal["FIRE", "BFGS", "LBFGS", "BFGSLineSearch"] = "FIRE"


class MLIPMDSettings(MDSettings):
    """superionic's resumable atomate2 ``ForceFieldMDMaker``."""

    force_field: str = "CHGNet"
    thermostat: Literal["nose-hoover", "langevin", "berendsen"] = "nose-hoover"
    #: MD steps between checkpoints (0: none); checked with its own message by the MLIP engine
    checkpoint_every_steps: Any = None


# -- VASP ---------------------------------------------------------------------------------------
class VaspInputs(EngineSettings):
    """INCAR overrides and a k-point spacing (1/A, n_i = ceil(|b_i| / s))."""

    incar: dict[str, Any] = Field(default_factory=dict)
    kpoint_spacing_per_A: float | None = None


class VaspRelaxSettings(VaspInputs):
    """pymatgen ``MPRelaxSet`` (``base: mp_static``: ``MPStaticSet``)."""

    base: Literal["mp_relax", "mp_static"] = "mp_relax"


class VaspMDSettings(MDSettings):
    """atomate2 ``MDSetGenerator``; NpT Langevin frictions (1/ps) and the lattice mass (amu)."""

    incar: dict[str, Any] = Field(default_factory=dict)
    friction_per_ps: float = 10.0
    lattice_friction_per_ps: float = 10.0
    lattice_mass_amu: float = 1000.0


class NMRSettings(EngineSettings):
    """What every engine's NMR reads (the campaign's nmr stage sets them)."""

    isotopes: list[str] = Field(default_factory=list)
    shielding: bool = True
    efg: bool = True


class VaspNMRSettings(NMRSettings):
    """pymatgen ``MPNMRSet`` runs: chemical shielding (``cs``) and EFG."""

    cs_inputs: VaspInputs = Field(default_factory=VaspInputs)
    efg_inputs: VaspInputs = Field(default_factory=VaspInputs)


# -- CP2K ---------------------------------------------------------------------------------------
class Cp2kDFTSettings(EngineSettings):
    """DFT settings of every CP2K run (pymatgen ``DftSet`` keys, in CP2K's units: Ry)."""

    basis: str = "DZVP-MOLOPT-SR-GTH"
    potential: str = "GTH-PBE"
    functional: str = "PBE"
    spin_polarized: bool = False
    smearing: bool = False
    cutoff_Ry: float = 400.0
    rel_cutoff_Ry: float = 50.0
    eps_scf: float = 1e-6
    max_scf: int = 50
    ot: bool = True
    kpoint_spacing_per_A: float | None = None
    #: a raw CP2K input tree, merged last
    override: dict[str, Any] = Field(default_factory=dict)


class Cp2kRelaxSettings(Cp2kDFTSettings):
    """CELL_OPT (``relax_cell``) or GEO_OPT.

    The relax stage's own ``fmax_ev_per_A`` and ``max_steps``, when the campaign file sets them,
    beat the preset's ``max_force_Ha_per_bohr`` and ``max_iter`` (they were ignored for CP2K).
    """

    relax_cell: bool = True
    max_force_Ha_per_bohr: float | None = None
    max_iter: int | None = None
    fmax_ev_per_A: float | None = None
    max_steps: int | None = None


class Cp2kMDSettings(Cp2kDFTSettings, MDSettings):
    """Born-Oppenheimer MD: Nose-Hoover or Langevin NVT, NPT_F / NPT_I."""

    ramp_segments: int = 4
    quench_segments: int = 4
    npt_cell: str = "flexible"
    friction_per_ps: float = 10.0
    barostat_timecon_fs: float | None = None
    lattice_mass_amu: float | None = None


class Cp2kNMRSettings(NMRSettings):
    """GAPW linear-response shielding (Gamma point only)."""

    cutoff_Ry: float = 300.0
    min_cell_A: float = 10.0


# -- ABINIT -------------------------------------------------------------------------------------
class AbinitNMRSettings(NMRSettings):
    """PAW EFG (``prtefg 2``); unset values take :func:`superionic.engines.abinit.efg_input`'s."""

    ecut_Ha: float | None = None
    pawecutdg_Ha: float | None = None
    kpoint_spacing_per_A: float | None = None


#: (engine, stage kind) -> its model; the quench stage reads the md section
MODELS: dict[tuple[str, str], type[EngineSettings]] = {
    ("mlip", "relax"): MLIPRelaxSettings,
    ("mlip", "md"): MLIPMDSettings,
    ("vasp", "relax"): VaspRelaxSettings,
    ("vasp", "static"): VaspRelaxSettings,
    ("vasp", "md"): VaspMDSettings,
    ("vasp", "nmr"): VaspNMRSettings,
    ("cp2k", "relax"): Cp2kRelaxSettings,
    ("cp2k", "static"): Cp2kDFTSettings,
    ("cp2k", "md"): Cp2kMDSettings,
    ("cp2k", "nmr"): Cp2kNMRSettings,
    ("abinit", "nmr"): AbinitNMRSettings,
}


def settings_model(engine: str, stage: str) -> type[EngineSettings] | None:
    """Return the settings model of an engine's stage kind (quench: the md model), or None."""
    return MODELS.get((engine, "md" if stage == "quench" else stage))


# -- presets ------------------------------------------------------------------------------------
class _Lines:
    """Line numbers of a round-trip YAML mapping tree (for messages naming a preset's line)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def line(self, *path: str) -> int | None:
        node, line = self.node, None
        for key in path:
            lc = getattr(node, "lc", None)
            if lc is None or not hasattr(node, "get") or key not in node:
                return line
            line = lc.data[key][0] + 1
            node = node[key]
        return line


#: top-level preset keys that are not engine sections
PRESET_TOP_KEYS = ("name", "description")

#: what the campaign's nmr stage decides (which isotopes and calculations), never a preset
STAGE_ONLY = frozenset(NMRSettings.model_fields)


def _preset_problems(path: Path, data: Any) -> list[Problem]:
    """Check every engine section of a preset against the settings models."""
    lines = _Lines(data)
    problems: list[Problem] = []
    for engine, section in (data or {}).items():
        if engine in PRESET_TOP_KEYS:
            continue
        models = {stage: m for (eng, stage), m in MODELS.items() if eng == engine}
        if "md" in models:  # a quench section refines the md settings the melt-quench reads
            models["quench"] = models["md"]
        if not models or not isinstance(section, dict):
            problems.append(
                Problem(
                    str(engine),
                    "unknown engine section",
                    engine,
                    ", ".join(sorted({e for e, _ in MODELS})),
                    lines.line(engine),
                )
            )
            continue
        wide_ok = set().union(*(m.model_fields for m in models.values()))
        for key, value in section.items():
            if isinstance(value, dict) and key in models:
                for field in sorted(STAGE_ONLY & set(value)):
                    problems.append(
                        Problem(
                            f"{engine}.{key}.{field}",
                            "set by the campaign's nmr stage, not by a preset",
                            value[field],
                            f"{field} under the nmr stage in the campaign file",
                            lines.line(engine, key, field),
                        )
                    )
                try:
                    models[key].model_validate(dict(value))
                except ValidationError as exc:
                    for err in exc.errors():
                        loc = [str(p) for p in err["loc"]]
                        problems.append(
                            Problem(
                                f"{engine}.{key}.{'.'.join(loc)}",
                                "unknown setting" if err["type"] == "extra_forbidden" else err["msg"],
                                err.get("input"),
                                ", ".join(sorted(models[key].model_fields)),
                                lines.line(engine, key, loc[0]) if loc else lines.line(engine, key),
                            )
                        )
            elif isinstance(value, dict) or key not in wide_ok:
                valid = (
                    f"a stage section ({', '.join(sorted(models))}) or one of {', '.join(sorted(wide_ok))}"
                )
                problems.append(
                    Problem(f"{engine}.{key}", "unknown setting", key, valid, lines.line(engine, key))
                )
    return problems


def preset_path(name: str) -> Path:
    """Return the file of preset ``name`` (``configs/engines/<name>.yaml``)."""
    return configs_dir() / "engines" / f"{name}.yaml"


@lru_cache(maxsize=32)
def _load_preset_cached(path: Path, _mtime_ns: int) -> dict[str, Any]:
    # keyed by file and modification time: SUPERIONIC_CONFIGS or an edited preset is read afresh
    from ruamel.yaml import YAML

    data = YAML().load(path.read_text())  # round trip: keeps line numbers for messages
    problems = _preset_problems(path, data)
    if problems:
        raise SpecError(problems, file=str(path))
    return _plain(data or {})


def _plain(node: Any) -> Any:
    if hasattr(node, "items"):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def load_preset(name: str) -> dict[str, Any]:
    """Return a preset, checked against the settings models (a deep copy; callers may modify it)."""
    path = preset_path(name)
    if not path.is_file():
        known = sorted(p.stem for p in (configs_dir() / "engines").glob("*.yaml"))
        raise SpecError.single("preset", "unknown preset", name, ", ".join(known))
    return copy.deepcopy(_load_preset_cached(path, path.stat().st_mtime_ns))


class StageOverrides(dict):
    """A campaign stage's settings, remembering which of them the campaign file gave explicitly."""

    explicit: frozenset[str] = frozenset()


def stage_overrides(stage: Any) -> StageOverrides:
    """Return a stage model's settings for :func:`stage_settings` (defaults included, marked as such).

    A preset's value beats the stage model's default (``antiperovskite_amide``'s ``thermostat:
    langevin`` must not become the model's ``nose-hoover``); a value written in the campaign file
    beats the preset.
    """
    out = StageOverrides(stage.model_dump(exclude={"stage", "engine", "preset"}))
    out.explicit = frozenset(stage.model_fields_set)
    return out


def stage_settings(preset: str, engine: str, stage: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge the preset's settings for (engine, stage) with the stage's explicit overrides.

    Parameters
    ----------
    preset : str
        Preset name.
    engine : str
        ``mlip``, ``vasp``, ``cp2k`` or ``abinit``.
    stage : str
        Stage name.
    overrides : dict
        Settings given in the campaign file (``None`` values are ignored). From
        :func:`stage_overrides`, a value the file did not set (the model's default) only fills a
        key the preset does not set.

    Returns
    -------
    dict
        The merged settings, plus the engine-wide keys of the preset (e.g. ``force_field``). The
        quench stage starts from the preset's ``md`` section.

    """
    data = load_preset(preset).get(engine, {})
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if stage == "quench":  # a melt-quench is MD: the preset's md settings, then any quench section
        merged.update(data.get("md", {}) or {})
    merged.update(data.get(stage, {}) or {})
    explicit = getattr(overrides, "explicit", None)
    for key, value in overrides.items():
        if value is not None and (explicit is None or key in explicit or key not in merged):
            merged[key] = value
    return merged
