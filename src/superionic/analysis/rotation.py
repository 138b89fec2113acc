"""Polyanion reorientation: orientation autocorrelation, rotation times, jump-rotation coupling.

A unit (BH4, NH2, PS4, TaCl6, ...) is a centre atom with its ligands, found in the first frame
as the ``n_ligands`` nearest atoms of the ligand species. Each centre-ligand bond gives a unit
vector u(t) (minimum image per frame). The first-order orientation autocorrelation
C(t) = < u(t+t0) . u(t0) >, averaged over bonds and all time origins (by FFT), decays from 1 to
~0 for a freely rotating unit; for isotropic rotational diffusion C(t) = exp(-t / tau). The
rotation time tau is fitted on the early, well-sampled part of the curve, C > exp(-1) (stated in
the result); a curve that never decays gives tau = inf.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from superionic.analysis.diffusion import DiffusionInputError

# Polyanions by name: centre element, ligand element, number of ligands.
UNITS: dict[str, tuple[str, str, int]] = {
    "BH4": ("B", "H", 4),
    "NH2": ("N", "H", 2),
    "PS4": ("P", "S", 4),
    "TaCl6": ("Ta", "Cl", 6),
    "ZrCl6": ("Zr", "Cl", 6),
    "AlH4": ("Al", "H", 4),
}


@dataclass
class RotationResult:
    """Orientation autocorrelation of one polyanion species."""

    centre: str
    ligand: str
    n_units: int
    n_bonds: int
    time_step_fs: float
    lag_times_ps: list[float] = field(default_factory=list)
    acf: list[float] = field(default_factory=list)
    rotation_time_ps: float = float("nan")
    rotation_time_err_ps: float = float("nan")
    fit: str = "C(t) = exp(-t/tau), least squares of ln C through the origin where C > exp(-1)"
    error_method: str = "standard error of tau over 4 groups of units"
    extrapolated: bool = False  # tau longer than the run: C(t) never fell below exp(-1)

    def as_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def _min_image(dfrac: np.ndarray) -> np.ndarray:
    return dfrac - np.round(dfrac)


def find_units(
    frac0: np.ndarray, lattice: np.ndarray, species: list[str], centre: str, ligand: str, n_ligands: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (centre indices, ligand indices of shape (n_units, n_ligands)) from one frame."""
    sym = np.asarray(species)
    centres = np.where(sym == centre)[0]
    ligands = np.where(sym == ligand)[0]
    if len(centres) == 0:
        raise DiffusionInputError(f"no {centre} atoms: cannot follow {centre}{ligand}{n_ligands} units")
    if len(ligands) < n_ligands:
        raise DiffusionInputError(f"fewer than {n_ligands} {ligand} atoms in the trajectory")
    d = _min_image(frac0[ligands][None, :, :] - frac0[centres][:, None, :]) @ lattice
    dist = np.linalg.norm(d, axis=-1)
    nearest = np.argsort(dist, axis=1)[:, :n_ligands]
    return centres, ligands[nearest]


def bond_vectors(
    frac: np.ndarray, lattices: np.ndarray, centres: np.ndarray, bonds: np.ndarray
) -> np.ndarray:
    """Return unit centre->ligand vectors per frame, shape (n_frames, n_units * n_ligands, 3)."""
    dfrac = _min_image(frac[:, bonds, :] - frac[:, centres, None, :])
    lat = np.asarray(lattices, dtype=float)
    cart = dfrac @ lat if lat.ndim == 2 else np.einsum("fuli,fij->fulj", dfrac, lat)
    cart = cart.reshape(frac.shape[0], -1, 3)
    return cart / np.linalg.norm(cart, axis=-1, keepdims=True)


def autocorrelation(u: np.ndarray) -> np.ndarray:
    """< u(t+t0) . u(t0) > over vectors and all origins, for every lag (FFT), shape (n_frames,)."""
    n = u.shape[0]
    f = np.fft.rfft(u, n=2 * n, axis=0)
    acf = np.fft.irfft((f * f.conj()).real, n=2 * n, axis=0)[:n].sum(axis=-1)  # (n, vectors)
    acf = acf / (n - np.arange(n))[:, None]
    return acf.mean(axis=1)


def fit_rotation_time(lag_ps: np.ndarray, acf: np.ndarray) -> tuple[float, float]:
    """Fit C = exp(-t/tau) on the C > exp(-1) part of the curve; return (tau_ps, err_ps)."""
    mask = (acf > np.exp(-1)) & (lag_ps > 0)
    last = np.argmin(mask[1:]) + 1 if not mask[1:].all() else len(mask)
    t, c = lag_ps[1:last], acf[1:last]
    if len(t) < 3:
        return float("nan"), float("nan")
    # ln C = -t / tau  (through the origin)
    y = np.log(c)
    slope = float((t @ y) / (t @ t))
    if slope > -1e-9:  # no measurable decay
        return float("inf"), float("nan")
    resid = y - slope * t
    s_err = float(np.sqrt((resid @ resid) / max(len(t) - 1, 1) / (t @ t)))
    tau = -1.0 / slope
    return tau, tau * s_err / abs(slope)


