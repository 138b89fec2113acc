"""Relax stage: the systems' orderings and the hull's competing phases, on the relax stage's engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superionic.stages.common import engine_for, jobs_of

if TYPE_CHECKING:
    from jobflow import Flow

    from superionic.spec.loader import Campaign
    from superionic.spec.models import CampaignSpec, RelaxStage


def relax_flow(spec: CampaignSpec, stage: RelaxStage, structure: Any, name: str) -> Flow:
    """Relax one structure on the stage's engine; output ``{"structure", "energy", "entry"}``.

    Parameters
    ----------
    spec : CampaignSpec
        The campaign (engine and preset when the stage names none).
    stage : RelaxStage
        The relax stage.
    structure : Structure or OutputReference
        What to relax (an ordering job's output, usually).
    name : str
        The job name.

    Returns
    -------
    Flow
    """
    engine, settings = engine_for(spec, stage)
    return engine.relax(structure, settings, name)


def phase_flow(campaign: Campaign) -> tuple[Flow | None, dict[str, dict[str, Any]]]:
    """Relax jobs of the competing phases the campaign's hull stage needs (once per campaign).

    Each phase is relaxed with the relax stage's engine and preset (molecular crystals keep
    their box: positions only). Returns the flow (``None`` without a hull stage, or with an
    ``entries_file``) and phase name -> the relax flow's output.
    """
    from jobflow import Flow

    from superionic.spec.models import HullStage, RelaxStage
    from superionic.structures.phases import build_phase, phases_for

    spec = campaign.spec
    stages = {s.stage: s for s in spec.stages}
    hull, relax = stages.get("hull"), stages.get("relax")
    if not isinstance(hull, HullStage) or not isinstance(relax, RelaxStage) or hull.entries_file is not None:
        return None, {}
    engine, settings = engine_for(spec, relax)
    needed: dict[str, Any] = {}
    for system in campaign.systems:
        for phase in phases_for(system.elements):
            needed[phase.name] = phase
    jobs, results = [], {}
    for name, phase in sorted(needed.items()):
        phase_settings = dict(settings)
        if "molecule" in phase.data:  # keep the box: positions only
            phase_settings["relax_cell"] = False
            if engine.name == "vasp":
                phase_settings["incar"] = {**phase_settings.get("incar", {}), "ISIF": 2}
        flow = engine.relax(build_phase(phase), phase_settings, f"phase {name} relax")
        for j in jobs_of(flow):
            j.metadata.update(
                {"campaign": spec.name, "system": "competing phases", "stage": "phase", "phase": name}
            )
        jobs.append(flow)
        results[name] = flow.output
    return Flow(jobs, name=f"{spec.name}:competing phases"), results
