"""Run campaign flows on this machine against the campaign's store.

Like jobflow's ``run_locally``, with what a campaign needs on top:

* a job whose (fingerprint-derived) uuid already has an output in the store is skipped, so a
  second ``run`` of a finished campaign recomputes nothing;
* every job's state (waiting / running / done / failed / blocked) is written to a ``state``
  collection that ``status`` reads from another process;
* one ``run`` at a time per embedded store: a second one is refused with the first one's pid
  (workers in parallel go through FireWorks with a MongoDB URI).
"""

from __future__ import annotations

import fcntl
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

from jobflow import Flow, Job, JobStore
from maggma.core import Store

from superionic.errors import SuperionicError


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

    def set_state(self, job: Job, state: str, **extra: Any) -> None:
        """Record a job's state."""
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
    bad: set[str] = set()
    store.connect()

    def emit(kind: str, job: Job, info: str = "") -> None:
        if on_event is not None:
            on_event(kind, job, info)

    def run_flow(flow: Flow) -> None:
        for job, parents in flow.iterflow():
            if set(parents) & bad:
                bad.add(job.uuid)
                summary.blocked.append(job.uuid)
                store.set_state(job, "blocked", error="an upstream job failed")
                emit("block", job)
                continue
            if store.has_output(job.uuid, job.index):
                summary.skipped.append(job.uuid)
                store.set_state(job, "done")
                emit("skip", job)
                continue
            job_dir = workdir / job.uuid
            job_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            store.set_state(
                job,
                "running",
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
            for extra in (response.replace, response.detour, response.addition):
                if extra is not None:
                    run_flow(extra if isinstance(extra, Flow) else Flow([extra]))
            summary.done.append(job.uuid)
            store.set_state(job, "done", run_seconds=time.time() - t0, job_dir=str(job_dir))
            emit("done", job, f"{time.time() - t0:.1f} s")

    for flow in flows:
        run_flow(flow)
    summary.seconds = time.time() - start
    return summary
