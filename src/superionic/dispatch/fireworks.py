"""Dispatch a campaign through FireWorks: submit, work, watch, rerun, cancel.

The campaign's jobflow graph becomes FireWorks workflows (jobflow's ``flow_to_workflow``); each
firework carries its job's metadata (campaign, system, stage, fingerprint) in its spec, so a
resubmission skips every job whose fingerprint is already on the LaunchPad, and ``status``
groups by system and stage. Results go to the campaign's JobStore (the same embedded journal
files as ``superionic run``, or MongoDB by URI), so ``superionic report`` works unchanged.

LaunchPad: :class:`~superionic.dispatch.fwstore.EmbeddedLaunchPad` in ``<store>/launchpad`` by
default (safe for concurrent workers on one file system), or FireWorks' own LaunchPad on the
campaign's MongoDB URI.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fireworks import FWorker, LaunchPad
from jobflow import Flow

from superionic.errors import SuperionicError
from superionic.spec.loader import Campaign

#: set on the fireworks `cancel` defused, so that `submit` revives those and no others
CANCELLED = "superionic_cancelled"
STALE_LOCK_S = 10.0  # a workflow lock held this long on a lost firework is its dead worker's
WORKER_PING_S = 60.0  # how often a running firework reports it is alive
LOST_AFTER_S = 300.0  # a RUNNING firework silent this long is lost (5 missed pings)


def open_launchpad(campaign: Campaign, create: bool = True) -> LaunchPad | None:
    """Return the campaign's LaunchPad (embedded folder, or MongoDB when the store has a URI)."""
    spec = campaign.spec.store
    if spec.uri:
        from superionic.dispatch.mongo import check_reachable, client_kwargs, connection_uri

        uri = connection_uri(spec)
        check_reachable(uri, database=spec.database)  # one line, not FireWorks' traceback after 30 s
        lp = LaunchPad(
            host=uri,
            uri_mode=True,
            name=spec.database or "superionic",
            strm_lvl="ERROR",
            mongoclient_kwargs=client_kwargs(),
        )
        if create:
            _create_counters(lp)
        return lp
    from superionic.dispatch.fwstore import EmbeddedLaunchPad

    path = campaign.store_path / "launchpad"
    if not create and not path.exists():
        return None
    return EmbeddedLaunchPad(path)


def _create_counters(lp: LaunchPad) -> None:
    """Create FireWorks' id counters when missing.

    FireWorks creates them only in `lpad reset`, which also deletes every workflow. A fixed
    ``_id`` makes two first submits at once create one counter document.
    """
    from pymongo.errors import DuplicateKeyError, PyMongoError

    try:
        if lp.fw_id_assigner.find_one({}) is None:
            lp.fw_id_assigner.insert_one({"_id": "superionic-counters", "next_fw_id": 1, "next_launch_id": 1})
    except DuplicateKeyError:
        pass
    except PyMongoError as exc:
        raise SuperionicError.single(
            "store.uri",
            f"cannot write the LaunchPad's counters ({exc})",
            lp.name,
            "a user with write access to the database",
        ) from None


@dataclass
class SubmitSummary:
    """What ``submit`` added."""

    workflows_added: int = 0
    fireworks_added: int = 0
    fireworks_present: int = 0
    fireworks_done: int = 0
    fireworks_revived: int = 0
    names: list[str] = field(default_factory=list)


def _groups(flows: list[Flow]) -> list[Flow]:
    """Workflows to add: one per system, or the whole campaign when systems share jobs (hull phases)."""
    if any(f.name.endswith((":competing phases", ":nmr references")) for f in flows):
        outer = flows[0].host  # build_flows fingerprinted them inside one flow: detach them from it
        if outer is not None:
            for f in flows:
                _drop_host(f, outer)
        return [Flow(flows, name=flows[0].name.split(":")[0])]
    return flows


def _drop_host(item: Any, host: str) -> None:
    """Remove ``host`` from the hosts of a job or flow and of everything inside it."""
    item.hosts = [h for h in item.hosts if h != host]
    for child in getattr(item, "jobs", None) or []:
        _drop_host(child, host)


