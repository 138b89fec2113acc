"""CP2K engine: preset inputs from the local CP2K data, and a real CP2K relax through the flow."""

from __future__ import annotations

import csv
import gzip
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from conftest import require_executable
from superionic.cli import app

runner = CliRunner()
HARTREE_EV = 27.211386245988


def _cp2k_input(tmp_path: Path, prototype: str, preset: str, *extra: str) -> str:
    require_executable("cp2k")  # the data files (/usr/share/cp2k) come with the package
    result = runner.invoke(
        app,
        ["inputs", prototype, *extra, "--engine", "cp2k", "--preset", preset, "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {"cp2k.inp", "BASIS", "POTENTIAL"}
    return (tmp_path / "cp2k.inp").read_text()


def _keyword(text: str, key: str) -> list[str]:
    return re.findall(rf"^\s*{key}\s+(.+?)\s*$", text, flags=re.M)


def test_study_a_cp2k_inputs(tmp_path: Path) -> None:
    inp = _cp2k_input(tmp_path, "argyrodite_bh4", "argyrodite_bh4", "--supercell", "2", "1", "1")
    assert _keyword(inp, "RUN_TYPE") == ["CELL_OPT"]
    assert float(_keyword(inp, "CUTOFF")[0]) == 500.0
    # the VASP preset's k-spacing gives 1x2x2 on the 2x1x1 cell: 4 explicit points, Gamma first
    kpts = _keyword(inp, "KPOINT")
    assert len(kpts) == 4 and kpts[0].split()[:3] == ["0.0", "0.0", "0.0"]
    assert _keyword(inp, "UKS") == ["False"]
    basis = (tmp_path / "BASIS").read_text()
    for el in ("Li", "B", "P", "S", "H"):
        assert re.search(rf"^\s*{el}\s+DZVP-MOLOPT-SR-GTH\b", basis, flags=re.M), el
    kinds = dict(
        re.findall(
            r"ELEMENT (\w+)\s+MAGNETIZATION [^\n]*\n[^\n]*\n[^\n]*BASIS_SET [^\n]*\n\s*POTENTIAL (\S+)", inp
        )
    )
    assert kinds == {
        "Li": "GTH-PBE-q3",
        "B": "GTH-PBE-q3",
        "P": "GTH-PBE-q5",
        "S": "GTH-PBE-q6",
        "H": "GTH-PBE-q1",
    }


def test_study_b_cp2k_inputs(tmp_path: Path) -> None:
    inp = _cp2k_input(tmp_path, "antiperovskite_amide", "antiperovskite_amide", "--param", "x=1")
    assert float(_keyword(inp, "CUTOFF")[0]) == 600.0
    assert float(_keyword(inp, "MAX_FORCE")[0]) == pytest.approx(2.0e-4)
    assert float(_keyword(inp, "EPS_SCF")[0]) == pytest.approx(1e-7)


def test_unknown_basis_element_is_named(tmp_path: Path) -> None:
    require_executable("cp2k")
    from superionic.engines.cp2k import basis_and_potential
    from superionic.errors import SpecError

    with pytest.raises(SpecError) as err:
        basis_and_potential(["Li", "Sm"])
    assert "Sm" in str(err.value) and "DZVP-MOLOPT-SR-GTH" in str(err.value)


@pytest.mark.cp2k
def test_real_cp2k_cell_relax_through_the_campaign_flow(tmp_path: Path) -> None:
    """LiCl (rock salt, 8 atoms) expanded to a = 5.30 A relaxes with CP2K; the reported energy is
    the last total energy CP2K printed, and the lattice contracts toward PBE's ~5.15-5.2 A."""
    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.30), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: cp2k\nengine: cp2k\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: relax\n"
    )
    exe = Path(sys.executable).parent / "superionic"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [str(exe), "run", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = next(csv.DictReader(open(tmp_path / "report" / "cp2k" / "relax.csv")))
    (job_dir,) = list((tmp_path / ".superionic" / "jobs").iterdir())
    out = next(job_dir.glob("cp2k.out*"))
    text = out.read_text() if out.suffix != ".gz" else gzip.open(out, "rt").read()
    printed = [
        float(x) for x in re.findall(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)", text)
    ]
    assert len(printed) > 1  # several optimisation steps
    assert float(row["energy_per_atom_ev"]) == pytest.approx(printed[-1] * HARTREE_EV / 8, abs=1e-6)
    assert printed[-1] < printed[0]
    a = (float(row["volume_A3"])) ** (1 / 3)
    assert 5.05 < a < 5.25


def test_missing_cp2k_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPERIONIC_CP2K_CMD", "cp2k-not-installed.psmp")
    (tmp_path / "c.yaml").write_text(
        "name: c\nengine: cp2k\nsystems:\n  - prototype: argyrodite\n"
        "stages:\n  - stage: order\n  - stage: relax\n"
    )
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "cp2k-not-installed.psmp" in result.output and "apt-get install cp2k" in result.output
    assert not (tmp_path / ".superionic").exists()


@pytest.mark.cp2k
def test_real_cp2k_md_goes_through_the_md_stage(tmp_path: Path) -> None:
    """A few CP2K NVT steps on LiCl at 600 K with Cl frozen and an unreachable RSD target: the
    run is extended by one more CP2K run (max_chunks 2); Cl does not move in either run
    (FIXED_ATOMS); the trajectories CP2K wrote (-pos-1.xyz) are the ones the diffusion job joined."""
    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: cp2kmd\nengine: cp2k\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: md\n    temperatures_K: [600]\n    production_steps: 6\n    fit_start: 0.0\n"
        "    fit_end: 1.0\n    frozen_species: [Cl]\n    target_rsd: 0.05\n    max_chunks: 2\n"
    )
    exe = Path(sys.executable).parent / "superionic"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [str(exe), "run", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "done LiCl #0 md 600 K chunk 2" in result.stdout, result.stdout
    files = sorted((tmp_path / ".superionic" / "jobs").rglob("*-pos-1.xyz*"))
    assert len(files) == 2
    n_frames = 0
    for pos in files:
        text = gzip.open(pos, "rt").read() if pos.suffix == ".gz" else pos.read_text()
        n_frames += text.count("i =")
        lines = text.splitlines()
        frames = [lines[k + 2 : k + 2 + 8] for k in range(0, len(lines) - 9, 10) if lines[k].strip()]
        cl = np.array(
            [[[float(x) for x in ln.split()[1:4]] for ln in f if ln.split()[0] == "Cl"] for f in frames]
        )
        li = np.array(
            [[[float(x) for x in ln.split()[1:4]] for ln in f if ln.split()[0] == "Li"] for f in frames]
        )
        assert cl.shape == (len(frames), 4, 3) and len(frames) >= 6
        assert np.abs(cl - cl[0]).max() < 1e-8  # frozen
        assert np.abs(li - li[0]).max() > 1e-3  # moving
    row = next(csv.DictReader(open(tmp_path / "report" / "cp2kmd" / "diffusion.csv")))
    assert float(row["temperature_K"]) == 600 and float(row["diffusivity_cm2_s"]) >= 0
    assert int(row["n_chunks"]) == 2
    # the second run's first frame repeats the first run's last one: dropped when joining
    assert float(row["total_time_ps"]) == pytest.approx((n_frames - 2) * 2e-3, rel=1e-6)


@pytest.mark.cp2k
def test_real_cp2k_melt_quench_steps_the_temperature(tmp_path: Path) -> None:
    """CP2K quench (quench_segments 2): heat 100 -> 1000 K as runs at 550 and 1000 K, hold at
    1000 K, cool as runs at 550 and 100 K; each run starts where the previous one ended (the
    positions CP2K wrote), and the local-structure job analyses the last run's final frame."""
    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: cq\nengine: cp2k\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [1000]\n    heat_ps: 0.004\n    hold_ps: 0.004\n"
        "    quench_ps: 0.004\n    quench_segments: 2\n    center: Li\n    ligands: [Cl]\n    cutoff_A: 3.2\n"
    )
    exe = Path(sys.executable).parent / "superionic"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    r = subprocess.run(
        [str(exe), "run", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = []
    for inp in (tmp_path / ".superionic" / "jobs").rglob("cp2k.inp*"):
        text = gzip.open(inp, "rt").read() if inp.suffix == ".gz" else inp.read_text()
        (pos,) = list(inp.parent.glob("*-pos-1.xyz*"))
        xyz = gzip.open(pos, "rt").read() if pos.suffix == ".gz" else pos.read_text()
        lines = xyz.splitlines()
        frames = [
            np.array([[float(x) for x in ln.split()[1:4]] for ln in lines[k + 2 : k + 10]])
            for k in range(0, len(lines), 10)
            if lines[k].strip()
        ]
        temp = float(_keyword(text, "TEMPERATURE")[0])
        steps = int(_keyword(text, "STEPS")[0])
        seed = int(_keyword(text, "SEED")[0])
        runs.append((inp.stat().st_mtime, temp, steps, seed, frames))
    runs.sort(key=lambda x: x[0])
    assert [(t, n) for _, t, n, _, _ in runs] == [(550, 1), (1000, 1), (1000, 2), (550, 1), (100, 1)]
    assert {seed for *_, seed, _ in runs} == {2000}
    for prev, nxt in itertools.pairwise(runs):
        assert np.allclose(nxt[4][0], prev[4][-1], atol=1e-4)  # continues from the last positions
    rows = list(csv.DictReader(open(tmp_path / "report" / "cq" / "structure.csv")))
    quenched = next(row for row in rows if row["structure"] == "quench 1000 K #0")
    final = Structure(s.lattice, s.species, runs[-1][4][-1], coords_are_cartesian=True)  # xyz: Li then Cl
    from superionic.analysis.local_structure import coordination

    assert float(quenched["cn_Cl"]) == pytest.approx(coordination(final, "Li", "Cl", 3.2)["cn_mean"])
