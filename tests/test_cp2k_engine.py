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


def _lih(path: Path) -> Structure:
    """Primitive rock-salt LiH (2 atoms, 4 electrons): a cheap real CP2K MD cell."""
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.get_primitive_structure().to(filename=str(path))
    return Structure.from_file(str(path))  # the cell as the campaign reads it (CIF orientation)


def _xyz_frames(path: Path) -> tuple[list[str], np.ndarray]:
    """Symbols and Cartesian frames (A) of a CP2K ``-pos-1.xyz`` file."""
    text = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
    lines = text.splitlines()
    n = int(lines[0])
    frames = [
        [[float(x) for x in ln.split()[1:4]] for ln in lines[k + 2 : k + 2 + n]]
        for k in range(0, len(lines), n + 2)
        if lines[k].strip()
    ]
    return [ln.split()[0] for ln in lines[2 : 2 + n]], np.array(frames)


@pytest.mark.cp2k
def test_real_cp2k_md_goes_through_the_md_stage(tmp_path: Path) -> None:
    """Three CP2K NVT steps on LiCl at 600 K with Cl frozen and an unreachable RSD target: the
    run is extended by one more CP2K run (max_chunks 2); Cl does not move in either run
    (FIXED_ATOMS); the trajectories CP2K wrote (-pos-1.xyz) are the ones the diffusion job joined."""
    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: cp2kmd\nengine: cp2k\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: md\n    temperatures_K: [600]\n    production_steps: 3\n    fit_start: 0.0\n"
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
        symbols, frames = _xyz_frames(pos)
        n_frames += len(frames)
        cl, li = frames[:, [i for i, el in enumerate(symbols) if el == "Cl"]], frames[:, symbols.index("Li")]
        assert len(frames) == 4 and cl.shape[1] == 4
        assert np.abs(cl - cl[0]).max() < 1e-8  # frozen
        assert np.abs(li - li[0]).max() > 1e-3  # moving
    row = next(csv.DictReader(open(tmp_path / "report" / "cp2kmd" / "diffusion.csv")))
    assert float(row["temperature_K"]) == 600 and float(row["diffusivity_cm2_s"]) >= 0
    assert int(row["n_chunks"]) == 2
    # the second run's first frame repeats the first run's last one: dropped when joining
    assert float(row["total_time_ps"]) == pytest.approx((n_frames - 2) * 2e-3, rel=1e-6)


def test_cp2k_quench_plan_steps_the_temperature() -> None:
    """quench_segments 2: heat 100 -> 1000 K as runs at 550 and 1000 K, hold at 1000 K, cool as
    runs at 550 and 100 K, each ramp run half the ramp's time; replica 3 sets GLOBAL/SEED 2003."""
    from superionic.engines.cp2k import quench_jobs

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    settings = {"start_temperature_K": 100.0, "heat_ps": 0.008, "hold_ps": 0.004, "quench_ps": 0.008}
    jobs, _ = quench_jobs({**settings, "quench_segments": 2}, 1000.0, s, "x", seed=3)
    plan = []
    for j in jobs:
        motion = j.function.__self__.input_set_generator.user_input_settings["activate_motion"]
        override = j.function.__self__.input_set_generator.user_input_settings["override_default_params"]
        plan.append(
            (motion["temperature"], motion["nsteps"], override["GLOBAL"]["SEED"], j.metadata["segment"])
        )
    assert plan == [
        (550, 2, 2003, "heat"),
        (1000, 2, 2003, "heat"),
        (1000, 2, 2003, "hold"),
        (550, 2, 2003, "cool"),
        (100, 2, 2003, "cool"),
    ]


@pytest.mark.cp2k
def test_real_cp2k_melt_quench_runs_through_the_flow(tmp_path: Path) -> None:
    """A real CP2K quench of primitive LiH (quench_segments 1): heat run at 1000 K, hold, cool run
    at 100 K; each run starts where the previous one ended (the positions CP2K wrote), and the
    local-structure job analyses the last run's final frame."""
    require_executable("cp2k")
    s = _lih(tmp_path / "LiH.cif")
    (tmp_path / "c.yaml").write_text(
        "name: cq\nengine: cp2k\nsystems:\n  - name: LiH\n    structure: LiH.cif\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [1000]\n    heat_ps: 0.002\n    hold_ps: 0.004\n"
        "    quench_ps: 0.002\n    quench_segments: 1\n    center: Li\n    ligands: [H]\n    cutoff_A: 2.5\n"
    )
    exe = Path(sys.executable).parent / "superionic"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    r = subprocess.run(
        [str(exe), "run", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = []
    jobs = tmp_path / ".superionic" / "jobs"
    for inp in [*jobs.glob("*/cp2k.inp.gz"), *jobs.glob("*/cp2k.inp")]:
        text = gzip.open(inp, "rt").read() if inp.suffix == ".gz" else inp.read_text()
        (pos,) = list(inp.parent.glob("*-pos-1.xyz*"))
        symbols, frames = _xyz_frames(pos)
        temp = float(_keyword(text, "TEMPERATURE")[0])
        steps = int(_keyword(text, "STEPS")[0])
        seed = int(_keyword(text, "SEED")[0])
        runs.append((inp.stat().st_mtime, temp, steps, seed, frames))
    runs.sort(key=lambda x: x[0])
    assert [(t, n) for _, t, n, _, _ in runs] == [(1000, 1), (1000, 2), (100, 1)]
    assert {seed for *_, seed, _ in runs} == {2000}
    for prev, nxt in itertools.pairwise(runs):
        assert np.allclose(nxt[4][0], prev[4][-1], atol=1e-4)  # continues from the last positions
    rows = list(csv.DictReader(open(tmp_path / "report" / "cq" / "structure.csv")))
    quenched = next(row for row in rows if row["structure"] == "quench 1000 K #0")
    final = Structure(s.lattice, symbols, runs[-1][4][-1], coords_are_cartesian=True)
    from superionic.analysis.local_structure import coordination

    assert float(quenched["cn_H"]) == pytest.approx(coordination(final, "Li", "H", 2.5)["cn_mean"])
