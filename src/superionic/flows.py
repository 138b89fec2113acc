"""Campaign -> jobflow graphs: one Flow per system, with stage labels and fingerprints.

Graph per system (stages present in the campaign, in this order)::

    order -> [ordering i] -> relax -> md(T1) -> diffusion(T1) -\
                                   -> md(T2) -> diffusion(T2) --> arrhenius

Every job carries ``metadata = {campaign, system, stage, ordering, temperature_K?,
fingerprint}``; ``status`` and ``report`` read them back from the store.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from jobflow import Flow, Job

from superionic.dispatch.fingerprint import fingerprint_flow
from superionic.engines import stage_settings
from superionic.spec.loader import Campaign, SystemInstance
from superionic.spec.models import HullStage, MDStage, NMRStage, OrderStage, QuenchStage, RelaxStage

FINGERPRINT_VERSION = "superionic-flow-1"


@dataclass
class PlannedJob:
    """A job of the campaign graph, as shown by ``validate`` and ``status``."""

    uuid: str
    name: str
    system: str
    stage: str
    fingerprint: str


def _tag(job: Job, campaign: Campaign, system: SystemInstance, stage: str, **extra: Any) -> Job:
    # jobs on a quenched structure report as their own "system" (e.g. "NaTaCl6 (quench 1200 K #0)")
    name = f"{system.name} ({extra['variant']})" if extra.get("variant") else system.name
    job.metadata.update({"campaign": campaign.spec.name, "system": name, "stage": stage, **extra})
    return job


def _stage_overrides(stage: Any) -> dict[str, Any]:
    from superionic.engines import stage_overrides

    return stage_overrides(stage)


def _relax_maker_for(engine: str, settings: dict[str, Any]) -> Any:
    if engine == "vasp":
        from superionic.engines.vasp import relax_maker
    elif engine == "cp2k":
        from superionic.engines.cp2k import relax_maker
    else:
        from superionic.engines.mlip import relax_maker
    return relax_maker(settings)


def _relaxed_result(job: Job, engine: str) -> dict[str, Any]:
    """Return references to what the hull needs from a relax job (VASP entries carry MP2020 data)."""
    result = {"energy": job.output.output.energy, "structure": job.output.structure}
    if engine == "vasp":
        result["entry"] = job.output.entry
    return result


def build_phase_flow(campaign: Campaign) -> tuple[Flow | None, dict[str, dict[str, Any]]]:
    """Relax jobs of the competing phases the campaign's hull stage needs (once per campaign).

    Returns the flow (``None`` without a hull stage) and phase name -> relaxed-result references.
    """
    spec = campaign.spec
    stages = {s.stage: s for s in spec.stages}
    hull = stages.get("hull")
    relax = stages.get("relax")
    if not isinstance(hull, HullStage) or not isinstance(relax, RelaxStage) or hull.entries_file is not None:
        return None, {}
    from superionic.structures.phases import build_phase, phases_for

    engine = relax.engine or spec.engine
    settings = stage_settings(relax.preset or spec.preset, engine, "relax", _stage_overrides(relax))
    needed: dict[str, Any] = {}
    for system in campaign.systems:
        for phase in phases_for(system.elements):
            needed[phase.name] = phase
    jobs, results = [], {}
    for name, phase in sorted(needed.items()):
        phase_settings = dict(settings)
        if "molecule" in phase.data:  # keep the box: positions only
            phase_settings["relax_cell"] = False
            if engine == "vasp":
                phase_settings["incar"] = {**phase_settings.get("incar", {}), "ISIF": 2}
        maker = _relax_maker_for(engine, phase_settings)
        maker.name = f"phase {name} relax"
        j = maker.make(build_phase(phase))
        j.metadata.update(
            {"campaign": spec.name, "system": "competing phases", "stage": "phase", "phase": name}
        )
        jobs.append(j)
        results[name] = _relaxed_result(j, engine)
    return Flow(jobs, name=f"{spec.name}:competing phases"), results


def _nmr_jobs(
    campaign: Campaign,
    nmr: NMRStage,
    structure: Any,
    label: str,
    add: Any,
    reference_results: dict[str, Any] | None = None,
) -> Job:
    """Add the NMR runs of one structure (via ``add(job, stage)``) and return its collect job."""
    from superionic.stages.nmr import collect_nmr

    spec = campaign.spec
    engine = nmr.engine or spec.engine
    nmr_settings = stage_settings(nmr.preset or spec.preset, engine, "nmr", _stage_overrides(nmr))
    dirs: dict[str, Any] = {"cs": None, "efg": None}
    if engine == "abinit":
        from superionic.stages.nmr import abinit_efg_job

        aj = abinit_efg_job(structure, list(nmr.isotopes), nmr_settings)
        aj.name = f"{label} nmr efg (abinit)"
        add(aj, "nmr_efg")
        dirs["efg"] = aj.output
    elif engine == "cp2k":
        from superionic.stages.nmr import cp2k_nmr

        cj = cp2k_nmr(
            structure,
            label,
            nmr.efg,
            float(nmr_settings.get("min_cell_A", 10.0)),
            float(nmr_settings.get("cutoff_Ry", 300.0)),
        )
        cj.name = f"{label} nmr cs (cp2k)"
        add(cj, "nmr_cs")
        dirs["cs"] = cj.output
    else:
        from superionic.engines.vasp import nmr_makers

        makers = nmr_makers(nmr_settings, list(nmr.isotopes))
        for mode, wanted in (("cs", nmr.shielding), ("efg", nmr.efg)):
            if not wanted:
                continue
            maker = makers[mode]
            maker.name = f"{label} nmr {mode}"
            nj = maker.make(structure)
            add(nj, f"nmr_{mode}")
            dirs[mode] = nj.output.dir_name
    coll = collect_nmr(
        structure,
        dirs["cs"],
        dirs["efg"],
        list(nmr.isotopes),
        label,
        dict(nmr.shift_references_ppm),
        list(nmr.environment_species),
        nmr.environment_cutoff_A,
        nmr.line_fwhm_ppm,
        reference_results or None,
    )
    coll.name = f"{label} nmr"
    return coll


def build_reference_flow(campaign: Campaign) -> tuple[Flow | None, dict[str, Any]]:
    """NMR of the shift-reference compounds (``configs/nmr/references.yaml``), once per campaign.

    Each compound from ``configs/phases`` is relaxed like the systems (when there is a relax
    stage) and computed with the same NMR engine and settings. Returns the flow and
    element -> ``{"result": collect-job output, "delta_exp_ppm": ...}``.
    """
    spec = campaign.spec
    stages = {s.stage: s for s in spec.stages}
    nmr = stages.get("nmr")
    if not isinstance(nmr, NMRStage) or not nmr.reference_compounds:
        return None, {}
    from ruamel.yaml import YAML

    from superionic.paths import configs_dir
    from superionic.structures.phases import build_phase

    refs = YAML(typ="safe").load((configs_dir() / "nmr" / "references.yaml").read_text())
    elements = sorted({el for s in campaign.systems for el in s.elements} & set(refs))
    jobs: list[Job] = []
    results: dict[str, Any] = {}

    def add(job: Job, stage: str) -> None:
        job.metadata.update({"campaign": spec.name, "system": "nmr references", "stage": stage})
        jobs.append(job)

    relax = stages.get("relax")
    for el in elements:
        compound = refs[el]["compound"]
        structure: Any = build_phase(compound)
        if isinstance(relax, RelaxStage):
            engine = relax.engine or spec.engine
            rsettings = stage_settings(relax.preset or spec.preset, engine, "relax", _stage_overrides(relax))
            maker = _relax_maker_for(engine, rsettings)
            maker.name = f"reference {compound} relax"
            rj = maker.make(structure)
            add(rj, "relax")
            structure = rj.output.structure
        coll = _nmr_jobs(campaign, nmr, structure, f"reference {compound}", add)
        coll.metadata.update({"campaign": spec.name, "system": "nmr references", "stage": "nmr_reference"})
        jobs.append(coll)
        results[el] = {
            "result": coll.output,
            "delta_exp_ppm": float(refs[el]["delta_exp_ppm"]),
            "compound": compound,
        }
    return Flow(jobs, name=f"{spec.name}:nmr references"), results


def build_system_flow(
    campaign: Campaign,
    system: SystemInstance,
    phase_results: dict[str, dict[str, Any]] | None = None,
    reference_results: dict[str, Any] | None = None,
) -> Flow:
    """Build the (un-fingerprinted) flow of one system."""
    spec = campaign.spec
    jobs: list[Job] = []
    stages = {s.stage: s for s in spec.stages}

    def settings(stage: Any) -> dict[str, Any]:
        return stage_settings(
            stage.preset or spec.preset,
            stage.engine or spec.engine,
            stage.stage,
            _stage_overrides(stage),
        )

    structures: list[Any]
    if isinstance(stages.get("order"), OrderStage):
        o = stages["order"]
        from superionic.stages.order import order_maker_for

        order_job = order_maker_for(o, system).make(system.structure)
        jobs.append(_tag(order_job, campaign, system, "order"))
        structures = [order_job.output["structures"][i] for i in range(o.n_structures)]
    else:
        structures = [system.structure]

    relaxed: dict[str, dict[str, Any]] = {}
    for i, structure in enumerate(structures):
        current = structure
        if isinstance(stages.get("relax"), RelaxStage):
            relax_stage = stages["relax"]
            relax_engine = relax_stage.engine or spec.engine
            maker = _relax_maker_for(relax_engine, settings(relax_stage))
            maker.name = f"{system.name} #{i} relax"
            relax_job = maker.make(current)
            jobs.append(_tag(relax_job, campaign, system, "relax", ordering=i))
            relaxed[f"{system.name} #{i}"] = _relaxed_result(relax_job, relax_engine)
            current = relax_job.output.structure
        if isinstance(stages.get("nmr"), NMRStage):
            nmr = stages["nmr"]
            coll = _nmr_jobs(
                campaign,
                nmr,
                current,
                f"{system.name} #{i}",
                lambda j, st, i=i: jobs.append(_tag(j, campaign, system, st, ordering=i)),
                reference_results,
            )
            jobs.append(_tag(coll, campaign, system, "nmr", ordering=i))
        md_targets: list[tuple[Any, str | None]] = [(current, None)]
        if isinstance(stages.get("quench"), QuenchStage):
            from superionic.stages.quench import add_quench_jobs

            q_stage = stages["quench"]
            q_engine = q_stage.engine or spec.engine
            relax_settings = stage_settings(
                q_stage.preset or spec.preset, q_engine, "relax", {"relax_cell": True}
            )
            quenched = add_quench_jobs(
                q_stage,
                settings(q_stage),
                q_engine,
                current,
                f"{system.name} #{i}",
                lambda j, st, **kw: jobs.append(_tag(j, campaign, system, st, **kw)),
                i,
                relax_maker=functools.partial(_relax_maker_for, q_engine, relax_settings),
            )
            md_targets += quenched
        for md_struct, variant in md_targets:
            prefix = f"{system.name} #{i}" + (f" [{variant}]" if variant else "")

            def add(job: Job, stage: str, _i: int = i, _variant: str | None = variant, **extra: Any) -> None:
                jobs.append(_tag(job, campaign, system, stage, ordering=_i, variant=_variant, **extra))

            if isinstance(stages.get("md"), MDStage):
                from superionic.engines.mlip import md_maker
                from superionic.stages.md import (
                    analyze_diffusion,
                    analyze_rotation,
                    converge_diffusion,
                    fit_arrhenius,
                    freeze_species,
                )

                md = stages["md"]
                md_settings = settings(md)
                analyses = []
                interval = int(md_settings.get("trajectory_interval", 10))
                skip = math.ceil(int(md_settings.get("ramp_steps", 0)) / interval)
                md_start = md_struct
                md_engine = md.engine or spec.engine
                if md.frozen_species:
                    frozen = freeze_species(md_struct, md.frozen_species, md_engine)
                    frozen.name = f"{prefix} freeze {'+'.join(md.frozen_species)}"
                    add(frozen, "md")
                    md_start = frozen.output
                if md_engine != "mlip":  # DFT engines store every ionic step; the ramp is its own run
                    interval, skip = 1, 0
                for temp in md.temperatures_K:
                    md_name = f"{prefix} md {temp:g} K"
                    if md_engine in ("vasp", "cp2k"):
                        if md_engine == "vasp":
                            from superionic.engines.vasp import md_jobs
                        else:
                            from superionic.engines.cp2k import md_jobs

                        segment_jobs, trajectory, last = md_jobs(md_settings, temp, md_start, md_name)
                        for sj in segment_jobs:
                            add(sj, "md", temperature_K=temp)
                    else:
                        maker = md_maker(md_settings, temp)
                        maker.name = md_name
                        md_job = maker.make(md_start)
                        add(md_job, "md", temperature_K=temp)
                        trajectory = md_job.output.objects["trajectory"]
                        last = {"structure": md_job.output.structure}
                    ana = analyze_diffusion(
                        trajectory,
                        temperature_K=temp,
                        species=md.species,
                        frame_interval_fs=float(md_settings.get("timestep_fs", 2.0)) * interval,
                        skip_frames=skip,
                        fit_start=md.fit_start,
                        fit_end=md.fit_end,
                    )
                    ana.name = f"{prefix} diffusion {temp:g} K"
                    if md.target_rsd is None:
                        add(ana, "diffusion", temperature_K=temp)
                        analyses.append(ana.output)
                    else:
                        add(ana, "diffusion_chunk", temperature_K=temp)
                        conv = converge_diffusion(
                            ana.output,
                            trajectory if isinstance(trajectory, list) else [trajectory],
                            md_settings,
                            temp,
                            md.species,
                            float(md_settings.get("timestep_fs", 2.0)) * interval,
                            skip,
                            md.fit_start,
                            md.fit_end,
                            md.target_rsd,
                            md.max_chunks,
                            engine=md_engine,
                            last=last,
                        )
                        conv.name = f"{prefix} converge {temp:g} K"
                        add(conv, "diffusion", temperature_K=temp)
                        analyses.append(conv.output)
                    quench = stages.get("quench")
                    if isinstance(quench, QuenchStage) and quench.snapshot_temperature_K == temp:
                        from superionic.stages.quench import analyze_snapshots

                        frame_fs = float(md_settings.get("timestep_fs", 2.0)) * interval
                        snaps = analyze_snapshots(
                            trajectory,
                            f"{variant or 'crystal'} {temp:g} K snapshots",
                            quench.center,
                            list(quench.ligands),
                            quench.cutoff_A,
                            quench.shape,
                            max(1, round(quench.snapshot_every_ps * 1000 / frame_fs)),
                            skip,
                            temp,
                            current,
                        )
                        snaps.name = f"{prefix} structure {temp:g} K snapshots"
                        add(snaps, "structure", temperature_K=temp)
                    if md.rotation_units:
                        rot = analyze_rotation(
                            trajectory,
                            temperature_K=temp,
                            units=list(md.rotation_units),
                            frame_interval_fs=float(md_settings.get("timestep_fs", 2.0)) * interval,
                            skip_frames=skip,
                            cation=md.species,
                        )
                        rot.name = f"{prefix} rotation {temp:g} K"
                        add(rot, "rotation", temperature_K=temp)
                if len(md.temperatures_K) >= 2:
                    arr = fit_arrhenius(analyses)
                    arr.name = f"{prefix} arrhenius"
                    add(arr, "arrhenius")
    hull = stages.get("hull")
    if isinstance(hull, HullStage) and relaxed:
        from superionic.stages.hull import compute_hull
        from superionic.structures.phases import phases_for

        names = {p.name for p in phases_for(system.elements)}
        entries = hull.entries_file
        if entries is not None and not entries.is_absolute():
            entries = (campaign.directory / entries).resolve()
        engine = (stages["relax"].engine or spec.engine) if "relax" in stages else spec.engine
        compat = {"auto": "mp2020" if engine == "vasp" else None, "none": None}.get(
            hull.compatibility, hull.compatibility
        )
        hull_job = compute_hull(
            relaxed,
            {n: r for n, r in (phase_results or {}).items() if n in names},
            str(entries) if entries else None,
            compat,
        )
        hull_job.name = f"{system.name} hull"
        jobs.append(_tag(hull_job, campaign, system, "hull"))
    return Flow(jobs, name=f"{campaign.spec.name}:{system.name}")


def build_flows(campaign: Campaign) -> list[Flow]:
    """Build the campaign's fingerprinted flows: competing phases first (if any), then one per system."""
    phase_flow, phase_results = build_phase_flow(campaign)
    ref_flow, ref_results = build_reference_flow(campaign)
    system_flows = [
        build_system_flow(campaign, system, phase_results, ref_results) for system in campaign.systems
    ]
    shared = [f for f in (phase_flow, ref_flow) if f is not None]
    if not shared:
        return [fingerprint_flow(f, salt=FINGERPRINT_VERSION) for f in system_flows]
    # fingerprint together so that the systems' jobs point at the shared jobs' fingerprinted uuids
    combined = fingerprint_flow(Flow([*shared, *system_flows]), salt=FINGERPRINT_VERSION)
    return list(combined.jobs)


def planned_jobs(flows: list[Flow]) -> list[PlannedJob]:
    """List the jobs of the flows in execution order."""
    out = []
    for flow in flows:
        for job, _ in flow.iterflow():
            md = job.metadata
            out.append(
                PlannedJob(
                    job.uuid,
                    job.name,
                    md.get("system", ""),
                    md.get("stage", ""),
                    md.get("fingerprint", ""),
                )
            )
    return out
