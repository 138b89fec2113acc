"""FireWorks dispatch: embedded LaunchPad under concurrent workers, lost runs, resubmission, SLURM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bson import json_util

from conftest import CliRun, require_slurm, run_workers, superionic

EXE = str(Path(sys.executable).parent / "superionic")

SWEEP = """name: sweep
engine: mlip
systems:
  - prototype: argyrodite
    params: {x: [0.0, 1.0], site_mixing: [0.0, 0.25, 0.5, 0.75, 1.0], a: [9.80, 9.85, 9.90, 9.95]}
stages:
  - stage: order
    n_structures: 1
    n_restarts: 1
"""


def _process(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``superionic ARGS`` as its own process (workers, SLURM launch, the report a user asks for)."""
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _cli(*args: str, cwd: Path) -> CliRun:
    """``superionic ARGS`` in this process: submit, status and rerun need no process of their own."""
    return superionic(*args, cwd=cwd)


def _pad(tmp_path: Path, name: str = "c.yaml"):  # type: ignore[no-untyped-def]
    from superionic.dispatch.fireworks import open_launchpad
    from superionic.spec import load_campaign

    campaign = load_campaign(tmp_path / name)
    return campaign, open_launchpad(campaign, create=False)


def _all_lines_parse(folder: Path) -> int:
    n = 0
    for path in folder.rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            json_util.loads(line)
            n += 1
    return n


def test_four_workers_drain_forty_fireworks_exactly_once(tmp_path: Path) -> None:
    """Repeated 3 times: 4 concurrent worker processes on one embedded LaunchPad, 40 fireworks."""
    for round_ in range(3):
        folder = tmp_path / f"round{round_}"
        folder.mkdir()
        (folder / "c.yaml").write_text(SWEEP)
        r = _cli("submit", "c.yaml", cwd=folder)
        assert r.returncode == 0 and "added 1 workflow(s), 40 firework(s)" not in r.stdout, (
            r.stdout + r.stderr
        )
        assert "40 firework(s)" in r.stdout
        ran = run_workers(folder, 4)
        assert sum(ran) == 40, ran
        campaign, lp = _pad(folder)
        fws = list(lp.fireworks.find({}, {"fw_id": 1, "state": 1, "spec.fingerprint": 1}))
        assert len(fws) == 40 and {f["state"] for f in fws} == {"COMPLETED"}
        for f in fws:  # exactly one launch each: nothing ran twice
            assert lp.launches.count_documents({"fw_id": f["fw_id"]}) == 1
        from superionic.dispatch.campaign_store import open_campaign_store

        store = open_campaign_store(campaign, create=False)
        store.connect()
        uuids = {d["uuid"] for d in store.job_store.query({}, properties=["uuid"])}
        assert len(uuids) == 40  # every result is in the JobStore
        assert _all_lines_parse(folder / ".superionic") > 80


def test_resubmission_adds_nothing_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(SWEEP)
    r = _cli("submit", "c.yaml", "--dry-run", cwd=tmp_path)
    assert "would add 40 workflow(s), 40 firework(s); 0 already" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / ".superionic" / "launchpad").exists()
    assert "added 40 workflow(s)" in _cli("submit", "c.yaml", cwd=tmp_path).stdout
    again = _cli("submit", "c.yaml", cwd=tmp_path).stdout
    assert "added 0 workflow(s), 0 firework(s); 40 already on the LaunchPad" in again
    # one more composition: only its job is new
    (tmp_path / "c.yaml").write_text(SWEEP.replace("9.95]", "9.95, 10.0]"))
    assert "added 10 workflow(s), 10 firework(s); 40 already" in _cli("submit", "c.yaml", cwd=tmp_path).stdout


