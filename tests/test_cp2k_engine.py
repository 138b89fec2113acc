"""CP2K engine: preset inputs from the local CP2K data, and a real CP2K relax through the flow."""

from __future__ import annotations

import csv
import gzip
import itertools
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from conftest import RunCampaign, require_executable
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
def test_real_cp2k_cell_relax_through_the_campaign_flow(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """LiCl (rock salt, 8 atoms) expanded to a = 5.30 A relaxes with CP2K; the reported energy is
    the last total energy CP2K printed, and the lattice contracts toward PBE's ~5.15-5.2 A."""
    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.30), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: cp2k\nengine: cp2k\npreset: cp2k_smoke\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: relax\n"
    )
    result = run_campaign("c.yaml")
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
def test_real_cp2k_md_goes_through_the_md_stage(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """Three CP2K NVT steps on LiCl at 600 K with Cl frozen and an unreachable RSD target: the
    run is extended by one more CP2K run (max_chunks 2); Cl does not move in either run
    (FIXED_ATOMS); the trajectories CP2K wrote (-pos-1.xyz) are the ones the diffusion job joined."""
    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: cp2kmd\nengine: cp2k\npreset: cp2k_smoke\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: md\n    temperatures_K: [600]\n    production_steps: 3\n    fit_start: 0.0\n"
        "    fit_end: 1.0\n    frozen_species: [Cl]\n    target_rsd: 0.05\n    max_chunks: 2\n"
    )
    result = run_campaign("c.yaml")
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
def test_real_cp2k_melt_quench_runs_through_the_flow(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """A real CP2K quench of primitive LiH (quench_segments 1): heat run at 1000 K, hold, cool run
    at 100 K; each run starts where the previous one ended (the positions CP2K wrote), and the
    local-structure job analyses the last run's final frame."""
    require_executable("cp2k")
    s = _lih(tmp_path / "LiH.cif")
    (tmp_path / "c.yaml").write_text(
        "name: cq\nengine: cp2k\npreset: cp2k_smoke\nsystems:\n  - name: LiH\n    structure: LiH.cif\n"
        "stages:\n"
        "  - stage: quench\n    melt_temperatures_K: [1000]\n    heat_ps: 0.002\n    hold_ps: 0.004\n"
        "    quench_ps: 0.002\n    quench_segments: 1\n    center: Li\n    ligands: [H]\n    cutoff_A: 2.5\n"
    )
    r = run_campaign("c.yaml")
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


def _md_input(tmp_path: Path, settings: dict, structure: Structure | None = None) -> tuple[str, list]:
    """Write the CP2K input of the production job ``md_jobs`` builds (600 K) and return it with the jobs."""
    require_executable("cp2k")  # the basis/potential data (/usr/share/cp2k) come with the package
    from superionic.engines.cp2k import md_jobs

    s = structure or Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    jobs, _, _ = md_jobs({"production_steps": 3, **settings}, 600.0, s, "x")
    prod = [j for j in jobs if hasattr(j.function, "__self__")][-1]  # the production MD run
    gen = prod.function.__self__.input_set_generator
    gen.get_input_set(s).write_input(str(tmp_path), overwrite=True)
    return (tmp_path / "cp2k.inp").read_text(), jobs


def _section(text: str, name: str) -> str:
    """Body of the (first) ``&name ... &END name`` section of a CP2K input."""
    match = re.search(rf"^\s*&{name}\b.*?$(.*?)^\s*&END {name}\b", text, flags=re.M | re.S)
    assert match, f"no &{name} section"
    return match.group(1)


def test_cp2k_npt_input_has_barostat_and_stress(tmp_path: Path) -> None:
    """ensemble npt: NPT_F with Nose-Hoover particles, BAROSTAT PRESSURE 2.5 kbar = 2500 bar with
    its unit written, CP2K's default TIMECON 1000 fs written out, and the analytical stress."""
    inp, _ = _md_input(tmp_path, {"ensemble": "npt", "pressure_kbar": 2.5})
    md = _section(inp, "MD")
    assert _keyword(md, "ENSEMBLE") == ["NPT_F"]
    assert _keyword(_section(md, "THERMOSTAT"), "TYPE") == ["NOSE"]
    baro = _section(md, "BAROSTAT")
    assert _keyword(baro, "PRESSURE") == ["[bar] 2500.0"]
    assert _keyword(baro, "TIMECON") == ["[fs] 1000.0"]
    assert "LANGEVIN" not in md
    # a FORCE_EVAL keyword (pymatgen writes it by default; superionic sets it so NpT keeps it)
    assert re.search(r"^&FORCE_EVAL\n(?:\t[^\t&][^\n]*\n)*\tSTRESS_TENSOR ANALYTICAL$", inp, flags=re.M)


def test_cp2k_npt_isotropic_and_timecon_settings(tmp_path: Path) -> None:
    inp, _ = _md_input(
        tmp_path,
        {"ensemble": "npt", "npt_cell": "isotropic", "barostat_timecon_fs": 250, "pressure_kbar": -1},
    )
    md = _section(inp, "MD")
    assert _keyword(md, "ENSEMBLE") == ["NPT_I"]
    assert _keyword(_section(md, "BAROSTAT"), "TIMECON") == ["[fs] 250.0"]
    assert _keyword(_section(md, "BAROSTAT"), "PRESSURE") == ["[bar] -1000.0"]


def test_cp2k_barostat_timecon_from_lattice_mass(tmp_path: Path) -> None:
    """lattice_mass_amu alone: TIMECON tau with CP2K's NPT_F barostat mass (N_f + 3) k T tau^2 / 3
    equal to W V^(2/3) (same cell kinetic energy per strain rate), computed here in SI units."""
    from scipy import constants as c

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    inp, _ = _md_input(tmp_path, {"ensemble": "npt", "lattice_mass_amu": 1000.0}, s)
    w_si = 1000.0 * c.atomic_mass * (s.volume * 1e-30) ** (2 / 3)  # kg m^2
    n_free = 3 * len(s) - 3
    tau_fs = np.sqrt(3 * w_si / ((n_free + 3) * c.k * 600.0)) * 1e15
    timecon = _keyword(_section(_section(inp, "MD"), "BAROSTAT"), "TIMECON")[0]
    assert timecon.startswith("[fs] ")
    assert float(timecon.split()[1]) == pytest.approx(tau_fs, abs=1e-3)
    assert 2000 < tau_fs < 3000  # 8 atoms, 135 A^3, 600 K


def test_cp2k_langevin_sets_gamma(tmp_path: Path) -> None:
    """Langevin: GAMMA = friction_per_ps / 1000 in 1/fs (default 10/ps as for VASP)."""
    inp, _ = _md_input(tmp_path, {"thermostat": "langevin"})
    md = _section(inp, "MD")
    assert _keyword(md, "ENSEMBLE") == ["LANGEVIN"]
    assert _keyword(_section(md, "LANGEVIN"), "GAMMA") == ["[fs^-1] 0.01"]
    assert "BAROSTAT" not in md
    inp, _ = _md_input(tmp_path, {"thermostat": "langevin", "friction_per_ps": 2.5})
    assert _keyword(_section(_section(inp, "MD"), "LANGEVIN"), "GAMMA") == ["[fs^-1] 0.0025"]


def test_cp2k_nvt_input_unchanged(tmp_path: Path) -> None:
    inp, _ = _md_input(tmp_path, {})
    md = _section(inp, "MD")
    assert _keyword(md, "ENSEMBLE") == ["NVT"]
    assert "BAROSTAT" not in md and "LANGEVIN" not in md


def test_cp2k_md_jobs_tag_segment() -> None:
    """CP2K MD jobs carry the same ``segment`` metadata as the other engines (ramp, production,
    production_<part> for an extension)."""
    from superionic.engines.cp2k import extension_jobs, md_jobs

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    jobs, _, last = md_jobs({"production_steps": 4, "ramp_steps": 4, "ramp_segments": 2}, 600.0, s, "x")
    runs = [j for j in jobs if "segment" in j.metadata]
    assert [j.metadata["segment"] for j in runs] == ["ramp", "ramp", "production"]
    ext, _, _ = extension_jobs({"production_steps": 4}, 600.0, last, "x", 3)
    assert ext[0].metadata["segment"] == "production_3"
    assert not any("md_segment" in j.metadata for j in [*jobs, *ext])


@pytest.mark.parametrize(
    ("stage", "field", "words"),
    [
        ("    ensemble: npt\n    thermostat: langevin\n", "stages[1].thermostat", "no barostat"),
        ("    thermostat: berendsen\n", "stages[1].thermostat", "no such thermostat"),
    ],
)
def test_cp2k_md_settings_it_cannot_run_are_refused(
    tmp_path: Path, stage: str, field: str, words: str
) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: c\nengine: cp2k\nsystems:\n  - prototype: argyrodite\n"
        "stages:\n  - stage: order\n  - stage: md\n    temperatures_K: [600]\n" + stage
    )
    result = runner.invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2, result.output
    (line,) = [ln for ln in result.output.splitlines() if field in ln]
    assert words in line and "c.yaml:" in line and "nose-hoover" in line


