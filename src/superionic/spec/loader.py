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

from superionic.engines.base import engines_for, get_engine
from superionic.engines.settings import load_preset
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
        offered = engines_for(stage.stage)
        if engine not in offered:
            ok = offered
            problems.append(
                Problem(
                    f"stages[{i}].engine" if stage.engine else "engine",
                    f"stage '{stage.stage}' cannot run on engine '{engine}' in superionic {_version()}",
                    engine,
                    f"engine one of {ok}" if ok else f"remove the '{stage.stage}' stage (not available yet)",
                    _line_of(data, loc),
                )
            )
        if engines != "off" and stage.stage != "order" and engine in offered:
            ok, why = get_engine(engine).available()
            fix = get_engine(engine).install_hint
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
        if preset_ok and engine in offered:
            problems += _engine_problems(stage, engine, preset, systems, i, data)
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


def _engine_problems(
    stage: Any, engine: str, preset: str, systems: list[SystemInstance], i: int, data: Any
) -> list[Problem]:
    """Ask the stage's engine what it cannot do (its ``check()``), and place each answer in the file.

    A problem about a stage field is named ``stages[i].<field>`` at its line (saying so when the
    value came from the preset); about a system, at the system's line; about another preset
    key, by preset name and section.
    """
    from superionic.engines import stage_overrides, stage_settings
    from superionic.engines.base import SystemView

    loc = ("stages", i)
    labels = {f"systems[{s.index}] ({s.name})": s for s in systems}
    views = [SystemView(label, s.structure, frozenset(s.elements)) for label, s in labels.items()]
    settings = stage_settings(preset, engine, stage.stage, stage_overrides(stage))
    section = "md" if stage.stage == "quench" else stage.stage
    from_preset = load_preset(preset).get(engine, {}).get(section, {})
    out = []
    for p in get_engine(engine).check(stage.stage, settings, views):
        if p.where in labels:
            line = _line_of(data, ("systems", labels[p.where].index))
            out.append(Problem(p.where, p.message, p.value, p.valid, line))
        elif p.where in type(stage).model_fields:
            message = p.message
            if p.where not in stage.model_fields_set and p.where in from_preset:
                message += f" ({p.where} from preset '{preset}')"
            line = _line_of(data, (*loc, p.where)) or _line_of(data, loc)
            out.append(Problem(f"stages[{i}].{p.where}", message, p.value, p.valid, line))
        else:
            out.append(
                Problem(f"preset '{preset}' {engine}.{section}.{p.where}", p.message, p.value, p.valid)
            )
    return out


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