def submit(campaign: Campaign, dry_run: bool = False) -> SubmitSummary:
    """Add the campaign's workflows to its LaunchPad, skipping jobs already there.

    A workflow is added when any of its jobs' fingerprints is new; jobs already on the LaunchPad
    (same structure and settings) are not added again.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows

    flows = build_flows(campaign)
    lp = open_launchpad(campaign, create=not dry_run)
    present: set[str] = set()
    if lp is not None:
        present = {
            d["spec"].get("fingerprint")
            for d in lp.fireworks.find({"spec.campaign": campaign.spec.name}, {"spec.fingerprint": 1})
        }
    summary = SubmitSummary()
    wfs = []
    store = open_campaign_store(campaign, create=not dry_run)
    # jobs whose outputs are already in the store (finished by `run`, or copied there with
    # `superionic store copy`) are not queued again
    done = set(store.job_store.docs_store.distinct("uuid")) if store is not None else set()
    for group in _groups(flows):
        jobs = [job for job, _ in group.iterflow()]
        fingerprints = [job.metadata.get("fingerprint") for job in jobs]
        finished = {job.metadata.get("fingerprint") for job in jobs if job.uuid in done}
        summary.fireworks_done += len(finished - present)
        new = [fp for fp in fingerprints if fp not in present and fp not in finished]
        summary.fireworks_present += len([fp for fp in fingerprints if fp in present])
        if not new:
            continue
        summary.workflows_added += 1
        summary.fireworks_added += len(new)
        summary.names.append(group.name)
        if not dry_run:
            assert store is not None
            # a MongoDB store is not written into the fireworks (maggma would serialise its URI,
            # password included): workers open it from the campaign file (`run_worker`)
            in_fw = None if campaign.spec.store.uri else store.job_store
            wf = flow_to_workflow(group, store=in_fw, allow_external_references=True)
            wf.metadata.update({"campaign": campaign.spec.name})
            # jobs already on the pad are dropped from the new workflow: their outputs come from
            # the earlier run through the JobStore (references resolve by job uuid)
            if len(new) < len(fingerprints):
                keep = [fw for fw in wf.fws if fw.spec.get("fingerprint") in set(new)]
                from fireworks import Workflow

                ids = {fw.fw_id for fw in keep}
                links = {fw.fw_id: [c for c in wf.links[fw.fw_id] if c in ids] for fw in keep}
                wf = Workflow(keep, links_dict=links, name=wf.name, metadata=wf.metadata)
            wfs.append(wf)
    if wfs and lp is not None:
        lp.bulk_add_wfs(wfs)
    if lp is not None:
        # fireworks `cancel` defused come back (FireWorks' reignite: WAITING or READY), only those
        # of jobs still in the campaign; fireworks jobflow defused (a job's stop_children) stay
        wanted = {job.metadata.get("fingerprint") for flow in flows for job, _ in flow.iterflow()}
        cancelled = lp.fireworks.find(
            {"spec.campaign": campaign.spec.name, "state": "DEFUSED", CANCELLED: True},
            {"fw_id": 1, "spec.fingerprint": 1},
        )
        for d in cancelled:
            if d["spec"].get("fingerprint") not in wanted:
                continue
            if not dry_run:
                lp.reignite_fw(d["fw_id"])
                lp.fireworks.update_one({"fw_id": d["fw_id"]}, {"$unset": {CANCELLED: ""}})
            summary.fireworks_revived += 1
    return summary


def worker_name() -> str:
    """``slurm-<job id>`` inside a SLURM allocation, else the host name."""
    job = os.environ.get("SLURM_JOB_ID")
    return f"slurm-{job}" if job else socket.gethostname()


class _RapidfireChatter(logging.Filter):
    """Drop ``rapidfire``'s loop messages (new folder, sleeping, polling) from the worker's output.

    The worker polls in short rounds; these lines would repeat every second while it waits, and
    the worker printed none of them before it used ``rapidfire``.
    """

    _PREFIXES = ("Created new dir", "Sleeping for", "Checking for FWs to run")

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the loop messages."""
        return not record.getMessage().startswith(self._PREFIXES)


@contextmanager
def _worker_settings(ping_s: float) -> Iterator[None]:
    """Within the block, a running firework pings every ``ping_s`` s and rapidfire's chatter is dropped.

    FireWorks takes the ping interval only from ``FW_config.yaml`` (``PING_TIME_SECS``), read once
    when ``fireworks`` is imported and copied into ``fireworks.core.rocket``; neither ``rapidfire``
    nor ``launch_rocket`` accepts it. The worker's ``--ping`` (lost-run detection within minutes,
    not FireWorks' default hour) is therefore set on that module for the worker's run and
    restored after.
    """
    import fireworks.core.rocket as rocket_module

    saved = rocket_module.PING_TIME_SECS
    rocket_module.PING_TIME_SECS = ping_s
    chatter = _RapidfireChatter()
    launcher_log = logging.getLogger("rocket.launcher")
    launcher_log.addFilter(chatter)
    try:
        yield
    finally:
        rocket_module.PING_TIME_SECS = saved
        launcher_log.removeFilter(chatter)


