"""VASP MD frames streamed from XDATCAR and OSZICAR into a binary trajectory (issue 18).

The replayed VASP fixtures carry no XDATCAR, so the files here are written by pymatgen's own
XDATCAR writer (an independent route) from random walks, constant-cell and variable-cell, and
read back a chunk at a time across chunk boundaries.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from pymatgen.core import Lattice
from pymatgen.core.trajectory import Trajectory
from pymatgen.io.vasp.outputs import Oszicar

from superionic.engines.vasp_md import XdatcarFrames, oszicar_free_energies, stream_vasp_frames
from superionic.trajectory_store import REFERENCE_KEY, FileBackend, TrajectoryReader

SPECIES = ["Li", "Li", "P", "S", "S", "S", "S"]


def _walk(n_frames: int, variable_cell: bool, seed: int = 3) -> Trajectory:
    rng = np.random.default_rng(seed)
    frac = np.cumsum(rng.normal(0, 0.01, (n_frames, len(SPECIES), 3)), axis=0) % 1.0
    base = Lattice.from_parameters(7.1, 7.3, 7.6, 90, 95, 90).matrix
    if variable_cell:
        lattices = base[None] * (1 + 0.01 * rng.normal(size=(n_frames, 1, 1)))
        return Trajectory(SPECIES, frac, lattice=lattices, constant_lattice=False)
    return Trajectory(SPECIES, frac, lattice=base, constant_lattice=True)


def _oszicar(path: Path, free: np.ndarray) -> None:
    """OSZICAR of an MD run: one ``T= E= F= E0= EK=`` line per step (VASP's layout)."""
    lines = []
    for k, f in enumerate(free, start=1):
        lines.append("       N       E                     dE             d eps       ncg     rms    rms(c)")
        lines.append(f"RMM:   1    {f:.8E}   -0.1E-05   -0.1E-06   100   0.1E-04")
        lines.append(
            f"{k:6d} T=   301. E= {f + 0.5:.8E} F= {f:.8E} E0= {f + 0.001:.8E}"
            "  EK= 0.5E+00 SP= 0.0E+00 SK= 0.0E+00"
        )
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("variable_cell", [False, True])
def test_xdatcar_frames_stream_into_a_binary_trajectory(tmp_path: Path, variable_cell: bool) -> None:
    nblock, n_frames = 5, 23
    walk = _walk(n_frames, variable_cell)
    walk.write_Xdatcar(str(tmp_path / "XDATCAR"))
    free = -40.0 - 0.001 * np.arange(n_frames * nblock)  # every step, XDATCAR every NBLOCK steps
    _oszicar(tmp_path / "OSZICAR", free)

    frames = XdatcarFrames(tmp_path / "XDATCAR", chunk_frames=4)  # 23 frames: 6 chunks
    assert frames.variable_cell is variable_cell and frames.count() == n_frames
    assert oszicar_free_energies(tmp_path / "OSZICAR") == pytest.approx(
        [step["F"] for step in Oszicar(str(tmp_path / "OSZICAR")).ionic_steps]
    )

    backend = FileBackend(tmp_path / "store")
    ref = stream_vasp_frames(tmp_path, SimpleNamespace(calcs_reversed=[]), backend, nblock, 2.0 * nblock, {})
    assert (ref["n_frames"], ref["time_step_fs"], ref["species"]) == (n_frames, 10.0, SPECIES)
    with _reader(backend, ref) as reader:
        frac, lattices, species = reader.arrays()
        energies = reader.energies()
    assert species == SPECIES
    assert frac == pytest.approx(np.array([f.frac_coords for f in walk]), abs=1e-6)  # float32
    expected_lattices = np.array([f.lattice.matrix for f in walk])
    if variable_cell:
        assert lattices == pytest.approx(expected_lattices, abs=1e-6)
    else:
        assert lattices.shape == (3, 3) and lattices == pytest.approx(expected_lattices[0], abs=1e-6)
    assert energies == pytest.approx(free[nblock - 1 :: nblock])  # steps 5, 10, ...: XDATCAR's


def _reader(backend: FileBackend, ref: dict) -> TrajectoryReader:
    return TrajectoryReader(backend.open(ref[REFERENCE_KEY]))


def test_a_cut_off_run_keeps_its_complete_frames_and_drops_mismatched_energies(tmp_path: Path) -> None:
    walk = _walk(6, False)
    walk.write_Xdatcar(str(tmp_path / "XDATCAR"))
    text = (tmp_path / "XDATCAR").read_text().splitlines()
    (tmp_path / "XDATCAR").write_text("\n".join(text[:-3]) + "\n")  # last frame cut off mid-write
    _oszicar(tmp_path / "OSZICAR", -40.0 - 0.01 * np.arange(4))  # fewer steps than frames
    backend = FileBackend(tmp_path / "store")
    ref = stream_vasp_frames(tmp_path, SimpleNamespace(calcs_reversed=[]), backend, 1, 1.0, {})
    assert ref["n_frames"] == 5
    with _reader(backend, ref) as reader:
        assert reader.energies() is None
        frac, _lat, _species = reader.arrays()
    assert frac == pytest.approx(np.array([f.frac_coords for f in walk])[:5], abs=1e-6)


def test_an_old_vasp_trajectory_is_analysed_with_the_spacing_it_records() -> None:
    """A store made before VASP frames were thinned holds atomate2's Trajectory of every step
    (time_step = POTIM); the analysis, now built with POTIM x NBLOCK, must use what the
    trajectory records. Reference: the same walk with no recorded step, given its true spacing."""
    from superionic.stages.md import analyze_diffusion

    rng = np.random.default_rng(5)
    n = 400
    species = ["Li"] * 8 + ["S"] * 8
    frac = np.cumsum(rng.normal(0, 0.004, (n, len(species), 3)), axis=0)
    frac[:, 8:] = frac[0, 8:]  # S stays put
    lattice = Lattice.cubic(10.0).matrix
    recorded = Trajectory(species, frac, lattice=lattice, constant_lattice=True, time_step=2.0)
    unrecorded = Trajectory(species, frac, lattice=lattice, constant_lattice=True)
    old = analyze_diffusion.original(recorded, 600.0, "Li", frame_interval_fs=20.0)
    truth = analyze_diffusion.original(unrecorded, 600.0, "Li", frame_interval_fs=2.0)
    ten_x = analyze_diffusion.original(unrecorded, 600.0, "Li", frame_interval_fs=20.0)
    assert old["diffusivity_cm2_s"] == pytest.approx(truth["diffusivity_cm2_s"], rel=1e-9)
    assert ten_x["diffusivity_cm2_s"] == pytest.approx(truth["diffusivity_cm2_s"] / 10, rel=1e-6)
