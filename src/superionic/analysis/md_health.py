"""Health of an MD run: potential-energy drift and broken polyanion bonds.

A transport number from a run whose potential energy keeps drifting (the cell still
equilibrating, or decomposing) or whose PS4/BH4/NH2 units came apart at high temperature is not a
diffusivity of the material the paper studied. These checks are what a reader looks at before
trusting an Arrhenius point; pymatgen and atomate2 compute neither.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: centre-ligand bonds checked, with the distance (A) beyond which a bond counts as broken
#: (equilibrium P-S 2.05, B-H 1.21, N-H 1.02, Ta-Cl 2.4, Zr-Cl 2.5 A; cutoffs about 1.25x that)
BOND_CUTOFFS_A: dict[tuple[str, str], float] = {
    ("P", "S"): 2.6,
    ("B", "H"): 1.5,
    ("N", "H"): 1.3,
}

#: ligands of an intact unit (PS4, BH4, NH2): a centre with fewer is broken, even in frame 0
#: (a bond broken during the heating ramp, before the production frames, still counts)
NOMINAL_LIGANDS: dict[tuple[str, str], int] = {("P", "S"): 4, ("B", "H"): 4, ("N", "H"): 2}


def _neighbour_counts(
    frac: np.ndarray, lattice: np.ndarray, centres: np.ndarray, ligands: np.ndarray, cutoff: float
) -> np.ndarray:
    """Ligands within ``cutoff`` of each centre (minimum image), for one frame."""
    d = frac[ligands][None, :, :] - frac[centres][:, None, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ lattice, axis=-1)
    return (dist < cutoff).sum(axis=1)


def md_health(
    frac: np.ndarray,
    lattice: np.ndarray,
    symbols: list[str],
    frame_interval_fs: float,
    energies_eV: np.ndarray | None = None,
    n_checked_frames: int = 20,
) -> dict[str, Any]:
    """Energy drift and broken polyanion bonds of one analysed MD run.

    Parameters
    ----------
    frac : ndarray, shape (n_frames, n_atoms, 3)
        Fractional coordinates of the analysed frames (after the ramp).
    lattice : ndarray, shape (3, 3) or (n_frames, 3, 3)
        Lattice vectors (A), constant or per frame.
    symbols : list of str
        Element of each atom.
    frame_interval_fs : float
        Time between frames.
    energies_eV : ndarray, optional
        Potential energy of the cell per frame (eV); no drift is reported without it.
    n_checked_frames : int
        Frames, evenly spaced, in which the bonds are counted.

    Returns
    -------
    dict
        ``energy_drift_meV_atom_ps`` (slope of a straight line through the potential energy per
        atom; ``None`` without energies), ``broken_bonds`` per bond kind (``"P-S"``: the largest
        fraction of centres, over the checked frames, with fewer ligands within the cutoff than an
        intact unit has, :data:`NOMINAL_LIGANDS`, or than in the first frame for other pairs) and
        ``bond_cutoffs_A``.
    """
    symbols_arr = np.array(symbols)
    n_frames = len(frac)
    out: dict[str, Any] = {"energy_drift_meV_atom_ps": None, "broken_bonds": {}, "bond_cutoffs_A": {}}
    if energies_eV is not None and len(energies_eV) >= 3 and np.all(np.isfinite(energies_eV)):
        t_ps = np.arange(len(energies_eV)) * frame_interval_fs / 1000.0
        slope = np.polyfit(t_ps, np.asarray(energies_eV, float) / len(symbols), 1)[0]
        out["energy_drift_meV_atom_ps"] = float(slope * 1000.0)
    frames = np.unique(np.linspace(0, n_frames - 1, min(n_checked_frames, n_frames)).astype(int))
    for (centre, ligand), cutoff in BOND_CUTOFFS_A.items():
        centres = np.flatnonzero(symbols_arr == centre)
        ligands = np.flatnonzero(symbols_arr == ligand)
        if len(centres) == 0 or len(ligands) == 0:
            continue
        lat0 = lattice if lattice.ndim == 2 else lattice[0]
        first = _neighbour_counts(frac[0], lat0, centres, ligands, cutoff)
        if (centre, ligand) in NOMINAL_LIGANDS:
            first = np.full_like(first, NOMINAL_LIGANDS[(centre, ligand)])
        worst = 0.0
        for f in frames:
            lat = lattice if lattice.ndim == 2 else lattice[f]
            counts = _neighbour_counts(frac[f], lat, centres, ligands, cutoff)
            worst = max(worst, float(np.mean(counts < first)))
        out["broken_bonds"][f"{centre}-{ligand}"] = worst
        out["bond_cutoffs_A"][f"{centre}-{ligand}"] = cutoff
    return out


def trajectory_energies(trajectory: Any) -> np.ndarray | None:
    """Potential energy per frame of a pymatgen Trajectory (or its dict), if it carries them."""
    props = getattr(trajectory, "frame_properties", None)
    if props is None and isinstance(trajectory, dict):
        props = trajectory.get("frame_properties")
    if not props:
        return None
    values = [p.get("energy") if isinstance(p, dict) else None for p in props]
    if any(v is None for v in values):
        return None
    return np.array(values, dtype=float)
