"""Campaign -> jobflow graphs: one Flow per system, the campaign's stages chained in order.

Each stage module (:mod:`superionic.stages`) builds its own jobs from the engine interface and
returns a Flow with a declared output; this module only chains them per system::

    order -> [ordering i] -> relax -> [finetune] -> nmr | quench -> md(T1..Tn) -> arrhenius ; hull

Every job carries ``metadata = {campaign, system, stage, ordering, temperature_K?,
fingerprint}``; ``status`` and ``report`` read them back from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobflow import Flow, Job

import superionic.jobflow_cache  # noqa: F401  (fast job.output.<attr> on atomate2 jobs)
from superionic.fingerprint import fingerprint_flow
from superionic.spec.loader import Campaign, SystemInstance
from superionic.spec.models import (
    FinetuneStage,
    HullStage,
    MDStage,
    NMRStage,
    OrderStage,
    QuenchStage,
    RelaxStage,
)
from superionic.stages.common import FINETUNED_MODEL, staged

FINGERPRINT_VERSION = "superionic-flow-1"


@dataclass
class PlannedJob:
    """A job of the campaign graph, as shown by ``validate`` and ``status``."""

    uuid: str
    name: str
    system: str
    stage: str
    fingerprint: str


def build_system_flow(
    campaign: Campaign,
    system: SystemInstance,
    phase_results: dict[str, dict[str, Any]] | None = None,
    reference_results: dict[str, Any] | None = None,
) -> Flow:
    """Build the (un-fingerprinted) flow of one system: its stages chained in campaign order."""
    from superionic.stages.hull import hull_flow
    from superionic.stages.order import order_flow
    from superionic.stages.relax import relax_flow

    spec = campaign.spec
    stages = {s.stage: s for s in spec.stages}
    meta: dict[str, Any] = {"campaign": spec.name, "system": system.name}
    if campaign.scale is not None:
        meta["scale"] = campaign.scale
    jobs: list[Job | Flow] = []
    structures: list[Any] = [system.structure]
    order = stages.get("order")
    if isinstance(order, OrderStage):
        flow = order_flow(order, system, **meta)
        jobs.append(flow)
        structures = flow.output
    relaxed: dict[str, dict[str, Any]] = {}
    starts: list[Any] = []
    relax = stages.get("relax")
    for i, current in enumerate(structures):
        label = f"{system.name} #{i}"
        if isinstance(relax, RelaxStage):
            flow = relax_flow(spec, relax, current, f"{label} relax")
            jobs.append(staged(flow, "relax", **meta, ordering=i))
            relaxed[label] = flow.output
            current = flow.output["structure"]
        starts.append(current)
    finetune = stages.get("finetune")
    token = None
    if isinstance(finetune, FinetuneStage) and relaxed:
        from superionic.stages.finetune import finetune_flow
        from superionic.stages.hull import system_phases

        phases = system_phases(system, phase_results) if isinstance(stages.get("hull"), HullStage) else {}
        flow = finetune_flow(spec, finetune, relaxed, system.name, phases=phases, **meta)
        jobs.append(flow)
        token = FINETUNED_MODEL.set(flow.output)  # force_field: finetuned in the stages below
    try:
        _later_stages(campaign, system, stages, starts, jobs, reference_results, meta)
    finally:
        if token is not None:
            FINETUNED_MODEL.reset(token)
    if isinstance(stages.get("hull"), HullStage) and relaxed:
        jobs.append(hull_flow(campaign, system, relaxed, phase_results, **meta))
    return Flow(jobs, name=f"{campaign.spec.name}:{system.name}")


def _later_stages(
    campaign: Campaign,
    system: SystemInstance,
    stages: dict[str, Any],
    starts: list[Any],
    jobs: list[Job | Flow],
    reference_results: dict[str, Any] | None,
    meta: dict[str, Any],
) -> None:
    """Append the nmr, quench and md stages of every ordering (after relax and finetune)."""
    from superionic.stages.md import md_flow
    from superionic.stages.nmr import nmr_flow
    from superionic.stages.quench import quench_flow

    spec = campaign.spec
    for i, current in enumerate(starts):
        label = f"{system.name} #{i}"
        nmr = stages.get("nmr")
        if isinstance(nmr, NMRStage) and (not nmr.systems or system.name in nmr.systems):
            jobs.append(nmr_flow(spec, nmr, current, label, reference_results, **meta, ordering=i))
        md_targets: list[tuple[Any, str | None]] = [(current, None)]
        quench = stages.get("quench")
        if not isinstance(quench, QuenchStage) or (quench.systems and system.name not in quench.systems):
            quench = None
        if quench is not None:
            flow, quenched = quench_flow(spec, quench, current, label, **meta, ordering=i)
            jobs.append(flow)
            md_targets += quenched
        md = stages.get("md")
        if isinstance(md, MDStage) and (not md.systems or system.name in md.systems):
            for start, variant in md_targets:
                prefix = label + (f" [{variant}]" if variant else "")
                q = quench
                jobs.append(md_flow(spec, md, start, prefix, q, current, variant, **meta, ordering=i))
            fr = md.frozen_runs
            if fr is not None and (not fr.systems or system.name in fr.systems):
                for frozen in fr.species:
                    variant = f"frozen {'+'.join(frozen)}"
                    run = md.model_copy(
                        update={"frozen_species": list(frozen), "temperatures_K": fr.temperatures_K}
                    )
                    prefix = f"{label} [{variant}]"
                    jobs.append(
                        md_flow(spec, run, current, prefix, None, current, variant, **meta, ordering=i)
                    )


def build_flows(campaign: Campaign) -> list[Flow]:
    """Build the campaign's fingerprinted flows: competing phases first (if any), then one per system."""
    from superionic.stages.nmr import reference_flow
    from superionic.stages.relax import phase_flow as build_phase_flow

    phase_flow, phase_results = build_phase_flow(campaign)
    ref_flow, ref_results = reference_flow(campaign)
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
