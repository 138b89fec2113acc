"""Read back what a run left on disk, for the console: an embedded store's job states, hull.csv."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path


def store_job_counts(store_dir: Path) -> Counter[tuple[str, str, str, str]] | None:
    """Count an embedded store's jobs per (campaign, system, stage, state), without a campaign file.

    Parameters
    ----------
    store_dir : Path
        An embedded store folder (made by ``superionic run``).

    Returns
    -------
    Counter or None
        Jobs per (campaign, system, stage, state), the state by the same rule as a campaign's
        status (a recorded run whose process is gone is lost); None when the folder holds no store.

    """
    from superionic.dispatch.stores import JournalStore
    from superionic.report.status import job_state

    path = store_dir / "state.jsonl"
    if not path.is_file():
        return None
    state = JournalStore(path, collection_name="state", key="uuid")
    state.connect()
    with_output: set[str] = set()
    if (store_dir / "outputs.jsonl").is_file():
        outputs = JournalStore(store_dir / "outputs.jsonl", collection_name="outputs")
        outputs.connect()
        with_output = {d["uuid"] for d in outputs.query({}, properties=["uuid"])}
    counts: Counter = Counter()
    for d in state.query({}):
        shown = job_state(d, d.get("uuid") in with_output)  # the same rule as `status FILE`
        counts[(d.get("campaign"), d.get("system"), d.get("stage"), shown)] += 1
    return counts


def hull_rows(report_dir: Path) -> list[dict[str, str]] | None:
    """Return the rows of a report's hull.csv (None when the campaign has no hull stage).

    Parameters
    ----------
    report_dir : Path
        A report folder (from ``write_report``).

    Returns
    -------
    list of dict or None
        One row per structure: structure, formula, e_hull_meV_per_atom, decomposition, ...; None
        when there is no hull.csv.

    """
    path = report_dir / "hull.csv"
    if not path.is_file():
        return None
    with path.open() as fh:
        return list(csv.DictReader(fh))
