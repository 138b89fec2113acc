"""The first vertical slice end to end on CHGNet: the campaign is run by the real console script and
read back by later processes like a user would; the other commands run in-process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CliRun, superionic

TINY = """\
name: tiny
engine: mlip
preset: demo
systems:
  - name: LPSC
    prototype: argyrodite
stages:
  - stage: order
  - stage: relax
    max_steps: 3
  - stage: md
    temperatures_K: [600, 1200]
    production_steps: 40
    trajectory_interval: 2
    fit_start: 0.2
    fit_end: 0.8
"""


def cells(line: str) -> list[str]:
    """Split a rich table row into its cell texts."""
    return [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]


def process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``superionic ARGS`` as its own process (the console script a user starts)."""
    exe = Path(sys.executable).parent / "superionic"
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900)


def cli(*args: str, cwd: Path) -> CliRun:
    """``superionic ARGS`` in this process (no new process's imports), with the same 200 columns."""
    return superionic(*args, cwd=cwd, env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    (work / "tiny.yaml").write_text(TINY)
    result = process("run", "tiny.yaml", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 run, 0 already done, 0 failed" in result.stdout
    return work


def test_report_has_diffusion_csv_and_arrhenius_png(finished: Path) -> None:
    report = finished / "report" / "tiny"
    for name in (
        "summary.md",
        "orderings.csv",
        "relax.csv",
        "diffusion.csv",
        "arrhenius.csv",
        "arrhenius.png",
        "msd.png",
    ):
        assert (report / name).is_file(), name
    rows = list(csv.DictReader(open(report / "diffusion.csv")))
    assert [float(r["temperature_K"]) for r in rows] == [600.0, 1200.0]
    for r in rows:
        assert float(r["diffusivity_err_cm2_s"]) > 0
        assert r["species"] == "Li"
        # 40 steps x 2 fs = 80 fs of production, 2-fs frames every 2 steps -> 20 lags of 4 fs
        assert float(r["total_time_ps"]) == pytest.approx(0.08)
    assert (report / "arrhenius.png").stat().st_size > 10_000
    summary = (report / "summary.md").read_text()
    assert "Diffusion per temperature" in summary and "![arrhenius](arrhenius.png)" in summary


def test_store_is_seen_by_later_processes(finished: Path) -> None:
    result = process("status", "tiny.yaml", cwd=finished)
    assert result.returncode == 0, result.stderr
    total = next(cells(line) for line in result.stdout.splitlines() if "total" in line)
    # columns: system, stage, done, running, failed, blocked, lost, waiting
    assert total[2:] == ["7", "0", "0", "0", "0", "0"]
    listing = cli("status", "--store", ".superionic", cwd=finished)
    assert "tiny" in listing.stdout and "arrhenius" in listing.stdout


def test_second_run_recomputes_nothing(finished: Path) -> None:
    result = cli("run", "tiny.yaml", "--no-report", cwd=finished)
    assert result.returncode == 0, result.stderr
    assert "0 run, 7 already done" in result.stdout


def test_changed_setting_reruns_only_downstream(finished: Path) -> None:
    text = (
        (finished / "tiny.yaml")
        .read_text()
        .replace("temperatures_K: [600, 1200]", "temperatures_K: [600, 900]")
    )
    (finished / "tiny2.yaml").write_text(text)
    result = process("validate", "tiny2.yaml", cwd=finished)
    assert result.returncode == 0
    status = cli("status", "tiny2.yaml", cwd=finished)
    rows = {tuple(c[:2]): c[2:] for c in map(cells, status.stdout.splitlines()) if c and c[0] == "LPSC"}
    # order, relax, md 600 K, diffusion 600 K are shared with the finished campaign
    assert rows[("LPSC", "order")][0] == "1"
    assert rows[("LPSC", "relax")][0] == "1"
    assert rows[("LPSC", "md")] == ["1", "", "", "", "", "1"]  # 1 done, 1 waiting
    assert rows[("LPSC", "arrhenius")][-1] == "1"


FROZEN = """\
name: frozen
systems:
  - name: LPSBH
    prototype: argyrodite_bh4
stages:
  - stage: order
  - stage: md
    temperatures_K: [900]
    production_steps: 30
    trajectory_interval: 2
    timestep_fs: 0.5
    rotation_units: [BH4]
    frozen_species: [P, S]
"""


def test_frozen_framework_and_bh4_rotation_through_the_flow(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(FROZEN)
    result = cli("run", "f.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.DictReader(open(tmp_path / "report" / "frozen" / "rotation.csv")))
    assert len(rows) == 1 and rows[0]["unit"] == "BH4" and rows[0]["n_units"] == "8"
    assert (tmp_path / "report" / "frozen" / "rotation_acf.png").is_file()
    # the frozen P and S atoms did not move during MD; Li and H did
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign
    from superionic.stages.md import trajectory_arrays

    campaign = load_campaign(tmp_path / "f.yaml")
    store = open_campaign_store(campaign, create=False)
    assert store is not None
    store.connect()
    md_job = next(p for p in planned_jobs(build_flows(campaign)) if p.name.endswith("md 900 K"))
    doc = store.job_store.get_output(md_job.uuid, load=True)
    frac, _lattice, species = trajectory_arrays(doc["objects"]["trajectory"], store.job_store)
    moved = np.abs(frac[-1] - frac[0]).max(axis=1)
    sym = np.array(species)
    assert moved[(sym == "P") | (sym == "S")].max() < 1e-6
    assert moved[sym == "H"].max() > 1e-3


CHUNKED = """\
name: chunks
systems:
  - name: LPSC
    prototype: argyrodite
stages:
  - stage: order
  - stage: md
    temperatures_K: [1000, 1200]
    production_steps: 20
    trajectory_interval: 2
    target_rsd: 0.01       # unreachable: every temperature runs max_chunks chunks
    max_chunks: 3
"""


def test_md_extended_in_chunks_until_rsd_or_max(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(CHUNKED)
    result = cli("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.DictReader(open(tmp_path / "report" / "chunks" / "diffusion.csv")))
    assert [float(r["temperature_K"]) for r in rows] == [1000.0, 1200.0]
    for r in rows:
        # 3 chunks x 20 steps x 2 fs, frames every 2 steps, joined without repeated frames
        assert float(r["total_time_ps"]) == pytest.approx(0.12)
    assert (tmp_path / "report" / "chunks" / "arrhenius.csv").is_file()
    again = cli("run", "c.yaml", "--no-report", cwd=tmp_path)
    assert "0 run" in again.stdout, again.stdout
