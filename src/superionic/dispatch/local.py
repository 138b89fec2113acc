"""Run campaign flows on this machine against the campaign's store.

Like jobflow's ``run_locally``, with what a campaign needs on top:

* a job whose (fingerprint-derived) uuid already has an output in the store is skipped, so a
  second ``run`` of a finished campaign recomputes nothing;
* every job's state (waiting / running / done / failed / blocked) is written to a ``state``
  collection that ``status`` reads from another process;
* a job's ``Response`` is honoured as jobflow's ``run_locally`` does (``stop_children``: its
  descendants do not run; ``stop_jobflow``: nothing more of its workflow runs; then ``replace``,
  ``detour`` and ``addition`` flows run), and it is recorded with the job's state, so a later
  ``run`` that skips the finished job still blocks its children and resumes an unfinished
  replacement or detour (FireWorks keeps these on the LaunchPad; here the state store keeps them);
* one ``run`` at a time per embedded store: a second one is refused with the first one's pid
  (workers in parallel go through FireWorks with a MongoDB URI).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import chdir, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from jobflow import Flow, Job, JobStore, OnMissing, Response
from maggma.core import Store
from monty.json import MontyDecoder, jsanitize

from superionic.errors import SuperionicError

logger = logging.getLogger(__name__)


@dataclass
class CampaignStore:
    """The stores of one campaign: job outputs (with blobs) and job states."""

    job_store: JobStore
    state: Store
    root: Path | None = None

    def connect(self) -> None:
        """Connect both stores."""
        self.job_store.connect()
        self.state.connect()

    def has_output(self, uuid: str, index: int | None = None) -> bool:
        """Whether the job store holds an output for this job uuid (and index, when given)."""
        criteria: dict[str, Any] = {"uuid": uuid}
        if index is not None:
            criteria["index"] = index
        return self.job_store.docs_store.count(criteria) > 0

    def set_state(
        self, job: Job, state: str, responses: dict[str, dict | None] | None = None, **extra: Any
    ) -> None:
        """Record a job's state.

        ``responses`` maps a run index of the job (``str(job.index)``; a replacement shares the
        uuid with the next index) to what its ``Response`` asked for (see :func:`run_flows`), or
        to None to forget it. Recorded responses are kept across later state updates of the uuid.
        """
        previous = self.state.query_one({"uuid": job.uuid}, properties=["responses"]) or {}
        merged = {**(previous.get("responses") or {}), **(responses or {})}
        if merged := {k: v for k, v in merged.items() if v}:
            extra["responses"] = merged
        md = job.metadata
        doc = {
            "uuid": job.uuid,
            "name": job.name,
            "campaign": md.get("campaign"),
            "system": md.get("system"),
            "stage": md.get("stage"),
            "fingerprint": md.get("fingerprint"),
            "state": state,
            "updated_at": datetime.now(UTC).isoformat(),
            **extra,
        }
        self.state.update(doc, key="uuid")

    def states(self, uuids: list[str] | None = None) -> dict[str, dict]:
        """Return state documents by uuid."""
        criteria = {"uuid": {"$in": uuids}} if uuids is not None else {}
        return {d["uuid"]: d for d in self.state.query(criteria)}

    def response(self, job: Job) -> dict[str, Any]:
        """Return what the job's recorded ``Response`` asked for (empty when nothing)."""
        doc = self.state.query_one({"uuid": job.uuid}, properties=["responses"]) or {}
        return dict((doc.get("responses") or {}).get(str(job.index)) or {})


@dataclass
class RunSummary:
    """What a run did."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no job failed or was blocked."""
        return not self.failed and not self.blocked


