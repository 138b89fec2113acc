"""The cluster path on a MongoDB-protocol server (secantusdb on a loopback port): the job store
and the LaunchPad in the server, credentials never printed, an unreachable server named in one
line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MongoServer, require_slurm, run_workers, superionic

pytestmark = pytest.mark.mongodb

EXE = str(Path(sys.executable).parent / "superionic")

ORDER_ONLY = """name: {name}
engine: mlip
systems:
  - prototype: argyrodite
    params: {{x: [0.0, 1.0], site_mixing: [0.0, 0.25, 0.5, 0.75, 1.0], a: [9.80, 9.85, 9.90, 9.95]}}
stages:
  - stage: order
    n_structures: 1
    n_restarts: 1
store: {{uri: "{uri}", database: {db}}}
"""


def _process(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
    )


def _done(status: str) -> int:
    """The ``done`` count of the total row of ``superionic status``'s table."""
    header = next(line for line in status.splitlines() if "done" in line and "stage" in line)
    cells = lambda line: [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]  # noqa: E731
    total = next(line for line in status.splitlines() if cells(line)[:1] == ["total"])
    return int(cells(total)[cells(header).index("done")])


def test_run_then_status_and_report_from_another_process_read_only_the_server(
    tmp_path: Path, mongo_server: MongoServer, mongo_db: str
) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: onserver\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n"
        "  - stage: order\n    n_structures: 2\n  - stage: relax\n    max_steps: 2\n"
        f'store: {{uri: "{mongo_server.uri}", database: {mongo_db}}}\n'
    )
    r = superionic("run", "c.yaml", "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 run, 0 already done, 0 failed" in r.stdout, r.stdout
    # another process in another folder (nothing of the run's local files there): the server only
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.yaml").write_text((tmp_path / "c.yaml").read_text())
    status = _process("status", "c.yaml", cwd=elsewhere, env={"COLUMNS": "200"})
    assert status.returncode == 0, status.stdout + status.stderr
    assert _done(status.stdout) == 3, status.stdout
    report = _process("report", "c.yaml", cwd=elsewhere)
    assert report.returncode == 0, report.stdout + report.stderr
    assert not (elsewhere / ".superionic").exists()
    rows = (elsewhere / "report" / "onserver" / "relax.csv").read_text().splitlines()
    assert len(rows) == 3  # header + two relaxed orderings
    # the documents are where the campaign's collections say, checked with pymongo directly
    import pymongo

    db = pymongo.MongoClient(mongo_server.uri)[mongo_db]
    assert db["onserver.outputs"].count_documents({}) == 3
    assert db["onserver.state"].count_documents({"state": "done"}) == 3
    again = superionic("run", "c.yaml", "--no-report", cwd=tmp_path)
    assert "0 run, 3 already done" in again.stdout, again.stdout


def test_blob_larger_than_16_mb_round_trips_through_gridfs(
    tmp_path: Path, mongo_server: MongoServer, mongo_db: str
) -> None:
    from jobflow import Flow, job

    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.dispatch.local import run_flows
    from superionic.spec import load_campaign

    (tmp_path / "c.yaml").write_text(
        "name: big\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
        f'store: {{uri: "{mongo_server.uri}", database: {mongo_db}}}\n'
    )
    store = open_campaign_store(load_campaign(tmp_path / "c.yaml"))
    assert store is not None
    frames = np.random.default_rng(0).random((2700, 270, 3)).round(6)  # ~21 MB as JSON numbers

    @job(data=True)
    def trajectory() -> dict:
        return {"positions": frames.tolist()}

    j = trajectory()
    assert run_flows([Flow([j])], store, tmp_path / "jobs").ok
    store.connect()
    out = store.job_store.get_output(j.uuid, load=True)
    assert np.array_equal(np.asarray(out["positions"]), frames)
    import pymongo

    db = pymongo.MongoClient(mongo_server.uri)[mongo_db]
    assert db["big.blobs.files"].find_one({})["length"] > 16 * 1024 * 1024  # beyond one document
    doc = db["big.outputs"].find_one({"uuid": j.uuid})
    assert "blob_uuid" in str(doc["output"])  # the document holds a reference, not the data


def test_four_workers_drain_forty_fireworks_once_and_campaigns_do_not_mix(
    tmp_path: Path, mongo_server: MongoServer, mongo_db: str
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, name in ((a, "sweep-a"), (b, "sweep-b")):
        folder.mkdir()
        (folder / "c.yaml").write_text(ORDER_ONLY.format(name=name, uri=mongo_server.uri, db=mongo_db))
    r = superionic("submit", "c.yaml", cwd=a)
    assert "added 40 workflow(s), 40 firework(s); 0 already" in r.stdout, r.stdout + r.stderr
    again = superionic("submit", "c.yaml", cwd=a)
    assert "added 0 workflow(s), 0 firework(s); 40 already on the LaunchPad" in again.stdout, again.stdout
    # campaign b in the same database: its 40 are its own
    r = superionic("submit", "c.yaml", cwd=b)
    assert "added 40 workflow(s), 40 firework(s); 0 already" in r.stdout, r.stdout + r.stderr
    assert sum(run_workers(a, 4)) == 40
    import pymongo

    db = pymongo.MongoClient(mongo_server.uri)[mongo_db]
    mine = list(db.fireworks.find({"spec.campaign": "sweep-a"}, {"fw_id": 1, "state": 1}))
    assert len(mine) == 40 and {f["state"] for f in mine} == {"COMPLETED"}
    # exactly one launch each. (Not checked in the launches collection: secantusdb's
    # findAndModify is not atomic between clients (4 threads x 200 {$inc: 1}: 226 of 800 returned
    # values repeated), so FireWorks' launch-id counter can hand one id to two launches there, and
    # the second launch document replaces the first; MongoDB's findAndModify is atomic.)
    assert [len(f["launches"]) for f in db.fireworks.find({"spec.campaign": "sweep-a"})] == [1] * 40
    assert db["sweep-a.outputs"].count_documents({}) == 40
    # no store inside the fireworks (maggma would serialise its URI, a password with it): the
    # workers took it from the campaign file
    assert all(fw["spec"]["_tasks"][0].get("store") is None for fw in db.fireworks.find({}))
    # campaign b's fireworks were not taken by a's workers, and its store is empty
    assert {f["state"] for f in db.fireworks.find({"spec.campaign": "sweep-b"})} == {"READY"}
    assert db["sweep-b.outputs"].count_documents({}) == 0
    status_b = superionic("status", "c.yaml", cwd=b, env={"COLUMNS": "200"})
    assert status_b.returncode == 0, status_b.stdout + status_b.stderr
    assert "sweep-b: status" in status_b.stdout and "sweep-a" not in status_b.stdout, status_b.stdout


def test_password_is_never_printed_and_comes_from_env_or_file(
    tmp_path: Path, mongo_server: MongoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from superionic.dispatch.mongo import connection_uri
    from superionic.spec.models import StoreSpec

    monkeypatch.setenv("SUPERIONIC_MONGO_TIMEOUT_S", "1")  # a closed port: do not wait 5 s each time
    secret = "s3cr#t-Pa55"
    closed = f"127.0.0.1:{mongo_server.port + 1 if mongo_server.port < 65535 else 1}"
    (tmp_path / "c.yaml").write_text(
        "name: pw\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
        f'store: {{uri: "mongodb://alice:{secret}@{closed}/db"}}\n'
    )
    for command in (["validate", "c.yaml"], ["status", "c.yaml"], ["run", "c.yaml"], ["worker", "c.yaml"]):
        r = superionic(*command, cwd=tmp_path)
        assert secret not in r.stdout + r.stderr, (command, r.stdout + r.stderr)
    # an unreachable server: one line naming host and port, exit 2, before any work
    r = superionic("worker", "c.yaml", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"cannot reach the MongoDB server at {closed}" in r.stdout + r.stderr
    assert "alice:****@" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr
    # the password from an environment variable or a file; the URI in the YAML holds none
    spec = StoreSpec(uri=f"mongodb://alice@{closed}/db", password_env="SUPERIONIC_TEST_PW")
    os.environ["SUPERIONIC_TEST_PW"] = secret
    try:
        assert connection_uri(spec) == f"mongodb://alice:s3cr%23t-Pa55@{closed}/db"
    finally:
        del os.environ["SUPERIONIC_TEST_PW"]
    (tmp_path / "pw.txt").write_text(secret + "\n")
    spec = StoreSpec(uri=f"mongodb://alice@{closed}/db", password_file=tmp_path / "pw.txt")
    assert connection_uri(spec) == f"mongodb://alice:s3cr%23t-Pa55@{closed}/db"
    (tmp_path / "c.yaml").write_text(
        "name: pw\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
        f'store: {{uri: "mongodb://alice@{closed}/db", password_env: SUPERIONIC_TEST_PW}}\n'
    )
    r = superionic("status", "c.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "store.password_env" in r.stdout + r.stderr, r.stdout + r.stderr
    # a relative password_file is relative to the campaign file, wherever the process starts
    from superionic.spec import load_campaign

    (tmp_path / "c.yaml").write_text(
        "name: pw\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
        f'store: {{uri: "mongodb://alice@{closed}/db", password_file: pw.txt}}\n'
    )
    assert Path.cwd() != tmp_path
    campaign = load_campaign(tmp_path / "c.yaml", check_engines="off")
    assert connection_uri(campaign.spec.store) == f"mongodb://alice:s3cr%23t-Pa55@{closed}/db"


def test_laptop_to_cluster_and_back_gives_the_same_report(
    tmp_path: Path, mongo_server: MongoServer, mongo_db: str
) -> None:
    """Run on the embedded store, copy to the server and continue there (nothing recomputed),
    copy back into a new embedded store: `report` writes the same tables from all three."""
    body = (
        "name: trip\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n"
        "  - stage: order\n    n_structures: 2\n  - stage: relax\n    max_steps: 2\n"
        "  - stage: md\n    temperatures_K: [900]\n    ramp_steps: 0\n    production_steps: 20\n"
        "    trajectory_interval: 2\n    fit_start: 0.0\n    fit_end: 1.0\n"
    )
    laptop, cluster, back = tmp_path / "laptop", tmp_path / "cluster", tmp_path / "back"
    for folder in (laptop, cluster, back):
        folder.mkdir()
    (laptop / "c.yaml").write_text(body)
    (cluster / "c.yaml").write_text(body + f'store: {{uri: "{mongo_server.uri}", database: {mongo_db}}}\n')
    (back / "c.yaml").write_text(body)
    assert superionic("run", "c.yaml", cwd=laptop).returncode == 0
    r = superionic("store", "copy", str(laptop / "c.yaml"), str(cluster / "c.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())  # rich may wrap the line at the terminal width
    assert "copied 7 output(s)" in said and "7 job state(s)" in said, r.stdout
    assert "2 trajectory(ies)" in said, r.stdout  # the two MD runs' binary trajectories
    blobs_there = r.stdout.split(" blob(s)")[0].rsplit(" ", 1)[1]
    r = superionic("submit", "c.yaml", "--dry-run", cwd=cluster)  # nor queued for the workers
    assert "would add 0 workflow(s), 0 firework(s)" in r.stdout, r.stdout + r.stderr
    r = superionic("submit", "c.yaml", cwd=cluster, env={"COLUMNS": "200"})
    assert "added 0 workflow(s), 0 firework(s); 0 already on the LaunchPad; 7 already done in the store" in (
        " ".join(r.stdout.split())  # rich may wrap the line at the terminal width
    ), r.stdout + r.stderr
    r = superionic("run", "c.yaml", cwd=cluster)
    assert "0 run, 7 already done" in r.stdout, r.stdout + r.stderr  # nothing recomputed
    import pymongo

    bucket = pymongo.MongoClient(mongo_server.uri)[mongo_db]["trip.trajectories.files"]
    assert bucket.count_documents({}) == 2  # in GridFS on the server
    r = superionic("store", "copy", str(cluster / "c.yaml"), str(back / "c.yaml"), cwd=tmp_path)
    assert r.returncode == 0 and "copied 7 output(s)" in r.stdout, r.stdout + r.stderr
    assert len(list((back / ".superionic" / "trajectories").glob("*.sitraj"))) == 2
    assert f"copied 7 output(s), {blobs_there} blob(s), 2 trajectory(ies)" in " ".join(r.stdout.split())
    assert superionic("report", "c.yaml", cwd=back).returncode == 0
    for name in ("orderings.csv", "relax.csv", "diffusion.csv"):
        original = (laptop / "report" / "trip" / name).read_text()
        assert (cluster / "report" / "trip" / name).read_text() == original, name
        assert (back / "report" / "trip" / name).read_text() == original, name
    r = superionic("store", "copy", str(laptop / "c.yaml"), str(laptop / "c.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "same store" in r.stdout + r.stderr


def test_embedded_store_on_a_network_filesystem_takes_workers_from_one_host(tmp_path: Path) -> None:
    """No server needed: /proc/mounts-style parsing, and a second host refused on nfs4."""
    from superionic.dispatch.netfs import filesystem_type, register_worker_host
    from superionic.errors import SuperionicError

    mounts = tmp_path / "mounts"
    mounts.write_text(
        "rootfs / ext4 rw 0 0\nserver:/home /home nfs4 rw 0 0\nfs@o2ib:/scratch /scratch lustre rw 0 0\n"
        "tmpfs /home/tmp tmpfs rw 0 0\n"
    )
    assert filesystem_type(Path("/home/alice/run/.superionic"), mounts) == "nfs4"
    assert filesystem_type(Path("/scratch/x"), mounts) == "lustre"
    assert filesystem_type(Path("/home/tmp/x"), mounts) == "tmpfs"
    assert filesystem_type(Path("/opt/x"), mounts) == "ext4"
    store = tmp_path / ".superionic"
    register_worker_host(store, fs_type="ext4", host="node1")
    register_worker_host(store, fs_type="ext4", host="node2")  # a local disk: never shared
    assert not (store / "worker_hosts").exists()
    register_worker_host(store, fs_type="nfs4", host="node1")
    register_worker_host(store, fs_type="nfs4", host="node1")  # more workers on the same node
    with pytest.raises(SuperionicError) as err:
        register_worker_host(store, fs_type="nfs4", host="node2")
    text = str(err.value)
    assert "network filesystem (nfs4)" in text and "node1" in text and "mongodb://" in text
    # node1's worker exits (its entry goes): a later allocation on node2 may use the store
    from superionic.dispatch.netfs import unregister_worker_host

    unregister_worker_host(store, host="node1", pid=os.getpid())
    register_worker_host(store, fs_type="nfs4", host="node2")


def test_server_stop_and_a_killed_worker_lose_nothing_and_run_nothing_twice(tmp_path: Path) -> None:
    """Faults on the server path. (1) The server stops for 10 s while four workers drain 40
    fireworks: the workers say so, wait, and carry on; every firework completes once. (2) A worker
    SIGKILLed mid-job leaves its firework RUNNING; `rerun` finds it lost and a worker runs it."""
    import signal
    import time
    from collections import Counter

    import pymongo

    from conftest import start_mongo_server

    server = start_mongo_server(tmp_path / "mongo")  # its own server: this test stops it
    try:
        run = tmp_path / "run"
        run.mkdir()
        (run / "c.yaml").write_text(ORDER_ONLY.format(name="fault", uri=server.uri, db="f"))
        assert "added 40 workflow(s)" in superionic("submit", "c.yaml", cwd=run).stdout
        workers = [
            subprocess.Popen(
                [EXE, "worker", "c.yaml", "--idle-exit", "20"],
                cwd=run,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(4)
        ]
        db = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=60000)["f"]
        deadline = time.time() + 300
        while db.fireworks.count_documents({"state": "COMPLETED"}) < 8:
            assert time.time() < deadline and all(w.poll() is None for w in workers), "workers stalled"
            time.sleep(0.3)
        server.stop()
        time.sleep(10)
        server.start()
        outs = [w.communicate(timeout=600)[0] for w in workers]
        assert [w.returncode for w in workers] == [0] * 4, outs
        ran = [int(o.rsplit("worker ran ", 1)[1].split()[0]) for o in outs]
        # a reservation whose answer was lost in the stop leaves its firework RESERVED without a
        # launch (seen in 1 of 4 runs here: secantusdb does not deduplicate pymongo's retried
        # findAndModify as MongoDB does); `rerun` finds it stuck and a worker runs it once
        stuck = db.fireworks.count_documents({"spec.campaign": "fault", "state": "RESERVED", "launches": []})
        time.sleep(2)
        r = superionic("rerun", "c.yaml", "--lost-after", "1", cwd=run)
        assert "lost: 0" in r.stdout and (f"stuck reservations: {stuck}" in r.stdout or not stuck), r.stdout
        if stuck:
            ran += run_workers(run, 1)
        fws = list(db.fireworks.find({"spec.campaign": "fault"}))
        counts = (
            Counter(f["state"] for f in fws),
            Counter(len(f["launches"]) for f in fws),
            db["fault.outputs"].count_documents({}),
        )
        assert counts == (Counter(COMPLETED=40), Counter({1: 40}), 40), counts
        assert sum(ran) == 40  # none run twice
        said = "\n".join(outs)
        assert f"MongoDB server 127.0.0.1:{server.port} is not answering" in said, said[-3000:]
        assert f"MongoDB server 127.0.0.1:{server.port} answers again" in said, said[-3000:]

        # (2) a worker killed mid-job: its firework is lost, `rerun` puts it back, it runs once more
        slow = tmp_path / "slow"
        slow.mkdir()
        (slow / "c.yaml").write_text(
            "name: slow\nengine: mlip\nsystems:\n  - prototype: argyrodite\n"
            "    params: {x: 0.5, site_mixing: 0.5}\n    supercell: [2, 1, 1]\n"
            "stages:\n  - stage: order\n    n_structures: 1\n    n_restarts: 16\n"
            f'store: {{uri: "{server.uri}", database: f}}\n'
        )
        assert superionic("submit", "c.yaml", cwd=slow).returncode == 0
        w = subprocess.Popen(
            [EXE, "worker", "c.yaml", "--ping", "1"],
            cwd=slow,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while db.fireworks.count_documents({"spec.campaign": "slow", "state": "RUNNING"}) == 0:
            assert time.time() < deadline and w.poll() is None, "the firework never started"
            time.sleep(0.3)
        os.kill(w.pid, signal.SIGKILL)
        w.wait()
        # killed while it held its workflow's lock (it happens: FireWorks' WFLock is a flag on the
        # workflow document): `rerun` must not wait 5 minutes and fail on the dead worker's lock
        (running,) = db.fireworks.find({"spec.campaign": "slow"}, {"fw_id": 1})
        db.workflows.update_one({"nodes": running["fw_id"]}, {"$set": {"locked": True}})
        time.sleep(3)  # > 2 missed pings
        r = superionic("rerun", "c.yaml", "--lost-after", "2", cwd=slow)
        assert "lost: 1" in r.stdout, r.stdout + r.stderr
        r = superionic("worker", "c.yaml", "--idle-exit", "0", cwd=slow)
        assert "worker ran 1 firework(s)" in r.stdout, r.stdout + r.stderr
        (fw,) = db.fireworks.find({"spec.campaign": "slow"})
        assert fw["state"] == "COMPLETED" and len(fw["launches"]) == 1 and len(fw["archived_launches"]) == 1
        assert db["slow.outputs"].count_documents({}) == 1  # the killed run wrote no output
    finally:
        server.stop()


@pytest.mark.slurm
def test_campaign_on_the_server_through_real_slurm_with_status_rerun_cancel(
    tmp_path: Path, mongo_server: MongoServer, mongo_db: str
) -> None:
    """The LaunchPad and job store in the server, the workers in SLURM jobs: `cancel` defuses the
    queued fireworks, `submit` revives them, `launch --slurm` runs them, `status` and `rerun` read
    the server."""
    import time

    import pymongo

    require_slurm()
    (tmp_path / "c.yaml").write_text(
        "name: slurmsrv\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
        "    n_structures: 2\n  - stage: relax\n    max_steps: 5\n"
        f'store: {{uri: "{mongo_server.uri}", database: {mongo_db}}}\n'
    )
    db = pymongo.MongoClient(mongo_server.uri)[mongo_db]
    assert "added 1 workflow(s), 3 firework(s)" in superionic("submit", "c.yaml", cwd=tmp_path).stdout
    r = superionic("cancel", "c.yaml", cwd=tmp_path)
    assert "defused 3 firework(s)" in r.stdout, r.stdout + r.stderr
    assert {f["state"] for f in db.fireworks.find({"spec.campaign": "slurmsrv"})} == {"DEFUSED"}
    r = superionic("submit", "c.yaml", cwd=tmp_path)
    assert "added 0 workflow(s), 0 firework(s); 3 already on the LaunchPad; revived 3 cancelled" in (
        " ".join(r.stdout.split())
    ), r.stdout + r.stderr
    r = superionic("init-site", "--out", "site", "--campaign", "c.yaml", "--partition", "debug", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _process(
        "launch", "c.yaml", "--slurm", "--jobs", "2", "--qadapter", "site/my_qadapter.yaml", cwd=tmp_path
    )
    assert r.returncode == 0 and "queued SLURM job(s):" in r.stdout, r.stdout + r.stderr
    job_ids = [j.strip() for j in r.stdout.rsplit(":", 1)[1].split(",")]
    deadline = time.time() + 900
    while db.fireworks.count_documents({"spec.campaign": "slurmsrv", "state": {"$ne": "COMPLETED"}}):
        assert time.time() < deadline, list(db.fireworks.find({}, {"state": 1, "name": 1}))
        time.sleep(2)
    launches = list(db.launches.find({}))
    assert {x["fworker"]["name"] for x in launches} <= {f"slurm-{j}" for j in job_ids}  # ran in SLURM
    assert db["slurmsrv.outputs"].count_documents({}) == 3
    status = _process("status", "c.yaml", cwd=tmp_path, env={"COLUMNS": "200"})
    assert status.returncode == 0 and _done(status.stdout) == 3, status.stdout + status.stderr
    r = superionic("rerun", "c.yaml", "--lost-after", "2", cwd=tmp_path)
    assert "lost: 0 []; failed: 0 []" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / ".superionic" / "launchpad").exists()  # the LaunchPad is the server's


def test_a_server_with_authentication_refuses_in_one_line(tmp_path: Path) -> None:
    """A server started with --auth: wrong credentials, and no user at all, are each one line
    naming the server and what to fix (exit 2), the password masked, before any work."""
    from conftest import start_mongo_server

    server = start_mongo_server(tmp_path / "mongo", "--auth")
    try:
        host = f"127.0.0.1:{server.port}"
        for uri, said in (
            (
                f"mongodb://alice:Wr0ngPw@{host}/db",
                f"the MongoDB server at {host} refused the credentials of user alice",
            ),
            (f"mongodb://{host}/db", f"the MongoDB server at {host} does not let a client without a user"),
        ):
            (tmp_path / "c.yaml").write_text(
                "name: auth\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
                f'store: {{uri: "{uri}"}}\n'
            )
            for command in ("status", "worker", "submit"):
                r = superionic(command, "c.yaml", cwd=tmp_path)
                text = r.stdout + r.stderr
                assert r.returncode == 2 and said in " ".join(text.split()), (command, text)
                assert "Wr0ngPw" not in text and "Traceback" not in text, text
    finally:
        server.stop()