def run_worker(
    lp: LaunchPad,
    launch_dir: Path,
    max_fireworks: int = 0,
    idle_exit_s: float = 0.0,
    ping_s: float = WORKER_PING_S,
    campaign: str | None = None,
) -> int:
    """Run READY fireworks one after another (FireWorks' ``rapidfire``) and return how many ran.

    Each round is one ``rapidfire`` call that runs READY fireworks until none is left (or
    ``max_fireworks`` is reached, or too little SLURM time remains), each in its own
    ``launcher_*`` folder under a folder of this worker. Around it the worker adds what
    ``rapidfire`` lacks: it stops once nothing has been READY for ``idle_exit_s`` in a row
    (``rapidfire`` either exits at once or sleeps a fixed number of loops), it starts no work with
    less than ``MIN_VASP_WALLTIME_S`` left in the SLURM allocation (``rapidfire`` knows no
    allocation: the time left is read before each round and the rest passed as its ``timeout``),
    it returns how many fireworks ran (``rapidfire`` returns nothing), and every DFT firework
    checks its engine where it runs. Threads are set by the caller
    (:func:`superionic.dispatch.threads.configure_process`).

    Parameters
    ----------
    lp : LaunchPad
        The LaunchPad.
    launch_dir : Path
        Where the fireworks' run folders go.
    max_fireworks : int
        Stop after this many (0: until none is ready).
    idle_exit_s : float
        When nothing is READY, keep polling this long before exiting (other workers may be
        about to complete a parent).
    ping_s : float
        How often a running firework reports that it is alive (lost-run detection).
    campaign : str, optional
        Only run this campaign's fireworks.

    Returns
    -------
    int
        The number of fireworks this worker ran.
    """
    from fireworks.core.rocket_launcher import rapidfire

    from superionic.engines.guard import MIN_VASP_WALLTIME_S, engine_checks, slurm_time_left_s

    query = {"spec.campaign": campaign} if campaign else {}
    fworker = FWorker(name=worker_name(), query=query)
    # this worker's own folder: its launcher_* folders are the fireworks it ran
    root = launch_dir / f"worker_{time.strftime('%Y%m%d-%H%M%S')}_{socket.gethostname()}_{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    poll_s = max(min(1.0, idle_exit_s), 0.01)  # rapidfire's pause after a round (0 means its 60 s)
    n = 0
    idle_since: float | None = None
    cwd = os.getcwd()
    with engine_checks(), _worker_settings(ping_s):  # DFT fireworks check their engine here
        try:
            while max_fireworks == 0 or n < max_fireworks:
                left = slurm_time_left_s()
                if left is not None and left < MIN_VASP_WALLTIME_S:
                    print(f"worker: {left:.0f} s left in the SLURM allocation: taking no more work")
                    break
                started = time.time()
                rapidfire(
                    lp,
                    fworker,
                    m_dir=str(root),
                    nlaunches=max_fireworks - n if max_fireworks else -1,  # -1: no launch limit
                    max_loops=1,  # one round: run what is READY, pause poll_s, return
                    sleep_time=poll_s,
                    strm_lvl="ERROR",
                    timeout=None if left is None else left - MIN_VASP_WALLTIME_S,
                )
                ran = sum(1 for _ in root.glob("launcher_*"))  # rapidfire removes unused folders
                if ran > n:
                    n, idle_since = ran, None
                    continue
                idle_since = idle_since or started
                if time.time() - idle_since >= idle_exit_s:
                    break
        finally:
            os.chdir(cwd)
    if n == 0:
        with suppress(OSError):
            root.rmdir()
    return n


