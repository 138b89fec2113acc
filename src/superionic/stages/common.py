"""What every stage module needs: its engine and merged settings, and flattening engine flows."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from superionic.engines import stage_overrides, stage_settings
from superionic.engines.base import Engine, get_engine
from superionic.errors import SpecError

if TYPE_CHECKING:
    from jobflow import Flow, Job

    from superionic.spec.models import CampaignSpec

F = TypeVar("F")


def engine_for(
    spec: CampaignSpec, stage: Any, kind: str | None = None, **fixed: Any
) -> tuple[Engine, dict[str, Any]]:
    """Return the engine of a campaign stage and its merged settings.

    Parameters
    ----------
    spec : CampaignSpec
        The campaign (its engine and preset are the stage's defaults).
    stage : stage model
        The campaign's stage entry.
    kind : str, optional
        The preset section to read (default: the stage's own, e.g. ``relax`` settings for the
        relaxation after a quench).
    **fixed
        Settings that replace the merged ones (e.g. ``relax_cell=True``).

    Returns
    -------
    tuple of (Engine, dict)
        The engine (the stage's own, else the campaign's) and the settings its jobs read.
    """
    name = stage.engine or spec.engine
    overrides = stage_overrides(stage) if kind is None else {}
    settings = stage_settings(stage.preset or spec.preset, name, kind or stage.stage, overrides)
    settings = {**settings, **fixed}
    if settings.get("force_field") == "finetuned":
        model = FINETUNED_MODEL.get()
        if model is None:  # the spec check refuses this; a stage built on its own gets it here
            raise SpecError.single(
                "force_field", "no finetune stage before this stage", "finetuned", "a finetune stage"
            )
        settings["force_field"] = model
    return get_engine(name), settings


#: the finetune stage's output for the system being built (``force_field: finetuned``), set by
#: :func:`superionic.flows.build_system_flow` around the stages after it
FINETUNED_MODEL: ContextVar[Any] = ContextVar("FINETUNED_MODEL", default=None)


def jobs_of(flow: Flow | Job) -> list[Job]:
    """Return every job of ``flow`` (nested flows included), in the order they were added."""
    from jobflow import Flow

    if not isinstance(flow, Flow):
        return [flow]
    out: list[Job] = []
    for item in flow.jobs:
        out += jobs_of(item)
    return out


def staged(flow: F, stage: str, **metadata: Any) -> F:
    """Return ``flow`` (a Flow or a Job), each job tagged with ``stage`` and ``metadata``.

    A stage an engine set on its own job (``nmr_cs``) is kept.

    ``metadata`` usually holds ``campaign`` and ``system``; with a ``variant`` (a quenched
    structure) the jobs report as their own system, e.g. ``NaTaCl6 (quench 1200 K #0)``.
    """
    if metadata.get("variant") and "system" in metadata:
        metadata = {**metadata, "system": f"{metadata['system']} ({metadata['variant']})"}
    for j in jobs_of(flow):
        j.metadata = {"stage": stage, **metadata, **(j.metadata or {})}
        # MD jobs write, and analyses read, binary trajectories in the campaign's store
        # (superionic.trajectory_store) through CURRENT_JOB.store, which jobflow sets only then
        j.config.expose_store = True
    return flow