def orientation_acf(
    frac: np.ndarray,
    lattices: np.ndarray,
    species: list[str],
    centre: str,
    ligand: str,
    n_ligands: int,
    time_step_fs: float,
    max_curve_points: int = 400,
) -> RotationResult:
    """Orientation autocorrelation and rotation time of the ``centre``-``ligand`` units.

    Parameters
    ----------
    frac : ndarray, shape (n_frames, n_atoms, 3)
        Fractional coordinates.
    lattices : ndarray, shape (3, 3) or (n_frames, 3, 3)
        Lattice vectors as rows (A).
    species : list of str
        Element per atom.
    centre, ligand : str
        Elements of the unit (e.g. ``B`` and ``H`` for BH4).
    n_ligands : int
        Ligands per unit (4 for BH4 and PS4, 2 for NH2, 6 for TaCl6).
    time_step_fs : float
        Time between frames.
    max_curve_points : int
        The stored curve is thinned to at most this many points.
    """
    if time_step_fs <= 0:
        raise DiffusionInputError(f"time step must be positive, got {time_step_fs} fs")
    if frac.shape[0] < 4:
        raise DiffusionInputError("need at least 4 frames for an autocorrelation")
    lat0 = lattices if np.asarray(lattices).ndim == 2 else np.asarray(lattices)[0]
    centres, bonds = find_units(frac[0], lat0, species, centre, ligand, n_ligands)
    u = bond_vectors(frac, lattices, centres, bonds)
    acf = autocorrelation(u)
    lag_ps = np.arange(len(acf)) * time_step_fs / 1000
    tau, _ = fit_rotation_time(lag_ps, acf)
    # error: spread of tau over groups of whole units (bond vectors of one unit are correlated)
    n_groups = min(4, len(centres))
    err = float("nan")
    if n_groups >= 2 and np.isfinite(tau):
        per_unit = u.reshape(u.shape[0], len(centres), n_ligands, 3)
        taus = [
            fit_rotation_time(lag_ps, autocorrelation(g.reshape(u.shape[0], -1, 3)))[0]
            for g in np.array_split(per_unit, n_groups, axis=1)
        ]
        taus = [x for x in taus if np.isfinite(x)]
        if len(taus) >= 2:
            err = float(np.std(taus, ddof=1) / np.sqrt(len(taus)))
    stride = max(1, len(acf) // max_curve_points)
    return RotationResult(
        centre,
        ligand,
        len(centres),
        u.shape[1],
        time_step_fs,
        [float(x) for x in lag_ps[::stride]],
        [float(x) for x in acf[::stride]],
        float(tau),
        float(err),
        extrapolated=bool(acf.min() > np.exp(-1)),
    )


def jump_rotation_correlation(
    frac: np.ndarray,
    lattices: np.ndarray,
    species: list[str],
    cation: str,
    centre: str,
    ligand: str,
    n_ligands: int,
    window: int = 10,
    jump_A: float = 1.5,
    neighbour_A: float = 4.5,
) -> dict[str, float]:
    """How much more neighbouring anions rotate while a cation jumps than on average.

    Over windows of ``window`` frames, a cation "jumps" when it moves more than ``jump_A``.
    For each jump, the mean angular displacement (degrees) of the units whose centre lies within
    ``neighbour_A`` of the cation at the window start is compared with the mean over all units
    and windows.

    Returns
    -------
    dict
        ``n_jumps``, ``mean_angle_near_jumps_deg``, ``mean_angle_all_deg`` and their ``ratio``
        (> 1: anion rotation and cation hops are coupled).
    """
    lat0 = lattices if np.asarray(lattices).ndim == 2 else np.asarray(lattices)[0]
    centres, bonds = find_units(frac[0], lat0, species, centre, ligand, n_ligands)
    u = bond_vectors(frac, lattices, centres, bonds).reshape(frac.shape[0], len(centres), n_ligands, 3)
    sym = np.asarray(species)
    cations = np.where(sym == cation)[0]
    if len(cations) == 0:
        raise DiffusionInputError(f"no {cation} atoms in the trajectory")
    from superionic.analysis.diffusion import unwrap_displacements

    disp = unwrap_displacements(frac[:, cations, :], lattices)
    near_angles, all_angles, n_jumps = [], [], 0
    for start in range(0, frac.shape[0] - window, window):
        end = start + window
        cosang = np.clip((u[start] * u[end]).sum(-1), -1, 1)
        unit_angle = np.degrees(np.arccos(cosang)).mean(axis=1)  # per unit
        all_angles.extend(unit_angle)
        moved = np.linalg.norm(disp[end] - disp[start], axis=-1) > jump_A
        if not moved.any():
            continue
        d = _min_image(frac[start][centres][None, :, :] - frac[start][cations[moved]][:, None, :]) @ lat0
        close = np.linalg.norm(d, axis=-1) < neighbour_A
        for row in close:
            n_jumps += 1
            if row.any():
                near_angles.extend(unit_angle[row])
    mean_all = float(np.mean(all_angles)) if all_angles else float("nan")
    mean_near = float(np.mean(near_angles)) if near_angles else float("nan")
    return {
        "n_jumps": float(n_jumps),
        "mean_angle_near_jumps_deg": mean_near,
        "mean_angle_all_deg": mean_all,
        "ratio": mean_near / mean_all if mean_all else float("nan"),
    }
