"""Load a campaign file: parse YAML, validate, check the physics, expand sweeps.

Every problem becomes one line ``file:line: yaml.path: message (got value); valid: ...``;
:func:`load_campaign` raises :class:`SpecError` with all of them and writes nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pymatgen.core import Structure
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from superionic.errors import Problem, SpecError, StructureError
from superionic.paths import configs_dir
from superionic.spec.models import (
    STAGE_NAMES,
    CampaignSpec,
    HullStage,
    MDStage,
    NMRStage,
    OrderStage,
    QuenchStage,
    RelaxStage,
    StoreSpec,
    SystemSpec,
)

_STAGE_MODELS: dict[str, type[BaseModel]] = {
    "order": OrderStage,
    "relax": RelaxStage,
    "hull": HullStage,
    "nmr": NMRStage,
    "md": MDStage,
    "quench": QuenchStage,
}

# Which (engine, stage) pairs this version builds. The others are refused at validation with a
# message naming the issue that adds them, never half-run.
SUPPORTED: dict[str, set[str]] = {
    "order": {"mlip", "vasp", "cp2k"},  # engine-independent
    "relax": {"mlip", "vasp", "cp2k"},
    "md": {"mlip", "vasp", "cp2k"},
    "hull": {"mlip", "vasp", "cp2k"},
    "nmr": {"vasp", "cp2k", "abinit"},
    "quench": {"mlip", "vasp", "cp2k"},
}


def engine_available(engine: str) -> tuple[bool, str, str]:
    """Whether an engine can run here: (ok, reason, how to fix)."""
    if engine == "vasp":
        from superionic.engines.vasp import vasp_available

        ok, why = vasp_available()
        return ok, why, "an installed VASP, or SUPERIONIC_VASP_REPLAY for replay"
    if engine == "abinit":
        from superionic.engines.abinit import abinit_available

        ok, why = abinit_available()
        return ok, why, "an installed ABINIT (apt-get install abinit abinit-data), or engine vasp"
    if engine == "cp2k":
        from superionic.engines.cp2k import cp2k_available

        ok, why = cp2k_available()
        return ok, why, "an installed CP2K (apt-get install cp2k), or engine mlip"
    return True, "", ""


@dataclass
class SystemInstance:
    """One expanded system of a campaign.

    Attributes
    ----------
    name : str
        Unique name within the campaign.
    spec : SystemSpec
        The system entry with sweep lists replaced by single values.
    structure : Structure
        The (super)cell, disordered or ordered, with oxidation states where known.
    oxidation_states : dict
        Element -> charge used for ordering.
    index : int
        Position of the originating entry in ``systems``.

    """

    name: str
    spec: SystemSpec
    structure: Structure
    oxidation_states: dict[str, float]
    index: int
    polyanions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_ordered(self) -> bool:
        """Whether every site is fully occupied by one species."""
        return self.structure.is_ordered

    @property
    def elements(self) -> set[str]:
        """Elements of the final structures (rigid units' ligands included)."""
        els = {el.symbol for el in self.structure.composition.elements if el.symbol != "X"}
        els |= {str(u.get("ligand")) for u in self.polyanions.values() if u.get("ligand")}
        return els


@dataclass
class Campaign:
    """A validated campaign with its systems expanded."""

    spec: CampaignSpec
    file: Path
    systems: list[SystemInstance] = field(default_factory=list)
    #: engines the campaign needs that are missing on this machine (checked again where jobs run)
    notes: list[Problem] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        """The folder holding the campaign file."""
        return self.file.parent

    @property
    def store_path(self) -> Path:
        """The embedded store folder (default ``<campaign dir>/.superionic``)."""
        path = self.spec.store.path or Path(".superionic")
        return path if path.is_absolute() else (self.directory / path).resolve()


def _line_of(data: Any, loc: tuple) -> int | None:
    """Return the 1-based line of the deepest YAML node on ``loc`` (None if unknown)."""
    node, line = data, None
    for part in loc:
        try:
            if isinstance(part, int) and isinstance(node, list):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            elif isinstance(node, dict) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            else:
                continue  # pydantic's union tag, or a missing key
        except (AttributeError, KeyError, IndexError, TypeError):
            break
    return line


def _yaml_path(loc: tuple, data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and part not in node and part in _STAGE_MODELS:
            continue  # discriminator tag inserted by pydantic
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """Return the model whose fields a location's last key belongs to."""
    model: type[BaseModel] | None = CampaignSpec
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if part in _STAGE_MODELS and model is not CampaignSpec:
            model = _STAGE_MODELS[part]
            continue
        sub = {"systems": SystemSpec, "store": StoreSpec, "stages": None}.get(part, "other")
        if part == "stages":
            model = None  # resolved by the tag that follows
            for nxt in loc[loc.index(part) + 1 :]:
                if isinstance(nxt, str) and nxt in _STAGE_MODELS:
                    model = _STAGE_MODELS[nxt]
                    break
            continue
        if sub == "other":
            return None
        model = sub
    return model


def _problems_from_validation(err: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = _yaml_path(loc, data)
        line = _line_of(data, loc)
        valid = ""
        value = e.get("input")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            model = _model_at(loc)
            msg = f"unknown key '{loc[-1]}'"
            value = None
            if model is not None:
                valid = "keys " + ", ".join(model.model_fields)
        elif e["type"] == "missing":
            msg = "required field is missing"
            value = None
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            valid = "stage: one of " + ", ".join(STAGE_NAMES)
        if isinstance(value, dict | list) and len(str(value)) > 80:
            value = None
        problems.append(Problem(where, msg, value, valid, line))
    return problems


def _expand(system: SystemSpec) -> list[tuple[str, dict[str, Any]]]:
    sweep = {k: v for k, v in system.params.items() if isinstance(v, list)}
    fixed = {k: v for k, v in system.params.items() if not isinstance(v, list)}
    if not sweep:
        return [("", dict(fixed))]
    keys = list(sweep)
    out = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        params = dict(fixed)
        params.update(dict(zip(keys, combo, strict=True)))
        suffix = "-".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
        out.append((suffix, params))
    return out


def _build_system(
    campaign_dir: Path, system: SystemSpec, index: int, data: Any
) -> tuple[list[SystemInstance], list[Problem]]:
    where = f"systems[{index}]"
    problems: list[Problem] = []
    instances: list[SystemInstance] = []
    if system.structure is not None:
        path = system.structure if system.structure.is_absolute() else campaign_dir / system.structure
        if not path.is_file():
            problems.append(
                Problem(
                    f"{where}.structure",
                    "structure file not found",
                    str(system.structure),
                    f"an existing CIF/POSCAR path relative to {campaign_dir}",
                    _line_of(data, ("systems", index, "structure")),
                )
            )
            return [], problems
        try:
            structure = Structure.from_file(path)
        except Exception as exc:  # pymatgen raises many types for unreadable files
            problems.append(
                Problem(
                    f"{where}.structure",
                    f"cannot read structure: {exc}",
                    str(path),
                    "a CIF, POSCAR or other pymatgen-readable file",
                )
            )
            return [], problems
        ox = dict(system.oxidation_states)
        name = system.name or path.stem
        structure.make_supercell(list(system.supercell))
        instances.append(SystemInstance(name, system, structure, ox, index, dict(system.polyanions)))
        return instances, problems

    from superionic.structures.prototypes import build_disordered, load_prototype

    try:
        proto = load_prototype(system.prototype or "")
    except StructureError as exc:
        p = exc.problems[0]
        problems.append(
            Problem(
                f"{where}.prototype",
                p.message,
                p.value,
                p.valid,
                _line_of(data, ("systems", index, "prototype")),
            )
        )
        return [], problems
    for suffix, params in _expand(system):
        try:
            structure = build_disordered(
                proto.name, params, system.sites, where=where, oxidation_states=system.oxidation_states
            )
        except StructureError as exc:
            for p in exc.problems:
                loc = tuple(
                    int(x) if x.isdigit() else x
                    for x in p.where.replace("[", ".").replace("]", "").split(".")
                )
                problems.append(Problem(p.where, p.message, p.value, p.valid, _line_of(data, loc)))
            continue
        structure.make_supercell(list(system.supercell))
        base = system.name or proto.name
        name = f"{base}-{suffix}" if suffix else base
        ox = dict(proto.oxidation_states)
        ox.update(system.oxidation_states)
        spec = system.model_copy(update={"params": params})
        units = {**proto.polyanions, **system.polyanions}
        instances.append(SystemInstance(name, spec, structure, ox, index, units))
    return instances, problems


def _check_stages(
    spec: CampaignSpec,
    data: Any,
    systems: list[SystemInstance],
    engines: str = "require",
    base_dir: Path | None = None,
    notes: list[Problem] | None = None,
) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    names = [s.stage for s in spec.stages]
    for i, stage in enumerate(spec.stages):
        loc = ("stages", i)
        if stage.stage in seen:
            problems.append(
                Problem(
                    f"stages[{i}].stage",
                    "stage listed twice",
                    stage.stage,
                    "each stage at most once",
                    _line_of(data, loc),
                )
            )
        seen.add(stage.stage)
        engine = stage.engine or spec.engine
        if engine not in SUPPORTED[stage.stage]:
            ok = sorted(SUPPORTED[stage.stage])
            problems.append(
                Problem(
                    f"stages[{i}].engine" if stage.engine else "engine",
                    f"stage '{stage.stage}' cannot run on engine '{engine}' in superionic {_version()}",
                    engine,
                    f"engine one of {ok}" if ok else f"remove the '{stage.stage}' stage (not available yet)",
                    _line_of(data, loc),
                )
            )
        if engines != "off" and stage.stage != "order" and engine in SUPPORTED[stage.stage]:
            ok, why, fix = engine_available(engine)
            if not ok:
                problem = Problem(
                    f"stages[{i}].engine" if stage.engine else "engine",
                    why,
                    engine,
                    fix,
                    _line_of(data, (*loc, "engine")) if stage.engine else _line_of(data, ("engine",)),
                )
                # once per engine, at the line that names it; "note": needed where the jobs run,
                # not where they are submitted (checked again when each job starts)
                target = problems if engines == "require" else notes
                if target is not None and not any(p.value == engine and p.message == why for p in target):
                    target.append(problem)
        preset = stage.preset or spec.preset
        preset_where = f"stages[{i}].preset" if stage.preset else "preset"
        preset_ok = (configs_dir() / "engines" / f"{preset}.yaml").is_file()
        # the campaign's own preset is reported once, at its line, not once per stage using it
        if not (configs_dir() / "engines" / f"{preset}.yaml").is_file() and not any(
            p.where == preset_where for p in problems
        ):
            known = sorted(p.stem for p in (configs_dir() / "engines").glob("*.yaml"))
            problems.append(
                Problem(
                    preset_where,
                    "unknown preset",
                    preset,
                    ", ".join(known),
                    _line_of(data, (*loc, "preset")) if stage.preset else _line_of(data, ("preset",)),
                )
            )
        if isinstance(stage, QuenchStage):
            for t in stage.melt_temperatures_K:
                if t <= stage.start_temperature_K:
                    problems.append(
                        Problem(
                            f"stages[{i}].melt_temperatures_K",
                            "a melt temperature must lie above the start temperature",
                            t,
                            f"values above start_temperature_K = {stage.start_temperature_K:g} K",
                            _line_of(data, (*loc, "melt_temperatures_K")),
                        )
                    )
            if stage.density != "none" and engine == "cp2k":
                problems.append(
                    Problem(
                        f"stages[{i}].density",
                        "the density step runs on the mlip and vasp engines only",
                        stage.density,
                        "none, or engine mlip/vasp for this stage",
                        _line_of(data, (*loc, "density")),
                    )
                )
            if stage.snapshot_temperature_K is not None:
                md_stage = next((st for st in spec.stages if isinstance(st, MDStage)), None)
                temps = list(md_stage.temperatures_K) if md_stage else []
                if stage.snapshot_temperature_K not in temps or not stage.center:
                    problems.append(
                        Problem(
                            f"stages[{i}].snapshot_temperature_K",
                            "snapshots need an md stage at this temperature and a centre",
                            stage.snapshot_temperature_K,
                            f"one of the md stage's temperatures_K {temps} (with center set)",
                            _line_of(data, (*loc, "snapshot_temperature_K")),
                        )
                    )
            if stage.ligands and not stage.center:
                problems.append(
                    Problem(
                        f"stages[{i}].center",
                        "ligands given without a centre",
                        None,
                        "e.g. center: Ta",
                        _line_of(data, loc),
                    )
                )
        if isinstance(stage, NMRStage) and engine == "abinit":
            problems += _abinit_nmr_problems(stage, systems, i, data, loc)
        if isinstance(stage, NMRStage) and engine == "cp2k":
            problems += _cp2k_nmr_problems(stage, spec.preset, systems, i, data, loc, engines != "off")
        if isinstance(stage, MDStage) and engine == "mlip" and preset_ok:
            from superionic.engines import stage_overrides, stage_settings

            # the settings the run gets: the campaign's values over the preset's over the defaults
            eff = stage_settings(preset, "mlip", "md", stage_overrides(stage))
            if eff.get("ensemble") == "npt" and eff.get("thermostat", "nose-hoover") != "nose-hoover":
                from_preset = "thermostat" not in stage.model_fields_set
                problems.append(
                    Problem(
                        f"stages[{i}].thermostat",
                        "MLIP NpT runs ASE's MTK Nose-Hoover chain barostat only"
                        + (f" (thermostat from preset '{preset}')" if from_preset else ""),
                        eff.get("thermostat"),
                        "nose-hoover with ensemble npt",
                        _line_of(data, (*loc, "thermostat")) or _line_of(data, loc),
                    )
                )
        if isinstance(stage, MDStage) and engine == "cp2k":
            problems += _cp2k_md_problems(stage, stage.preset or spec.preset, i, data, loc)
        if isinstance(stage, MDStage) and stage.fit_start >= stage.fit_end:
            problems.append(
                Problem(
                    f"stages[{i}].fit_start",
                    "fit window is empty",
                    (stage.fit_start, stage.fit_end),
                    "fit_start < fit_end",
                    _line_of(data, (*loc, "fit_start")),
                )
            )
    hull = next((st for st in spec.stages if isinstance(st, HullStage)), None)
    if hull is not None:
        i = names.index("hull")
        if "relax" not in names:
            problems.append(
                Problem(
                    f"stages[{i}]",
                    "the hull stage compares relaxed energies but the campaign has no 'relax' stage",
                    "hull",
                    "add '- stage: relax' before '- stage: hull'",
                    _line_of(data, ("stages", i)),
                )
            )
        entries = hull.entries_file
        if entries is not None:
            full = entries if entries.is_absolute() or base_dir is None else base_dir / entries
            if not full.is_file():
                problems.append(
                    Problem(
                        f"stages[{i}].entries_file",
                        "entries file not found",
                        str(entries),
                        "a JSON list of ComputedEntry dicts (path relative to the campaign file)",
                        _line_of(data, ("stages", i, "entries_file")),
                    )
                )
        else:
            from superionic.structures.phases import check_phases_cover

            for s in systems:
                problems += check_phases_cover(
                    s.elements, f"systems[{s.index}] ({s.name})", _line_of(data, ("systems", s.index))
                )
    order = next((st for st in spec.stages if isinstance(st, OrderStage)), None)
    if order is not None:
        from superionic.ordering.ewald import find_sublattices

        for s in systems:
            try:
                find_sublattices(s.structure, round_counts=order.round_counts, group_by=order.group_by)
            except StructureError as exc:
                for p in exc.problems:
                    problems.append(
                        Problem(
                            f"systems[{s.index}] ({s.name}, supercell {list(s.spec.supercell)})",
                            f"{p.where}: {p.message}",
                            p.value,
                            p.valid,
                            _line_of(data, ("systems", s.index)),
                        )
                    )
    if "order" not in names:
        for s in systems:
            if not s.is_ordered:
                problems.append(
                    Problem(
                        f"systems[{s.index}]",
                        f"system '{s.name}' has partially occupied sites but "
                        "the campaign has no 'order' stage",
                        s.structure.composition.formula,
                        "add '- stage: order' before the other stages",
                        _line_of(data, ("systems", s.index)),
                    )
                )
    return problems


def _abinit_nmr_problems(
    stage: NMRStage, systems: list[SystemInstance], i: int, data: Any, loc: tuple
) -> list[Problem]:
    """ABINIT computes the EFG only, and only for elements with a JTH PAW dataset."""
    from superionic.engines.abinit import paw_dir

    problems = []
    if stage.shielding:
        problems.append(
            Problem(
                f"stages[{i}].shielding",
                "the ABINIT route computes EFGs only",
                True,
                "shielding: false with engine abinit (shielding on vasp or cp2k in another campaign)",
                _line_of(data, (*loc, "shielding")),
            )
        )
    have = {p.stem for p in paw_dir().glob("*.xml")}
    for s in systems:
        missing = sorted(s.elements - have)
        if missing:
            problems.append(
                Problem(
                    f"systems[{s.index}] ({s.name})",
                    f"no JTH PAW dataset for {', '.join(missing)} in {paw_dir()} (ABINIT EFG)",
                    missing,
                    f"elements among {', '.join(sorted(have)) or '(none installed)'}, or engine vasp",
                    _line_of(data, ("systems", s.index)),
                )
            )
    return problems


def _cp2k_md_problems(stage: MDStage, preset: str, i: int, data: Any, loc: tuple) -> list[Problem]:
    """CP2K MD: what CP2K cannot run as asked (Langevin NpT, Berendsen, bad barostat settings).

    Stage fields (``thermostat``, ``ensemble``) are named at their line in the campaign file,
    preset keys (``cp2k.md.npt_cell``, ...) by preset name.
    """
    if not (configs_dir() / "engines" / f"{preset}.yaml").is_file():
        return []  # reported as an unknown preset
    from superionic.engines import stage_overrides, stage_settings
    from superionic.engines.cp2k import md_settings_problems

    overrides = stage_overrides(stage)
    out = []
    for p in md_settings_problems(stage_settings(preset, "cp2k", "md", overrides)):
        if p.where in MDStage.model_fields:
            where, line = f"stages[{i}].{p.where}", _line_of(data, (*loc, p.where)) or _line_of(data, loc)
        else:
            where, line = f"preset '{preset}' cp2k.md.{p.where}", None
        out.append(Problem(where, p.message, p.value, p.valid, line))
    return out


def _cp2k_nmr_problems(
    stage: NMRStage,
    campaign_preset: str,
    systems: list[SystemInstance],
    i: int,
    data: Any,
    loc: tuple,
    check_engines: bool,
) -> list[Problem]:
    """CP2K NMR: Gamma-only size check on the input cells, and the EFG canary before any job."""
    from superionic.engines import stage_settings

    problems = []
    min_cell = float(
        stage_settings(stage.preset or campaign_preset, "cp2k", "nmr", {}).get("min_cell_A", 10.0)
    )
    for s in systems:
        if min(s.structure.lattice.abc) < min_cell:
            problems.append(
                Problem(
                    f"systems[{s.index}] ({s.name})",
                    "CP2K NMR is Gamma-point only; this cell is too small "
                    f"(lengths {', '.join(f'{x:.2f}' for x in s.structure.lattice.abc)} A)",
                    f"{min(s.structure.lattice.abc):.2f} A",
                    f"a supercell with every length >= {min_cell:g} A (set `supercell`), or engine vasp",
                    _line_of(data, ("systems", s.index)),
                )
            )
    if stage.efg and check_engines:
        from superionic.engines.cp2k import cp2k_available

        if cp2k_available()[0]:
            import tempfile

            from superionic.engines.cp2k_nmr import efg_canary

            ok, reason = efg_canary(Path(tempfile.mkdtemp(prefix="superionic-canary-")))
            if not ok:
                problems.append(
                    Problem(
                        f"stages[{i}].efg",
                        reason,
                        True,
                        "efg: false with engine cp2k (shielding only), or engine vasp for the EFG",
                        _line_of(data, (*loc, "efg")),
                    )
                )
    return problems


def _version() -> str:
    from superionic import __version__

    return __version__


def load_campaign(path: str | Path, check_engines: bool | str = True) -> Campaign:
    """Read, validate and expand a campaign file.

    Parameters
    ----------
    path : str or Path
        The campaign YAML.
    check_engines : bool or str
        What to do about an engine that cannot run on this machine (e.g. VASP not on PATH):
        ``True``/``"require"`` refuses it (``run``, which runs the jobs here); ``"note"`` records it
        in :attr:`Campaign.notes` (``validate``, ``submit``: the jobs run elsewhere, where the
        engine is checked again when each job starts); ``False``/``"off"`` skips the check.

    Returns
    -------
    Campaign

    Raises
    ------
    SpecError
        With one :class:`Problem` per thing wrong, each naming the YAML path, the value and
        what would be valid.

    """
    file = Path(path)
    shown = str(path)
    if not file.is_file():
        raise SpecError([Problem("(file)", "campaign file not found", shown, "a path to a YAML file")], shown)
    text = file.read_text()
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(
            [
                Problem(
                    "(YAML)",
                    f"malformed YAML: {exc.problem}",
                    None,
                    "well-formed YAML (check indentation, colons and quotes)",
                    line,
                )
            ],
            shown,
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            [
                Problem(
                    "(top level)",
                    "a campaign must be a YAML mapping",
                    type(data).__name__,
                    "keys name, systems, stages, ...",
                    1,
                )
            ],
            shown,
        )
    plain = _to_plain(data)
    try:
        spec = CampaignSpec.model_validate(plain)
    except ValidationError as exc:
        raise SpecError(_problems_from_validation(exc, data), shown) from None
    problems: list[Problem] = []
    systems: list[SystemInstance] = []
    for i, system in enumerate(spec.systems):
        inst, probs = _build_system(file.parent.resolve(), system, i, data)
        systems.extend(inst)
        problems.extend(probs)
    names = [s.name for s in systems]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        entries = sorted({s.index for s in systems if s.name == dup})
        j = entries[-1]  # reported at the later entry, naming the earlier ones
        named = spec.systems[j].name is not None
        earlier = ", ".join(f"systems[{k}] (line {_line_of(data, ('systems', k))})" for k in entries[:-1])
        problems.append(
            Problem(
                f"systems[{j}].name" if named else f"systems[{j}]",
                f"two systems have the same name: also {earlier}"
                if earlier
                else "two systems of this entry's sweep have the same name (a value listed twice?)",
                dup,
                "give each system a distinct 'name'",
                _line_of(data, ("systems", j, "name") if named else ("systems", j)),
            )
        )
    mode = {True: "require", False: "off"}.get(check_engines, check_engines)  # type: ignore[call-overload]
    if mode not in ("require", "note", "off"):
        raise ValueError(f"check_engines must be True, False, 'require', 'note' or 'off', not {mode!r}")
    notes: list[Problem] = []
    problems.extend(_check_stages(spec, data, systems, mode, file.parent, notes))
    if problems:
        raise SpecError(problems, shown)
    return Campaign(spec=spec, file=file.resolve(), systems=systems, notes=notes)


def _to_plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    return node