def test_cp2k_md_preset_values_are_checked() -> None:
    from superionic.engines.cp2k import md_settings_problems

    problems = md_settings_problems({"npt_cell": "cubic", "barostat_timecon_fs": 0, "pressure_kbar": "high"})
    assert {(p.where, p.value) for p in problems} == {
        ("npt_cell", "cubic"),
        ("barostat_timecon_fs", 0),
        ("pressure_kbar", "high"),
    }
    assert md_settings_problems({"ensemble": "npt", "pressure_kbar": -1.5, "lattice_mass_amu": 500}) == []


def _write_cp2k_md(folder: Path, symbols: list[str], frames: np.ndarray, cells: np.ndarray | None) -> None:
    """Write ``frames`` (Cartesian, A) as CP2K's -pos-1.xyz and ``cells`` as its -1.cell (gzipped)."""
    n = len(symbols)
    xyz = []
    for k, frame in enumerate(frames):
        xyz += [f"{n:8d}", f" i = {k:8d}, time = {k * 2.0:12.3f}, E = -1.0"]
        xyz += [
            f" {el:2s} {x:20.10f} {y:20.10f} {z:20.10f}" for el, (x, y, z) in zip(symbols, frame, strict=True)
        ]
    (folder / "CP2K-pos-1.xyz").write_text("\n".join(xyz) + "\n")
    if cells is not None:
        rows = ["#   Step   Time [fs]       Ax [Angstrom] ...  Volume [Angstrom^3]"]
        rows += [
            f"{k:8d} {k * 2.0:12.3f} "
            + " ".join(f"{v:18.10f}" for v in cell.ravel())
            + f" {np.linalg.det(cell):18.10f}"
            for k, cell in enumerate(cells)
        ]
        with gzip.open(folder / "CP2K-1.cell.gz", "wt") as fh:
            fh.write("\n".join(rows) + "\n")


