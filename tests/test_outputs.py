"""Outputs that must not mislead: plots, tables, status, order folders, help texts."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from jobflow import JobStore
from maggma.stores import MemoryStore
from pymatgen.core import Lattice, Structure
from rich.console import Console
from typer.testing import CliRunner

from superionic.cli import app
from superionic.dispatch.local import CampaignStore
from superionic.flows import PlannedJob
from superionic.report.status import StatusTable
from superionic.report.writer import _md_table, hull_rows, plot_arrhenius_points, write_report

runner = CliRunner()
KB = 8.617333262e-5


def _fit(temps: list[float], ea: float = 0.3, prefactor: float = 1e-3) -> dict[str, Any]:
    return {
        "activation_energy_eV": ea,
        "activation_energy_err_eV": 0.05,
        "prefactor": prefactor,
        "temperatures_K": temps,
        "extrapolated_T_K": 300.0,
        "extrapolated_value": prefactor * np.exp(-ea / (KB * 300.0)),
        "extrapolated_err": 0.0,
    }


# 1. Arrhenius plot -------------------------------------------------------------------------------


def test_arrhenius_bars_are_the_table_errors_and_fit_is_solid_over_the_data(tmp_path: Path) -> None:
    temps = [600.0, 800.0, 1000.0]
    d = [1e-6, 3e-6, 1e-5]
    err = [4e-6, 0.3e-6, 1e-6]  # the 600 K bar is 4 D: its lower end is below zero
    fig, ax = plt.subplots()
    plot_arrhenius_points(temps, d, err, _fit(temps), "LPSC #1", tmp_path / "a.png", ax=ax)
    segments = {round(seg[0][0], 9): seg for seg in ax.containers[0].lines[2][0].get_segments()}
    # upper ends: D + err, as in diffusion.csv (was clipped at 1.95 D)
    for t, dv, e in zip(temps, d, err, strict=True):
        top = max(seg[:, 1].max() for x, seg in segments.items() if abs(x - 1000 / t) < 1e-9)
        assert top == pytest.approx(dv + e, rel=1e-9)
    low_800 = segments[round(1000 / 800, 9)][:, 1].min()
    assert low_800 == pytest.approx(3e-6 - 0.3e-6, rel=1e-9)
    low_600 = segments[round(1000 / 600, 9)][:, 1].min()
    assert 0 < low_600 < 1e-6
    # the point whose lower bound is <= 0 carries an open down-arrow marker at the bar's end
    arrows = [ln for ln in ax.lines if ln.get_marker() == "v"]
    assert len(arrows) == 1 and arrows[0].get_xdata()[0] == pytest.approx(1000 / 600)
    assert arrows[0].get_markerfacecolor() == "none"
    assert "D - err <= 0: bar runs to the axis floor" in ax.get_legend_handles_labels()[1]
    # fit: solid over the data (1000/1000 .. 1000/600), dashed from the lowest T to 300 K
    solid = [ln for ln in ax.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2]
    dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--"]
    assert len(solid) == 1 and len(dashed) == 1
    xs, ys = solid[0].get_xdata(), solid[0].get_ydata()
    assert xs.min() == pytest.approx(1.0) and xs.max() == pytest.approx(1000 / 600)
    assert ys == pytest.approx(1e-3 * np.exp(-0.3 / (KB * 1000 / xs)), rel=1e-9)
    xd = dashed[0].get_xdata()
    assert xd.min() == pytest.approx(1000 / 600) and xd.max() == pytest.approx(1000 / 300)
    plt.close(fig)


# report from a store holding hand-made outputs ---------------------------------------------------


def _store(docs: list[dict[str, Any]]) -> CampaignStore:
    store = CampaignStore(JobStore(MemoryStore(), additional_stores={"data": MemoryStore()}), MemoryStore())
    store.connect()
    store.job_store.docs_store.update(docs, key="uuid")
    return store


def _diffusion_output(t: float, d: float, n_jumps: float) -> dict[str, Any]:
    lags = np.linspace(0, 20, 21)
    return {
        "temperature_K": t,
        "species": "Li",
        "diffusivity_cm2_s": d,
        "diffusivity_err_cm2_s": 4 * d,
        "conductivity_mS_cm": 1.0,
        "conductivity_err_mS_cm": 4.0,
        "haven_ratio": 0.5,
        "n_jumps": n_jumps,
        "total_time_ps": 20.0,
        "rsd": 4.0,
        "fit_window_ps": [2.0, 14.0],
        "lag_times_ps": list(lags),
        "msd_A2": list(6e4 * d * lags),
    }


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lags = list(np.linspace(0, 20, 41))
    acf = [float(np.exp(-t / 540.0)) for t in lags]  # C(t) stays above 1/e: tau is extrapolated
    outputs = {
        "order": {"ewald_energies_ev": [-840.91234, -840.1], "formula": "Li12 P2 S10 Cl2"},
        "relax": {
            "formula_pretty": "Li6PS5Cl",
            "output": {"energy_per_atom": -4.316263198852539},
            "volume": 1110.1887,
            "density": 1.33792,
        },
        "d600": _diffusion_output(600.0, 1e-6, 0.7525),
        "d1000": _diffusion_output(1000.0, 1e-5, 12.0),
        "arrhenius": {"diffusivity": _fit([600.0, 1000.0]), "conductivity_T": _fit([600.0, 1000.0])},
        "rotation": {
            "temperature_K": 600.0,
            "units": {
                "BH4": {
                    "n_units": 8,
                    "rotation_time_ps": 540.0,
                    "rotation_time_err_ps": 30.0,
                    "lag_times_ps": lags,
                    "acf": acf,
                }
            },
        },
    }
    stage_of = {"d600": "diffusion", "d1000": "diffusion"}
    planned, docs = [], []
    for key, out in outputs.items():
        planned.append(PlannedJob(key, f"LPSC {key}", "LPSC", stage_of.get(key, key), key))
        meta = {} if key == "order" else {"ordering": 0}
        docs.append({"uuid": key, "index": 1, "output": out, "metadata": meta})
    target = tmp_path_factory.mktemp("report") / "rep"
    write_report("t", planned, _store(docs), target)
    return target


def _md_rows(summary: str, title: str) -> list[dict[str, str]]:
    """The rows of the markdown table under the section whose title starts with ``title``."""
    block = summary.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def test_summary_ranks_from_one_with_energies_to_4_decimals(report_dir: Path) -> None:
    summary = (report_dir / "summary.md").read_text()
    orderings = _md_rows(summary, "Orderings")
    assert [r["rank"] for r in orderings] == ["1", "2"]  # as `superionic order` numbers them
    assert orderings[0]["ewald_energy_ev"] == "-840.9123"
    relax = _md_rows(summary, "Relaxation")[0]
    assert relax["ordering"] == "1" and relax["energy_per_atom_ev"] == "-4.3163"
    hull_doc = {
        "rows": [
            {
                "label": "LPSC #0",
                "formula": "Li6PS5Cl",
                "energy_per_atom_ev": -4.316263198852539,
                "e_hull_meV_per_atom": 13.7712,
                "formation_energy_ev_per_atom": -0.772312,
                "decomposition": "LiCl + Li3PS4 + Li2S",
            }
        ]
    }
    hull_job = PlannedJob("h", "LPSC hull", "LPSC", "hull", "h")
    hull = _md_rows("## H\n" + _md_table(hull_rows([(hull_job, {"output": hull_doc})])), "H")[0]
    assert hull["structure"] == "LPSC #1"
    assert hull["e_hull_meV_per_atom"] == "13.8" and hull["formation_energy_ev_per_atom"] == "-0.7723"
    diffusion = _md_rows(summary, "Diffusion")
    assert [r["n_jumps"] for r in diffusion] == ["0.8", "12"]
    assert {r["ordering"] for r in diffusion} == {"1"}
    assert _md_rows(summary, "Arrhenius")[0]["ordering"] == "1"
    rows = list(csv.DictReader(open(report_dir / "orderings.csv")))
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert float(rows[0]["ewald_energy_ev"]) == -840.91234  # CSV keeps full precision


# 2. extrapolated rotation times --------------------------------------------------------------------


def test_report_marks_extrapolated_rotation_time(report_dir: Path) -> None:
    row = next(csv.DictReader(open(report_dir / "rotation.csv")))
    assert row["extrapolated"] == "True" and float(row["run_ps"]) == 20.0
    assert float(row["rotation_time_ps"]) == 540.0
    md = _md_rows((report_dir / "summary.md").read_text(), "Polyanion rotation")[0]
    assert md["rotation_time_ps"] == "540 (extrapolated: > 20 ps run)"


def _slow_bh4(tmp_path: Path) -> tuple[Path, Path]:
    """Four BH4 units rotating so slowly (tau ~ 500 ps) that C(t) stays near 1 over 20 ps."""
    rng = np.random.default_rng(0)
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    box, n_frames = 12.0, 250
    centres = np.array([[3, 3, 3], [9, 3, 9], [3, 9, 9], [9, 9, 3]], float)
    pos = np.zeros((n_frames, 20, 3))
    from scipy.spatial.transform import Rotation

    orient = [Rotation.random(random_state=k) for k in range(4)]
    for f in range(n_frames):
        for k in range(4):
            if f:
                orient[k] = Rotation.from_rotvec(rng.normal(0, np.sqrt(2 * 1e-6 * 80), 3)) * orient[k]
            pos[f, 5 * k] = centres[k]
            pos[f, 5 * k + 1 : 5 * k + 5] = centres[k] + 1.21 * orient[k].apply(tetra)
    frac = (pos / box) % 1.0
    ref = Structure(Lattice.cubic(box), ["B", "H", "H", "H", "H"] * 4, frac[0])
    ref.to(filename=str(tmp_path / "POSCAR"), fmt="poscar")
    np.save(tmp_path / "traj.npy", frac)
    return tmp_path / "traj.npy", tmp_path / "POSCAR"


def test_analyze_rotation_prints_extrapolated(tmp_path: Path) -> None:
    traj, poscar = _slow_bh4(tmp_path)
    out = tmp_path / "rot.json"
    args = ["analyze", "rotation", str(traj), "--structure", str(poscar), "--unit", "BH4"]
    result = runner.invoke(app, [*args, "--timestep-fs", "80", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["extrapolated"] is True and doc["rotation_time_ps"] > 100
    run_ps = doc["lag_times_ps"][-1]
    assert run_ps == pytest.approx(249 * 0.08, rel=0.01)
    assert f"extrapolated: > {run_ps:.3g} ps run" in " ".join(result.output.split())


# 3. order into a folder that holds earlier outputs -------------------------------------------------


def _tiny_cif(tmp_path: Path) -> Path:
    """LiCl-like cell with one Li over two sites: at most two orderings."""
    s = Structure(
        Lattice.cubic(5.0), [{"Li": 0.5}, {"Li": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]]
    )
    cif = tmp_path / "tiny.cif"
    s.to(filename=str(cif))
    return cif


def test_order_replaces_its_own_previous_outputs_only(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rank", "file"])
        for k in range(1, 170):
            (out / f"{k}.cif").write_text("old")
            w.writerow([k, f"{k}.cif"])
    (out / "notes.txt").write_text("mine")
    (out / "mine.cif").write_text("mine")
    result = runner.invoke(app, ["order", str(_tiny_cif(tmp_path)), "--n", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    cifs = sorted(p.name for p in out.glob("*.cif"))
    assert sorted([r["file"] for r in rows] + ["mine.cif"]) == cifs
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine.cif").read_text() == "mine"
    text = " ".join(result.output.split())
    assert "removed 169 CIFs of an earlier `superionic order`" in text
    # fewer distinct orderings than asked for is said, not silent
    assert f"only {len(rows)} distinct ordering" in text and "3 requested" in text


def test_order_refuses_unlisted_rank_cifs(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "7.cif").write_text("someone else's")
    result = runner.invoke(app, ["order", str(_tiny_cif(tmp_path)), "--n", "1", "--out", str(out)])
    assert result.exit_code == 2
    assert "--out" in result.output and "7.cif" in result.output
    assert (out / "7.cif").read_text() == "someone else's" and not (out / "summary.csv").exists()


# 8. guessed oxidation states are printed -------------------------------------------------------------


def test_order_prints_assumed_oxidation_states(tmp_path: Path) -> None:
    result = runner.invoke(app, ["order", str(_tiny_cif(tmp_path)), "--n", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "oxidation states assumed (pymatgen's guess; set with --oxidation EL=CHARGE): Li +1, Cl -1" in text
    ox = ["--oxidation", "Li=1", "--oxidation", "Cl=-1"]
    given = runner.invoke(app, ["order", str(_tiny_cif(tmp_path)), "--out", str(tmp_path / "o2"), *ox])
    assert given.exit_code == 0 and "oxidation states assumed" not in given.output


# 4. one rule for lost jobs -----------------------------------------------------------------------


def test_status_store_and_campaign_agree_on_a_killed_job(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: k\nsystems:\n  - name: LPSC\n    prototype: argyrodite\nstages:\n  - stage: order\n"
    )
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    campaign = load_campaign(tmp_path / "c.yaml")
    job = planned_jobs(build_flows(campaign))[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free: the "running" job's process is gone
    store = open_campaign_store(campaign, create=True)
    assert store is not None
    store.connect()
    store.state.update(
        {
            "uuid": job.uuid,
            "campaign": "k",
            "system": "LPSC",
            "stage": "order",
            "state": "running",
            "pid": dead.pid,
            "host": socket.gethostname(),
        },
        key="uuid",
    )
    by_file = runner.invoke(app, ["status", str(tmp_path / "c.yaml")])
    by_store = runner.invoke(app, ["status", "--store", str(tmp_path / ".superionic")])
    assert by_file.exit_code == 0 and by_store.exit_code == 0, by_file.output + by_store.output
    assert "lost" in by_store.output and "running" not in by_store.output.split("state")[-1]
    lost_col = next(ln for ln in by_file.output.splitlines() if "total" in ln)
    assert [c.strip() for c in lost_col.split("│")[1:-1]][2:] == ["0", "0", "0", "0", "1", "0"]


# 5. status in an 80-column terminal --------------------------------------------------------------


def test_status_table_keeps_system_names_at_80_columns() -> None:
    from superionic.report.status import render_status

    table = StatusTable()
    names = ["Li6PS5Cl-halide=Cl", "Li6PS5Cl-halide=Br", "Li6PS5Cl-halide=Cl (quench 1200 K #0)"]
    for name in names:
        for stage in ("order", "relax", "arrhenius"):
            table.counts[(name, stage)]["done"] += 1
            table.counts[(name, stage)]["waiting"] += 2
    buf = io.StringIO()
    console = Console(width=80, file=buf, color_system=None)
    console.print(render_status("sweep: status", table, console.width))
    text = buf.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    for name in names:
        assert name in text
    assert "arrhenius" in text and "waiting" in text and "done" in text
    assert "no jobs: running, failed, blocked, lost" in text
    wide = io.StringIO()
    Console(width=200, file=wide, color_system=None).print(render_status("s", table, 200))
    assert "running" in wide.getvalue().splitlines()[2]  # all six columns when they fit


# 6. report beside the campaign file ----------------------------------------------------------------


def test_report_goes_beside_the_campaign_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    (camp / "c.yaml").write_text(
        "name: beside\nsystems:\n  - name: LPSC\n    prototype: argyrodite\nstages:\n  - stage: order\n"
    )
    (camp / ".superionic").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["report", str(camp / "c.yaml")])
    assert result.exit_code == 0, result.output
    assert (camp / "report" / "beside" / "summary.md").is_file()
    assert not any(elsewhere.iterdir())
    assert f"report: {camp / 'report' / 'beside'}/" in result.output
    result = runner.invoke(app, ["report", str(camp / "c.yaml"), "--out", str(tmp_path / "r")])
    assert (tmp_path / "r" / "summary.md").is_file() and f"report: {tmp_path / 'r'}/" in result.output


def test_run_report_goes_beside_the_campaign_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    _tiny_cif(camp)
    (camp / "c.yaml").write_text("name: ran\nsystems:\n  - structure: tiny.cif\nstages:\n  - stage: order\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["run", str(camp / "c.yaml")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(camp / "report" / "ran" / "orderings.csv")))
    assert [r["rank"] for r in rows] == ["1"]
    assert not any(elsewhere.iterdir())


def test_generated_reports_are_ignored_by_git() -> None:
    root = Path(__file__).resolve().parents[1]
    ignored = (root / ".gitignore").read_text().split()
    assert "/workflows/report/" in ignored and "/report/" in ignored
    if (root / ".git").exists():  # no generated report is tracked (make demo writes one, ignored)
        import subprocess

        tracked = subprocess.run(
            ["git", "ls-files", "workflows/report"], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        assert tracked == ""


# 9. help texts ---------------------------------------------------------------------------------------


def test_top_level_help_has_examples_and_analyze_lists_its_commands() -> None:
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    assert "Examples" in text
    assert "superionic run workflows/demo.yaml" in text and "superionic order argyrodite" in text
    flat = " ".join(text.replace("│", " ").split())
    analyze = flat.split(" analyze ", 1)[1].split("╰", 1)[0]  # the group's summary, over its lines
    for sub in ("diffusion", "arrhenius", "rotation", "nmr", "structure", "density"):
        assert sub in analyze, sub


def test_help_examples_paste_cleanly() -> None:
    text = runner.invoke(app, ["analyze", "diffusion", "--help"], env={"COLUMNS": "120"}).output
    assert "\\\\" not in text
    assert any(line.rstrip().endswith("--step-skip 1 \\") for line in text.splitlines())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "\\\\" not in readme


def test_inputs_help_names_every_engine_that_writes_md() -> None:
    text = " ".join(runner.invoke(app, ["inputs", "--help"], env={"COLUMNS": "120"}).output.split())
    assert "md (vasp, cp2k, mlip)" in text


def test_inputs_writes_cp2k_md(tmp_path: Path) -> None:
    from superionic.engines.cp2k import cp2k_data_dir

    if not (cp2k_data_dir() / "BASIS_MOLOPT").is_file():
        pytest.skip("CP2K data files (BASIS_MOLOPT) not installed")
    licl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.14), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    licl.to(filename=str(tmp_path / "POSCAR"), fmt="poscar")
    args = ["inputs", str(tmp_path / "POSCAR"), "--engine", "cp2k", "--stage", "md"]
    args += ["--out", str(tmp_path / "md")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    words = {tuple(line.split()) for line in (tmp_path / "md" / "cp2k.inp").read_text().splitlines()}
    assert ("RUN_TYPE", "MD") in words and ("ENSEMBLE", "NVT") in words and ("STEPS", "1000") in words
