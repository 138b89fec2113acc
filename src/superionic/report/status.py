"""Per system and stage: how many jobs are done, running, failed, blocked or waiting."""

from __future__ import annotations

import os
import socket
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from superionic.dispatch.local import CampaignStore
from superionic.flows import PlannedJob

STATES = ("done", "running", "failed", "blocked", "lost", "waiting")


@dataclass
class StatusTable:
    """Counts per (system, stage) and the failures' messages."""

    counts: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[tuple[str, str]] = field(default_factory=list)

    def total(self) -> Counter:
        """Return the counts over the whole campaign."""
        out: Counter = Counter()
        for c in self.counts.values():
            out.update(c)
        return out


def _alive(doc: dict) -> bool:
    if doc.get("host") != socket.gethostname() or "pid" not in doc:
        return True  # cannot tell from here
    try:
        os.kill(int(doc["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def campaign_status(planned: list[PlannedJob], store: CampaignStore | None) -> StatusTable:
    """Combine the planned jobs with the states recorded in the store.

    A job never seen by any run is ``waiting``; one recorded as running whose process is gone is
    ``lost``; a job with an output in the store is ``done`` whatever ran it.
    """
    table = StatusTable()
    states = store.states([p.uuid for p in planned]) if store is not None else {}
    for p in planned:
        doc = states.get(p.uuid)
        state = doc["state"] if doc else "waiting"
        if state == "running" and doc is not None and not _alive(doc):
            state = "lost"
        if state != "done" and store is not None and store.has_output(p.uuid):
            state = "done"
        table.counts[(p.system, p.stage)][state] += 1
        if state == "failed" and doc is not None:
            table.failures.append((p.name, doc.get("error", "")))
    return table
