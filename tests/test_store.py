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


def test_journal_replay_by_key_matches_mongomock(tmp_path: Path) -> None:
    """The keyed replay (a dict of key -> _id instead of mongomock's scan) leaves the same
    documents as maggma's MemoryStore given the same upserts, inserts and removals, in the
    writing process and in a process that replays the journal."""
    from maggma.stores import MemoryStore

    ops: list[tuple[str, object, object]] = [
        ("update", [{"uuid": "a", "index": 1, "v": 1}, {"uuid": "b", "index": 1, "v": 2}], ["uuid", "index"]),
        ("update", [{"uuid": "a", "index": 2, "v": 3}], ["uuid", "index"]),
        ("update", [{"uuid": "a", "index": 1, "v": 4}], ["uuid", "index"]),  # replaces the first
        ("update", [{"uuid": "b", "v": 5}], "uuid"),  # another key: replaces b/1
        ("update", [{"uuid": "c", "v": [1, 2]}], "uuid"),
        ("update", [{"uuid": "b", "index": 1, "v": 9}], ["uuid", "index"]),  # b lost its index: new
        ("remove", {"uuid": "a", "index": 2}, None),
        (
            "update",
            [{"uuid": "a", "index": 2, "v": 6}, {"uuid": ["x"], "index": 1, "v": 7}],
            ["uuid", "index"],
        ),
        ("update", [{"uuid": "a", "index": 2, "v": 8}], ["uuid", "index"]),
    ]
    ours, reference = JournalStore(tmp_path / "s.jsonl", key="uuid"), MemoryStore(key="uuid")
    ours.connect()
    reference.connect()
    for op, arg, key in ops:
        for store in (ours, reference):
            store.update(arg, key=key) if op == "update" else store.remove_docs(arg)

    def docs(store: MemoryStore) -> list[dict]:
        return sorted(
            ({k: v for k, v in d.items() if k != "_id"} for d in store.query({})), key=lambda d: json.dumps(d)
        )

    replayed = JournalStore(tmp_path / "s.jsonl", key="uuid")
    replayed.connect()
    assert docs(ours) == docs(reference) == docs(replayed)
    assert len(docs(reference)) == 6
    assert replayed.query_one({"uuid": "a", "index": 2})["v"] == 8


def test_launchpad_projections_match_mongomock(tmp_path: Path) -> None:
    """The embedded LaunchPad's faster result copies return what mongomock returns, and the
    results are copies (changing one changes nothing stored)."""
    import mongomock

    from superionic.dispatch.fwstore import JournalDatabase

    docs = [
        {"fw_id": i, "state": "READY", "spec": {"_tasks": [{"x": [i, {"y": i}]}], "_priority": i % 3}}
        for i in range(6)
    ]
    ours = JournalDatabase(tmp_path / "pad")["fireworks"]
    reference = mongomock.MongoClient().db.fireworks
    ours.insert_many([dict(d) for d in docs])
    reference.insert_many([dict(d) for d in docs])
    for projection in (
        None,
        {"fw_id": 1},
        {"fw_id": 1, "_id": 0},
        {"spec": 1},
        {"_id": 1},
        {"spec._priority": 1},
        {"spec": 0},
        {"fw_id": True, "missing": 1},
    ):
        got = list(ours.find({"fw_id": {"$gte": 2}}, projection, sort=[("spec._priority", -1)]))
        want = list(reference.find({"fw_id": {"$gte": 2}}, projection, sort=[("spec._priority", -1)]))
        assert [{k: v for k, v in d.items() if k != "_id"} for d in got] == [
            {k: v for k, v in d.items() if k != "_id"} for d in want
        ], projection
        assert [("_id" in d) for d in got] == [("_id" in d) for d in want], projection
    got = ours.find_one({"fw_id": 3})
    got["spec"]["_tasks"][0]["x"][1]["y"] = "changed"
    assert ours.find_one({"fw_id": 3})["spec"]["_tasks"][0]["x"][1]["y"] == 3
