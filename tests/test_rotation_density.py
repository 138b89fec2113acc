"""Polyanion rotation and probability density against analytic cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from superionic.analysis.density import probability_density, write_density_chgcar
from superionic.analysis.diffusion import DiffusionInputError
from superionic.analysis.rotation import jump_rotation_correlation, orientation_acf

TETRA = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)


def rotating_bh4(
    n_units: int, n_frames: int, d_rot_per_fs: float, dt_fs: float, seed: int, box: float = 20.0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """BH4 units at fixed centres undergoing isotropic rotational diffusion."""
    rng = np.random.default_rng(seed)
    centres = rng.random((n_units, 3)) * box
    orient = [Rotation.random(random_state=int(rng.integers(1 << 30))) for _ in range(n_units)]
    sigma = np.sqrt(2 * d_rot_per_fs * dt_fs)
    pos = np.zeros((n_frames, n_units * 5, 3))
    for f in range(n_frames):
        for k in range(n_units):
            if f:
                orient[k] = Rotation.from_rotvec(rng.normal(0, sigma, 3)) * orient[k]
            pos[f, 5 * k] = centres[k]
            pos[f, 5 * k + 1 : 5 * k + 5] = centres[k] + 1.21 * orient[k].apply(TETRA)
    species = ["B", "H", "H", "H", "H"] * n_units
    return (pos / box) % 1.0, np.eye(3) * box, species


def test_rotational_diffusion_time_matches_analytic() -> None:
    d_rot = 1.0 / 2000.0  # rad^2/fs -> tau = 1 / (2 D_r) = 1 ps
    frac, lattice, species = rotating_bh4(40, 2500, d_rot, 2.0, seed=0)
    r = orientation_acf(frac, lattice, species, "B", "H", 4, 2.0)
    assert r.n_units == 40 and r.n_bonds == 160
    assert r.acf[0] == pytest.approx(1.0)
    assert r.rotation_time_ps == pytest.approx(1.0, rel=0.10)
    assert 0.005 < r.rotation_time_err_ps < 0.2
    assert abs(r.rotation_time_ps - 1.0) < 3 * r.rotation_time_err_ps
    i = int(np.argmin(np.abs(np.array(r.lag_times_ps) - 0.5)))
    assert r.acf[i] == pytest.approx(np.exp(-r.lag_times_ps[i] / 1.0), abs=0.08)


def test_frozen_units_do_not_decorrelate() -> None:
    frac, lattice, species = rotating_bh4(4, 50, 0.0, 2.0, seed=1)
    r = orientation_acf(frac, lattice, species, "B", "H", 4, 2.0)
    assert np.allclose(r.acf, 1.0)
    assert r.rotation_time_ps == float("inf")


def test_jump_rotation_correlation_counts_jumps() -> None:
    frac, lattice, species = rotating_bh4(6, 200, 1 / 4000, 2.0, seed=2)
    li = np.zeros((200, 1, 3))
    li[:, 0] = frac[0, 0] + np.array([0.1, 0.0, 0.0])
    li[100:, 0, 0] += 0.2  # one 4 A jump at frame 100
    out = jump_rotation_correlation(
        np.concatenate([frac, li], axis=1),
        lattice,
        [*species, "Li"],
        "Li",
        "B",
        "H",
        4,
        window=10,
        neighbour_A=6.0,
    )
    assert out["n_jumps"] == 1
    assert out["mean_angle_all_deg"] > 0


def test_missing_units_are_refused() -> None:
    frac, lattice, species = rotating_bh4(2, 10, 0.0, 2.0, seed=3)
    with pytest.raises(DiffusionInputError, match="no N atoms"):
        orientation_acf(frac, lattice, species, "N", "H", 2, 2.0)


def test_density_sums_to_one_and_peaks_where_ions_sit(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frac = np.tile(np.array([[0.275, 0.275, 0.275], [0.75, 0.5, 0.5]]), (100, 1, 1))
    frac[:, 0] += rng.normal(0, 0.01, (100, 3))
    dens = probability_density(frac, ["Li", "S"], "Li", grid=(20, 20, 20))
    assert dens.sum() == pytest.approx(1.0)
    assert np.unravel_index(dens.argmax(), dens.shape) == (5, 5, 5)  # voxel [0.25, 0.30)
    s = Structure(Lattice.cubic(10.0), ["Li", "S"], frac[0])
    path = write_density_chgcar(dens, s, tmp_path / "CHGCAR_Li")
    from pymatgen.io.vasp import Chgcar

    back = Chgcar.from_file(str(path))
    assert back.data["total"].mean() == pytest.approx(1.0, rel=1e-4)


def test_rotation_on_real_aimd_is_flagged_as_extrapolated() -> None:
    """Real Na3PS4 AIMD: PS4 only librates in 20 ps, so tau is an extrapolation and says so."""
    from conftest import require_fixtures

    folder = require_fixtures("md/Na3PS4_800K")
    ref = Structure.from_file(folder / "cNa3PS4.cif")
    frac = np.load(folder / "cNa3PS4_trajectories.npy")
    r = orientation_acf(frac, ref.lattice.matrix, [s.specie.symbol for s in ref], "P", "S", 4, 100.0)
    assert r.n_units == 16 and r.n_bonds == 64
    assert r.extrapolated and r.rotation_time_ps > 20.0
    assert min(r.acf) > 0.8  # librations: the S stay near their tetrahedral directions