def test_cp2k_trajectory_reads_the_npt_cell(tmp_path: Path) -> None:
    """An NpT run's cell changes every step: each frame gets its own cell from -1.cell, so the
    fractional coordinates are the ones the positions were built from and the conductivity uses
    the mean of the real volumes."""
    from superionic.engines.cp2k import cp2k_trajectory
    from superionic.stages.md import analyze_diffusion

    rng = np.random.default_rng(0)
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    symbols = [sp.symbol for sp in s.species]
    n_frames = 6
    frac = s.frac_coords[None] + rng.normal(0, 0.01, (n_frames, len(s), 3))
    cells = np.array(
        [s.lattice.matrix * (1 + 0.01 * k) + np.triu(rng.normal(0, 0.02, (3, 3)), 1) for k in range(n_frames)]
    )
    _write_cp2k_md(tmp_path, symbols, np.einsum("fai,fij->faj", frac, cells), cells)
    traj = cp2k_trajectory.original(str(tmp_path), s, 2.0)
    assert not traj.constant_lattice
    assert np.allclose(np.asarray(traj.lattice), cells, atol=1e-9)
    assert np.allclose(traj.coords, frac, atol=1e-8)
    result = analyze_diffusion.original(traj, 600.0, "Li", 2.0, fit_start=0.0, fit_end=1.0)
    assert result["volume_A3"] == pytest.approx(np.mean(np.abs(np.linalg.det(cells))), rel=1e-9)
    # the input cell is not used when CP2K wrote one
    assert result["volume_A3"] != pytest.approx(s.volume, rel=1e-3)


def test_cp2k_trajectory_streams_into_a_binary_trajectory_in_a_campaign(tmp_path: Path) -> None:
    """In a job with a store, the CP2K frames go a chunk at a time (here 4 frames, so chunks
    split an NpT run of 10) into a binary trajectory whose frames and cells are the ones the
    pymatgen route reads."""
    from jobflow import CURRENT_JOB, JobStore
    from maggma.stores import MemoryStore

    from superionic.engines.cp2k import Cp2kFrames, cp2k_trajectory
    from superionic.trajectory_store import open_trajectory

    rng = np.random.default_rng(1)
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    n_frames = 10
    frac = s.frac_coords[None] + rng.normal(0, 0.01, (n_frames, len(s), 3))
    cells = np.array([s.lattice.matrix * (1 + 0.005 * k) for k in range(n_frames)])
    _write_cp2k_md(tmp_path, [sp.symbol for sp in s.species], np.einsum("fai,fij->faj", frac, cells), cells)
    chunks = list(Cp2kFrames(str(tmp_path), s, chunk_frames=4).chunks())
    assert [len(f) for f, _ in chunks] == [4, 4, 2]
    reference = cp2k_trajectory.original(str(tmp_path), s, 2.0)  # no store: a pymatgen Trajectory
    from superionic.dispatch.stores import BlobDirStore

    store = JobStore(MemoryStore(), additional_stores={"data": BlobDirStore(tmp_path / "blobs")})
    CURRENT_JOB.store = store
    try:
        ref = cp2k_trajectory.original(str(tmp_path), s, 2.0)
    finally:
        CURRENT_JOB.reset()
    assert ref["n_frames"] == n_frames and ref["species"] == [sp.symbol for sp in s.species]
    with open_trajectory(ref, store) as reader:
        got_frac, got_cells, _ = reader.arrays()
    assert np.allclose(got_cells, cells, atol=1e-12)  # cells kept in float64
    assert np.allclose(got_frac, reference.coords, atol=1e-6)  # positions in float32


