"""Cross-field checks of a campaign: stage order, engines (through their ``check()``), hull, ordering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from superionic.engines.base import engines_for, get_engine
from superionic.engines.settings import load_preset
from superionic.errors import Problem, StructureError
from superionic.paths import configs_dir
from superionic.spec.models import (
    CampaignSpec,
    FinetuneStage,
    HullStage,
    MDStage,
    OrderStage,
    QuenchStage,
    RelaxStage,
)
from superionic.spec.systems import SystemInstance
from superionic.spec.yaml_errors import _line_of


def _check_stages(
    spec: CampaignSpec,
    data: Any,
    systems: list[SystemInstance],
    engines: str = "require",
    base_dir: Path | None = None,
    notes: list[Problem] | None = None,
    machine: bool = False,
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
        problems += _check_system_names(stage, loc, data, {s.name for s in systems})
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
            problems += _engine_problems(stage, engine, preset, systems, i, data, machine)
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
    return problems + _finetune_problems(spec, data)


def _finetune_problems(spec: CampaignSpec, data: Any) -> list[Problem]:
    """``force_field: finetuned`` needs a finetune stage; a finetune stage needs DFT relaxations."""
    problems = []
    finetune = next((s for s in spec.stages if isinstance(s, FinetuneStage)), None)
    relax = next((s for s in spec.stages if isinstance(s, RelaxStage)), None)
    for i, stage in enumerate(spec.stages):
        force_field = getattr(stage, "force_field", None)
        if force_field and (stage.engine or spec.engine) != "mlip":
            problems.append(
                Problem(
                    f"stages[{i}].force_field",
                    "a force field is for the mlip engine",
                    force_field,
                    f"engine: mlip on this stage (it runs on {stage.engine or spec.engine})",
                    _line_of(data, ("stages", i, "force_field")),
                )
            )
            continue
        if force_field != "finetuned":
            continue
        if finetune is None or isinstance(stage, RelaxStage):
            why = (
                "no finetune stage" if finetune is None else "the relaxations come before the finetune stage"
            )
            problems.append(
                Problem(
                    f"stages[{i}].force_field",
                    why,
                    "finetuned",
                    "a finetune stage (after a DFT relax stage) and force_field: finetuned on md or quench",
                    _line_of(data, ("stages", i, "force_field")),
                )
            )
    if finetune is not None:
        i = spec.stages.index(finetune)
        engine = finetune.engine or (relax.engine if relax is not None else None) or spec.engine
        if relax is None or engine not in ("cp2k", "vasp"):
            problems.append(
                Problem(
                    f"stages[{i}]",
                    "a finetune stage trains on DFT single points of the relaxed orderings",
                    engine if relax is not None else "no relax stage",
                    "a relax stage and a DFT engine (cp2k or vasp) for the single points",
                    _line_of(data, ("stages", i)),
                )
            )
    return problems


def _engine_problems(
    stage: Any,
    engine: str,
    preset: str,
    systems: list[SystemInstance],
    i: int,
    data: Any,
    machine: bool = False,
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
    found = get_engine(engine).check(stage.stage, settings, views)
    if machine:  # what is known to fail on this machine (validate, run)
        found += get_engine(engine).machine_check(stage.stage, settings)
    for p in found:
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


def _check_system_names(stage: Any, loc: tuple, data: Any, known: set[str]) -> list[Problem]:
    """Problems for an md stage's ``systems`` (and ``frozen_runs.systems``) naming no system."""
    lists = [(("systems",), getattr(stage, "systems", None) or [])]
    frozen = getattr(stage, "frozen_runs", None)
    if frozen is not None:
        lists.append((("frozen_runs", "systems"), frozen.systems))
    problems = []
    for path, names in lists:
        for k, name in enumerate(names):
            if name not in known:
                where = ".".join(str(p) for p in path)
                problems.append(
                    Problem(
                        f"stages[{loc[1]}].{where}[{k}]",
                        "no system of this name",
                        name,
                        ", ".join(sorted(known)),
                        _line_of(data, (*loc, *path, k)),
                    )
                )
    return problems