def fireworks_status(lp: LaunchPad, campaign: str) -> list[dict[str, Any]]:
    """Count fireworks per (system, stage, state), with the workers running them."""
    rows: dict[tuple, dict[str, Any]] = {}
    running: dict[int, str] = {}
    for launch in lp.launches.find({"state": "RUNNING"}, {"fw_id": 1, "fworker.name": 1}):
        running[launch["fw_id"]] = (launch.get("fworker") or {}).get("name", "")
    for d in lp.fireworks.find(
        {"spec.campaign": campaign}, {"fw_id": 1, "state": 1, "spec.system": 1, "spec.stage": 1}
    ):
        key = (d["spec"].get("system", ""), d["spec"].get("stage", ""))
        row = rows.setdefault(key, {"system": key[0], "stage": key[1], "workers": set()})
        row[d["state"]] = row.get(d["state"], 0) + 1
        if d["fw_id"] in running:
            row["workers"].add(running[d["fw_id"]])
    out = []
    for key in sorted(rows):
        row = rows[key]
        row["workers"] = ", ".join(sorted(w for w in row["workers"] if w))
        out.append(row)
    return out


def rerun(
    lp: LaunchPad, campaign: str, lost_after_s: float = LOST_AFTER_S, failed: bool = True
) -> dict[str, list]:
    """Put lost, stuck and (optionally) failed fireworks of the campaign back to READY.

    Lost: RUNNING but silent for ``lost_after_s`` (a killed worker). Stuck: RESERVED with no
    launch for ``lost_after_s`` (a worker reserved it and lost the server's answer before it
    could start the launch, e.g. across a server restart; FireWorks' ``detect_unreserved`` only
    knows reservations that have a launch). Failed: FIZZLED.
    """
    fw_ids = {d["fw_id"] for d in lp.fireworks.find({"spec.campaign": campaign}, {"fw_id": 1})}
    _lost_launches, lost_fws, _inconsistent = lp.detect_lostruns(expiration_secs=lost_after_s, rerun=False)
    lost = sorted(i for i in lost_fws if i in fw_ids)
    for fw_id in lost:
        _clear_stale_lock(lp, fw_id)
        lp.rerun_fw(fw_id)
    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=lost_after_s)
    stuck = sorted(
        d["fw_id"]
        for d in lp.fireworks.find(
            {"spec.campaign": campaign, "state": "RESERVED"}, {"fw_id": 1, "launches": 1, "updated_on": 1}
        )
        if not d.get("launches") and _as_utc(d.get("updated_on")) <= cutoff
    )
    for fw_id in stuck:
        _clear_stale_lock(lp, fw_id)
        lp.rerun_fw(fw_id)
    fizzled = []
    if failed:
        fizzled = sorted(
            d["fw_id"]
            for d in lp.fireworks.find({"spec.campaign": campaign, "state": "FIZZLED"}, {"fw_id": 1})
        )
        for fw_id in fizzled:
            lp.rerun_fw(fw_id)
    return {"lost": lost, "stuck": stuck, "failed": fizzled}


def _clear_stale_lock(lp: LaunchPad, fw_id: int, wait_s: float = STALE_LOCK_S) -> None:
    """Release the workflow lock a killed worker left behind on a lost or stuck firework.

    A worker killed while it held its workflow's lock (FireWorks' ``WFLock``: a ``locked``
    flag on the workflow document) leaves it set, and ``rerun_fw`` would wait 5 minutes and
    raise ``LockedWorkflowError``. A live worker holds the lock for milliseconds; one still held
    after ``wait_s`` belongs to the dead worker and is removed.
    """
    deadline = time.time() + wait_s
    while lp.workflows.find_one({"nodes": fw_id, "locked": {"$exists": True}}, {"_id": 1}) is not None:
        if time.time() > deadline:
            lp.workflows.update_one({"nodes": fw_id}, {"$unset": {"locked": ""}})
            return
        time.sleep(0.5)


def _as_utc(value: Any) -> datetime.datetime:
    """Return a stored ``updated_on`` (datetime, or ISO text in a journal) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if not isinstance(value, datetime.datetime):
        return datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)


def cancel(lp: LaunchPad, campaign: str) -> list[int]:
    """Defuse every firework of the campaign that has not completed (resubmit to revive them)."""
    ids = [
        d["fw_id"]
        for d in lp.fireworks.find(
            {
                "spec.campaign": campaign,
                "state": {"$in": ["READY", "WAITING", "RESERVED", "FIZZLED", "PAUSED"]},
            },
            {"fw_id": 1},
        )
    ]
    for fw_id in ids:
        lp.defuse_fw(fw_id)
        lp.fireworks.update_one({"fw_id": fw_id}, {"$set": {CANCELLED: True}})  # for submit to revive
    return ids
