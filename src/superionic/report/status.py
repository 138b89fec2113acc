"""Per system and stage: how many jobs are done, running, failed, blocked or waiting."""

from __future__ import annotations

import os
import socket
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from rich.markup import escape
from rich.table import Table

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


def job_state(doc: dict | None, has_output: bool) -> str:
    """Return the state ``status`` shows for one job (the one rule for every view of a store).

    A job never seen by any run is ``waiting``; one recorded as running whose process is gone
    (its pid is not alive on this host) is ``lost``; one recorded as running on another host
    counts as running (it cannot be checked from here); a job with an output in the store is
    ``done`` whatever ran it.

    Parameters
    ----------
    doc : dict or None
        The job's document in the store's ``state`` collection.
    has_output : bool
        Whether the job store holds an output for the job.

    Returns
    -------
    str
        One of :data:`STATES`.
    """
    state = doc["state"] if doc else "waiting"
    if state == "running" and doc is not None and not _alive(doc):
        state = "lost"
    if state != "done" and has_output:
        state = "done"
    return state


def campaign_status(planned: list[PlannedJob], store: CampaignStore | None) -> StatusTable:
    """Combine the planned jobs with the states recorded in the store (see :func:`job_state`)."""
    table = StatusTable()
    states = store.states([p.uuid for p in planned]) if store is not None else {}
    for p in planned:
        doc = states.get(p.uuid)
        state = job_state(doc, store is not None and store.has_output(p.uuid))
        table.counts[(p.system, p.stage)][state] += 1
        if state == "failed" and doc is not None:
            table.failures.append((p.name, doc.get("error", "")))
    return table


def _cell_width(texts: list[str]) -> int:
    return max((len(t) for t in texts), default=0)


def render_status(title: str, table: StatusTable, width: int) -> Table:
    """Return the status table for a terminal ``width`` columns wide.

    System names never wrap or get cut (a sweep's systems differ only at the end, e.g.
    ``Li6PS5Cl-halide=Cl`` and ``...=Br``). When the table does not fit, the state columns with
    no job are left out (named in the caption); if it still does not fit, the prefix the system
    names share is shown once in the caption and replaced by ``…`` in the rows.
    """
    total = table.total()
    systems = [system for system, _ in table.counts]
    stages = [stage for _, stage in table.counts]

    def needed(states: list[str], names: list[str]) -> int:
        cols = [_cell_width(["system", "total", *names]), _cell_width(["stage", *stages])]
        cols += [max(len(s), len(str(total.get(s, 0)))) for s in states]
        return sum(cols) + 3 * len(cols) + 1  # "│ x " per column, closing "│"

    states, names, notes = list(STATES), list(systems), []
    if needed(states, names) > width:
        states = [s for s in STATES if total.get(s)] or ["waiting"]
        dropped = [s for s in STATES if s not in states]
        if dropped:
            notes.append("no jobs: " + ", ".join(dropped))
    prefix = os.path.commonprefix(systems) if len(set(systems)) > 1 else ""  # noqa: RUF071 (names, not paths)
    prefix = prefix[: max(prefix.rfind("-"), prefix.rfind(" ")) + 1]  # cut at a separator
    if needed(states, names) > width and len(prefix) > 3:
        names = ["…" + name[len(prefix) :] for name in systems]
        notes.append(f"… = {prefix}")
    out = Table(title=title, caption="; ".join(notes) or None)
    out.add_column("system", no_wrap=True)
    out.add_column("stage", no_wrap=True)
    for s in states:
        out.add_column(s, justify="right")
    for name, ((_system, stage), counts) in zip(names, table.counts.items(), strict=True):
        out.add_row(escape(name), stage, *[str(counts.get(s, 0) or "") for s in states])
    out.add_row("[bold]total[/bold]", "", *[str(total.get(s, 0)) for s in states])
    return out
