"""CP2K engine: preset inputs from the local CP2K data, and a real CP2K relax through the flow."""

from __future__ import annotations

import csv
import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

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
    """A few CP2K NVT steps on LiCl at 600 K: the trajectory CP2K wrote (the -pos-1.xyz file)
    is the one the diffusion job analysed."""
    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: cp2kmd\nengine: cp2k\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: md\n    temperatures_K: [600]\n    production_steps: 6\n    fit_start: 0.0\n"
        "    fit_end: 1.0\n"
    )
    exe = Path(sys.executable).parent / "superionic"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [str(exe), "run", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (pos,) = list((tmp_path / ".superionic" / "jobs").rglob("*-pos-1.xyz*"))
    text = gzip.open(pos, "rt").read() if pos.suffix == ".gz" else pos.read_text()
    n_frames = text.count("i =")
    assert n_frames >= 6
    row = next(csv.DictReader(open(tmp_path / "report" / "cp2kmd" / "diffusion.csv")))
    assert float(row["temperature_K"]) == 600 and float(row["diffusivity_cm2_s"]) >= 0
    assert float(row["total_time_ps"]) == pytest.approx((n_frames - 1) * 2e-3, rel=0.2)
