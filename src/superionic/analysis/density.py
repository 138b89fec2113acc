"""Probability density of mobile ions on a grid, written as a CHGCAR-like file for VESTA."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from superionic.analysis.diffusion import DiffusionInputError


def probability_density(
    frac: np.ndarray,
    species: list[str],
    mobile: str,
    grid: tuple[int, int, int] | None = None,
    lattice: np.ndarray | None = None,
    spacing_A: float = 0.2,
) -> np.ndarray:
    """Histogram the positions of ``mobile`` atoms over all frames on a periodic grid.

    Parameters
    ----------
    frac : ndarray, shape (n_frames, n_atoms, 3)
        Fractional coordinates.
    species : list of str
        Element per atom.
    mobile : str
        Element to histogram.
    grid : tuple of int, optional
        Grid points along a, b, c; default from ``lattice`` and ``spacing_A``.
    lattice : ndarray, optional
        Lattice (rows), needed when ``grid`` is not given.
    spacing_A : float
        Target grid spacing in A.

    Returns
    -------
    ndarray
        Probability per voxel (sums to 1).
    """
    sel = np.asarray(species) == mobile
    if not sel.any():
        raise DiffusionInputError(f"species {mobile!r} is not in the trajectory")
    if grid is None:
        if lattice is None:
            raise DiffusionInputError("give either grid or lattice")
        grid = tuple(max(8, int(np.ceil(np.linalg.norm(v) / spacing_A))) for v in np.asarray(lattice))
    pts = (np.asarray(frac)[:, sel, :] % 1.0).reshape(-1, 3)
    hist, _ = np.histogramdd(pts, bins=grid, range=[(0, 1)] * 3)
    return hist / hist.sum()


def write_density_chgcar(density: np.ndarray, structure: object, path: str | Path) -> Path:
    """Write a voxel probability as a CHGCAR-like file.

    VASP stores rho * V_cell per grid point, so that the grid average is the total charge; a voxel
    probability P maps to P * N_grid (grid average 1: one ion's worth of density).
    """
    from pymatgen.io.vasp import Chgcar, Poscar

    data = density / density.sum() * density.size
    Chgcar(Poscar(structure), {"total": data}).write_file(str(path))
    return Path(path)