@contextmanager
def exclusive_run(root: Path) -> Iterator[None]:
    """Hold the store's run lock, or refuse clearly if another run holds it."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "run.lock"
    fh: IO[str] = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise SuperionicError.single(
                "store",
                f"another `superionic run` ({holder}) is using this embedded store",
                str(root),
                "wait for it to finish; for parallel workers use `superionic submit` with FireWorks "
                "and a MongoDB URI (store: {uri: mongodb://...})",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        yield
    finally:
        fh.close()


def run_flows(
    flows: list[Flow],
    store: CampaignStore,
    workdir: Path,
    on_event: Any = None,
    raise_immediately: bool = False,
) -> RunSummary:
    """Run every job of ``flows`` in dependency order, skipping finished ones.

    Parameters
    ----------
    flows : list of Flow
        Fingerprinted flows (see :func:`superionic.flows.build_flows`).
    store : CampaignStore
        Where outputs and states go.
    workdir : Path
        Each job runs in ``workdir/<job uuid>``.
    on_event : callable, optional
        ``on_event(kind, job, info)`` with kind in ``start, done, skip, fail, block``.
    raise_immediately : bool
        Re-raise a job's exception instead of recording the failure.

    Returns
    -------
    RunSummary

    """
    summary = RunSummary()
    start = time.time()
    bad: set[str] = set()  # failed, or blocked by a failure upstream
    stopped: dict[str, str] = {}  # uuid -> why its descendants do not run (stop_children)
    store.connect()

    def emit(kind: str, job: Job, info: str = "") -> None:
        if on_event is not None:
            on_event(kind, job, info)

    def block(job: Job, reason: str) -> None:
        summary.blocked.append(job.uuid)
        store.set_state(job, "blocked", error=reason)
        emit("block", job, reason)

    def follow(job: Job, record: dict[str, Any], flows: dict[str, Flow | None], stop: dict[str, str]) -> None:
        """Do what a finished job's Response asked, in ``run_locally``'s order."""
        if record.get("stop_children"):
            stopped[job.uuid] = f"parent {job.name!r} asked to stop its children (stop_children)"
        if record.get("stop_jobflow"):
            stop["reason"] = f"job {job.name!r} asked to stop the workflow (stop_jobflow)"
            return
        for key in ("replace", "detour", "addition"):
            flow = flows.get(key)
            if flow is None and record.get(key):
                flow = _decode_flow(record[key], job, key)
            if flow is not None:
                run_flow(flow, stop, quiet_skips=key not in flows)

    def run_flow(flow: Flow, stop: dict[str, str], quiet_skips: bool = False) -> None:
        for job, parents in flow.iterflow():
            if stop:
                block(job, stop["reason"])
                continue
            halted = next((stopped[p] for p in parents if p in stopped), None)
            if halted is not None:
                stopped[job.uuid] = halted  # and so on down the graph, as run_locally does
                block(job, halted)
                continue
            # like run_locally: a failed parent blocks the job unless it accepts missing inputs
            if set(parents) & bad and job.config.on_missing_references == OnMissing.ERROR:
                bad.add(job.uuid)
                block(job, "an upstream job failed")
                continue
            if store.has_output(job.uuid, job.index):
                if not quiet_skips:
                    summary.skipped.append(job.uuid)
                    emit("skip", job)
                store.set_state(job, "done")
                follow(job, store.response(job), {}, stop)
                continue
            job_dir = workdir / job.uuid
            job_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            store.set_state(
                job,
                "running",
                responses={str(job.index): None},
                pid=os.getpid(),
                host=socket.gethostname(),
                job_dir=str(job_dir),
                started_at=datetime.now(UTC).isoformat(),
            )
            emit("start", job)
            try:
                with chdir(job_dir):
                    response = job.run(store=store.job_store)
            except Exception as exc:
                if raise_immediately:
                    raise
                message = f"{type(exc).__name__}: {exc}"
                bad.add(job.uuid)
                summary.failed[job.uuid] = message
                store.set_state(
                    job,
                    "failed",
                    error=message,
                    traceback=traceback.format_exc()[-4000:],
                    run_seconds=time.time() - t0,
                    job_dir=str(job_dir),
                )
                emit("fail", job, message)
                continue
            record = _response_record(response)
            if record:  # recorded before the diversions run: a killed run resumes them
                store.set_state(job, "running", responses={str(job.index): record}, job_dir=str(job_dir))
            diversions = {k: getattr(response, k) for k in ("replace", "detour", "addition")}
            follow(job, record, diversions, stop)
            if job.uuid in bad:  # its replacement (same uuid) failed and says so in the state
                continue
            summary.done.append(job.uuid)
            store.set_state(job, "done", run_seconds=time.time() - t0, job_dir=str(job_dir))
            emit("done", job, f"{time.time() - t0:.1f} s")

    for flow in flows:
        run_flow(flow, {})  # stop_jobflow ends one workflow (one per system, as on FireWorks)
    summary.seconds = time.time() - start
    return summary


def _response_record(response: Response) -> dict[str, Any]:
    """Return what a job's Response asks of the runner, JSON-serialisable, for the state store."""
    record: dict[str, Any] = {}
    if response.stop_children:
        record["stop_children"] = True
    if response.stop_jobflow:
        record["stop_jobflow"] = True
    for key in ("replace", "detour", "addition"):
        flow = getattr(response, key)
        if flow is None:
            continue
        try:
            record[key] = jsanitize(flow.as_dict(), strict=True, enum_values=True, allow_bson=False)
        except (AttributeError, TypeError, ValueError) as exc:  # not MSONable: only this run can follow it
            record[key] = {"unserialisable": f"{type(exc).__name__}: {exc}"}
    return record


def _decode_flow(data: dict[str, Any], job: Job, key: str) -> Flow | None:
    """Rebuild a recorded replace/detour/addition flow; None (with a warning) when impossible."""
    if "unserialisable" not in data:
        try:
            flow = MontyDecoder().process_decoded(data)
        except Exception as exc:
            data = {"unserialisable": f"{type(exc).__name__}: {exc}"}
        else:
            return flow if isinstance(flow, Flow) else Flow([flow])
    logger.warning(
        "cannot rebuild the %s flow of %s (%s); it is not resumed", key, job.name, data["unserialisable"]
    )
    return None
