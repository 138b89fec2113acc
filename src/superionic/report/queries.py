"""Store queries of the report: the latest output document of every planned job, by stage."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superionic.dispatch.local import CampaignStore
    from superionic.flows import PlannedJob

StageItems = list[tuple["PlannedJob", dict[str, Any]]]
"""``(planned job, its output document)`` pairs of one stage, in campaign order."""


def job_outputs(store: CampaignStore, planned: list[PlannedJob]) -> dict[str, dict[str, Any]]:
    """Return the output documents of ``planned`` by job uuid.

    A job replaced at run time is represented by its last index, with the output of its
    replacement in place of the reference jobflow stores.

    Parameters
    ----------
    store : CampaignStore
        The campaign's connected store.
    planned : list of PlannedJob
        The campaign's jobs.

    Returns
    -------
    dict
        ``{uuid: {"uuid", "index", "output", "metadata"}}`` for every job that has a result.
    """
    uuids = [p.uuid for p in planned]
    docs = store.job_store.query(
        {"uuid": {"$in": uuids}}, properties=["uuid", "index", "output", "metadata"], load=False
    )
    latest: dict[str, dict[str, Any]] = {}
    for d in docs:
        if d["uuid"] not in latest or d.get("index", 1) > latest[d["uuid"]].get("index", 1):
            latest[d["uuid"]] = d
    for d in latest.values():
        out = d.get("output")
        if isinstance(out, dict) and out.get("@class") == "OutputReference":
            # a job replaced at run time stores a reference to its replacement's output
            d["output"] = store.job_store.get_output(d["uuid"], which="last")
    return latest


def outputs_by_stage(store: CampaignStore, planned: list[PlannedJob]) -> defaultdict[str, StageItems]:
    """Group the jobs that have a result by stage (``order``, ``relax``, ``diffusion``, ...).

    Parameters
    ----------
    store : CampaignStore
        The campaign's connected store.
    planned : list of PlannedJob
        The campaign's jobs.

    Returns
    -------
    defaultdict of str to list
        ``(planned job, output document)`` pairs per stage; a stage without results maps to ``[]``.
    """
    docs = job_outputs(store, planned)
    by_stage: defaultdict[str, StageItems] = defaultdict(list)
    for p in planned:
        if p.uuid in docs:
            by_stage[p.stage].append((p, docs[p.uuid]))
    return by_stage