def test_cp2k_trajectory_nvt_cell_is_constant(tmp_path: Path) -> None:
    from superionic.engines.cp2k import cp2k_trajectory

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    frames = np.repeat(s.cart_coords[None], 3, axis=0) + 0.01
    cells = np.repeat(s.lattice.matrix[None], 3, axis=0)
    for with_cell in (True, False):
        folder = tmp_path / str(with_cell)
        folder.mkdir()
        _write_cp2k_md(folder, [sp.symbol for sp in s.species], frames, cells if with_cell else None)
        traj = cp2k_trajectory.original(str(folder), s, 2.0)
        assert traj.constant_lattice and np.allclose(traj.lattice, s.lattice.matrix)
        assert np.allclose(traj.coords, s.lattice.get_fractional_coords(frames), atol=1e-9)


@pytest.mark.cp2k
def test_real_cp2k_npt_run_moves_the_cell(tmp_path: Path) -> None:
    """Two real CP2K NPT_F steps of primitive LiH (2 atoms; 200 Ry and EPS_DEFAULT 1e-8 keep it to
    about 40 s on one core): CP2K reads the pressure and time constant as written (2.5 kbar =
    2500 bar, 500 fs), the run ends normally, the cell moves, and the trajectory job gives each
    frame the cell and volume CP2K printed in -1.cell."""
    require_executable("cp2k")
    from superionic.engines.cp2k import cp2k_command, cp2k_trajectory, md_jobs

    s = _lih(tmp_path / "LiH.cif")
    quick = {"FORCE_EVAL": {"DFT": {"QS": {"EPS_DEFAULT": 1e-8, "EPS_PGF_ORB": 1e-8}}}}
    settings = {
        "ensemble": "npt",
        "pressure_kbar": 2.5,
        "barostat_timecon_fs": 500,
        "timestep_fs": 0.5,
        "production_steps": 2,
        "cutoff_Ry": 200,
        "rel_cutoff_Ry": 30,
        "eps_scf": 1e-5,
        "override": quick,
    }
    jobs, _, _ = md_jobs(settings, 300.0, s, "x")
    prod = [j for j in jobs if hasattr(j.function, "__self__")][-1]
    run = tmp_path / "run"
    prod.function.__self__.input_set_generator.get_input_set(s).write_input(str(run), overwrite=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*cp2k_command().split(), "-i", "cp2k.inp", "-o", "cp2k.out"]
    result = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=900)
    out = (run / "cp2k.out").read_text()
    assert result.returncode == 0 and "PROGRAM ENDED AT" in out, out[-3000:]
    assert re.search(r"MD_PAR\| Ensemble type\s+NPT_F$", out, flags=re.M)
    assert float(re.search(r"MD_PAR\| Pressure \[bar\]\s+(\S+)", out).group(1)) == 2500.0
    assert float(re.search(r"MD_PAR\| Barostat time constant \[fs\]\s+(\S+)", out).group(1)) == 500.0
    (cell_file,) = list(run.glob("*-1.cell"))
    rows = np.loadtxt(cell_file)
    assert rows.shape == (3, 12) and list(rows[:, 0]) == [0, 1, 2]
    assert abs(rows[-1, 11] - rows[0, 11]) > 1e-3  # the volume moved
    traj = cp2k_trajectory.original(str(run), s, 0.5)
    lattices = np.asarray(traj.lattice)
    assert not traj.constant_lattice and lattices.shape == (3, 3, 3)
    assert np.allclose(np.abs(np.linalg.det(lattices)), rows[:, 11], rtol=1e-8)


def test_cp2k_quench_stays_nvt_under_an_npt_md_preset() -> None:
    """The quench inherits the preset's md settings but is NVT Nose-Hoover: a preset md
    ``ensemble: npt`` (meant for the md stage) gives it no barostat."""
    from superionic.engines.cp2k import quench_jobs

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    settings = {"heat_ps": 0.004, "hold_ps": 0.004, "quench_ps": 0.004, "quench_segments": 1}
    jobs, _ = quench_jobs({**settings, "ensemble": "npt", "pressure_kbar": 1.0}, 1000.0, s, "x")
    for j in jobs:
        gen = j.function.__self__.input_set_generator
        assert gen.user_input_settings["activate_motion"]["ensemble"] == "NVT" and gen.barostat is None