def test_killed_worker_is_detected_as_lost_and_rerun(tmp_path: Path) -> None:
    # one firework long enough (16 annealing restarts of a 2x1x1 cell, about 10 s) to be seen
    # RUNNING and killed; it runs twice (killed, then rerun), so it is no longer than that needs
    (tmp_path / "c.yaml").write_text(
        "name: slow\nengine: mlip\nsystems:\n  - prototype: argyrodite\n"
        "    params: {x: 0.5, site_mixing: 0.5}\n    supercell: [2, 1, 1]\n"
        "stages:\n  - stage: order\n    n_structures: 1\n    n_restarts: 16\n"
    )
    assert _cli("submit", "c.yaml", cwd=tmp_path).returncode == 0
    w = subprocess.Popen(
        [EXE, "worker", "c.yaml", "--ping", "1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, lp = _pad(tmp_path)
    deadline = time.time() + 120
    while lp.fireworks.count_documents({"state": "RUNNING"}) == 0:
        assert time.time() < deadline and w.poll() is None, "the firework never started"
        time.sleep(0.3)
    status = _cli("status", "c.yaml", cwd=tmp_path).stdout
    row = next(
        line
        for line in status.splitlines()
        if "order" in line and "│" in line and "FireWorks" not in line and line.count("│") > 9
    )
    assert " 1 " in row  # one RUNNING firework shown while the campaign runs
    os.kill(w.pid, signal.SIGKILL)
    w.wait()
    time.sleep(3)  # > 2 missed pings
    r = _cli("rerun", "c.yaml", "--lost-after", "2", cwd=tmp_path)
    assert "lost: 1" in r.stdout, r.stdout + r.stderr
    assert lp.fireworks.find_one({})["state"] == "READY"
    r = _cli("worker", "c.yaml", "--idle-exit", "0", cwd=tmp_path)
    assert "worker ran 1 firework(s)" in r.stdout, r.stdout + r.stderr
    assert lp.fireworks.find_one({})["state"] == "COMPLETED"


@pytest.mark.slurm
def test_campaign_through_real_slurm(tmp_path: Path) -> None:
    require_slurm()
    (tmp_path / "c.yaml").write_text(
        "name: slurmdemo\nengine: mlip\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
        "    n_structures: 2\n  - stage: relax\n    max_steps: 5\n"
    )
    assert _cli("submit", "c.yaml", cwd=tmp_path).returncode == 0
    # the README's cluster commands as written: a relative --out, then launch with that qadapter
    r = _cli("init-site", "--out", "site", "--campaign", "c.yaml", "--partition", "debug", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _process(
        "launch", "c.yaml", "--slurm", "--jobs", "2", "--qadapter", "site/my_qadapter.yaml", cwd=tmp_path
    )
    assert r.returncode == 0 and "queued SLURM job(s):" in r.stdout, r.stdout + r.stderr
    job_ids = [j.strip() for j in r.stdout.rsplit(":", 1)[1].split(",")]
    assert len(job_ids) == 2
    campaign, lp = _pad(tmp_path)
    deadline = time.time() + 900
    while lp.fireworks.count_documents({"state": {"$ne": "COMPLETED"}}) and time.time() < deadline:
        time.sleep(2)
    states = {d["state"] for d in lp.fireworks.find({})}
    logs = "\n".join(p.read_text() for p in (tmp_path / ".superionic" / "queue").rglob("*.*") if p.is_file())
    assert states == {"COMPLETED"}, logs[-3000:]
    workers = {launch["fworker"]["name"] for launch in lp.launches.find({})}
    assert workers <= {f"slurm-{j}" for j in job_ids}  # every firework ran inside a SLURM job
    # FireWorks' queue log went to the folder init-site named (made absolute), not a launch folder
    assert any((tmp_path / "site" / "queue").glob("*.log"))
    from superionic.dispatch.campaign_store import open_campaign_store

    store = open_campaign_store(campaign, create=False)
    store.connect()
    energies = [d["output"]["output"]["energy"] for d in store.job_store.query({"name": {"$regex": "relax"}})]
    assert len(energies) == 2 and all(e < 0 for e in energies)
    assert _process("report", "c.yaml", cwd=tmp_path).returncode == 0
    assert (tmp_path / "report" / "slurmdemo" / "relax.csv").is_file()


def test_cancel_then_submit_revives_only_what_cancel_defused(tmp_path: Path) -> None:
    """`cancel` defuses the unfinished fireworks and `submit` revives them; a firework defused
    otherwise (jobflow's stop_children does that) and one of a job no longer in the campaign stay
    defused."""
    (tmp_path / "c.yaml").write_text(SWEEP.replace("9.95]", "9.95, 10.0]"))
    assert "added 50 workflow(s)" in _cli("submit", "c.yaml", cwd=tmp_path).stdout
    _, lp = _pad(tmp_path)
    other = lp.fireworks.find_one({"name": {"$regex": "a=9.8 "}})["fw_id"]
    lp.defuse_fw(other)  # not by `cancel`
    r = _cli("cancel", "c.yaml", cwd=tmp_path)
    assert "defused 49 firework(s)" in r.stdout, r.stdout + r.stderr
    (tmp_path / "c.yaml").write_text(SWEEP)  # the a = 10.0 jobs leave the campaign
    r = _cli("submit", "c.yaml", cwd=tmp_path)
    assert "revived 39 cancelled" in " ".join(r.stdout.split()), r.stdout + r.stderr
    states = {d["fw_id"]: d["state"] for d in lp.fireworks.find({}, {"fw_id": 1, "state": 1})}
    assert states[other] == "DEFUSED"
    assert (
        sum(s == "READY" for s in states.values()) == 39
        and sum(s == "DEFUSED" for s in states.values()) == 11
    )
    assert "revived" not in _cli("submit", "c.yaml", cwd=tmp_path).stdout  # once
