"""Tracer and collective diffusion from MD trajectories, conductivity and Arrhenius fits.

Conventions
-----------
* Positions are unwrapped from fractional coordinates by the minimum-image step between frames,
  and the displacement of the framework (all non-mobile atoms) is subtracted from every atom.
* MSD uses every time origin and every lag, computed with FFTs (Calandrini et al.,
  Collection SFN 12, 201 (2011)): O(T log T) per atom and dimension.
* The tracer diffusivity is the slope of the averaged MSD over a stated lag window divided by
  2d (d = 3). Its uncertainty is the empirical relative standard deviation of He et al.,
  npj Comput. Mater. 4, 18 (2018): RSD = 3.43 / sqrt(N_jumps) + 0.04, where N_jumps is the
  total squared displacement of the mobile ions divided by the squared jump distance.
* Conductivity by Nernst-Einstein from the tracer D, sigma = n q^2 D / (k_B T), with n from the mean
  cell volume of the analysed frames (NpT runs change it). The Haven ratio is D* / D_sigma, D_sigma
  the collective (charge) diffusivity; their error bars are standard errors over time blocks.
* A result resting on fewer than ``MIN_JUMPS`` jumps, or whose error exceeds its value, is flagged
  ``converged = False`` with the reason. Undefined numbers are NaN in the dataclass and ``null`` with
  a reason in ``notes`` in :meth:`DiffusionResult.as_dict` (JSON has no NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import constants as sc

KB_EV = sc.physical_constants["Boltzmann constant in eV/K"][0]  # eV/K
KB_J = sc.k  # J/K
E_CHARGE = sc.e  # C
A2_PER_FS_TO_CM2_PER_S = (sc.angstrom / sc.centi) ** 2 / sc.femto  # 1 A^2/fs = 0.1 cm^2/s
MIN_JUMPS = 10  # fewer jumps than this: the diffusivity is not converged
SIGMA_METHOD = "Nernst-Einstein from tracer D"  # i.e. Haven ratio taken as 1


FFT_ELEMENTS = 2e6  # values per batch of MSD FFTs (atoms x 3 x frames): bounds their work memory


class DiffusionInputError(ValueError):
    """The trajectory or the analysis settings cannot give a diffusivity."""


def unwrap_displacements(frac_coords: np.ndarray, lattices: np.ndarray) -> np.ndarray:
    """Return Cartesian displacements from the first frame, unwrapped across boundaries.

    Parameters
    ----------
    frac_coords : ndarray, shape (n_frames, n_atoms, 3)
        Fractional coordinates (wrapped or not).
    lattices : ndarray, shape (3, 3) or (n_frames, 3, 3)
        Lattice vectors as rows (A), constant or per frame.

    Returns
    -------
    ndarray, shape (n_frames, n_atoms, 3)
        Displacements in A relative to frame 0.

    """
    frac = np.asarray(frac_coords, dtype=float)
    if frac.ndim != 3 or frac.shape[2] != 3:
        raise DiffusionInputError(f"frac_coords must have shape (frames, atoms, 3), got {frac.shape}")
    dfrac = np.diff(frac, axis=0)
    dfrac -= np.round(dfrac)
    lat = np.asarray(lattices, dtype=float)
    if lat.ndim == 2:
        dcart = dfrac @ lat
    else:
        dcart = np.einsum("fai,fij->faj", dfrac, lat[1:])
    disp = np.zeros_like(frac)
    np.cumsum(dcart, axis=0, out=disp[1:])
    return disp


def remove_drift(disp: np.ndarray, framework: np.ndarray) -> np.ndarray:
    """Subtract the mean displacement of the framework atoms from every atom.

    Parameters
    ----------
    disp : ndarray, shape (n_frames, n_atoms, 3)
        Unwrapped displacements in A.
    framework : ndarray of bool or int, shape (n_atoms,) or index array
        The atoms whose centre defines the reference frame.

    """
    fw = np.asarray(framework)
    if fw.size == 0 or (fw.dtype == bool and not fw.any()):
        return disp
    drift = disp[:, framework, :].mean(axis=1, keepdims=True)
    return disp - drift


def msd_fft(x: np.ndarray) -> np.ndarray:
    """Mean squared displacement over all time origins for every lag, by FFT.

    Parameters
    ----------
    x : ndarray, shape (n_frames, ...)
        Positions (or displacements) along axis 0; trailing axes are independent series
        whose squared displacements are summed over the last axis (Cartesian components).

    Returns
    -------
    ndarray, shape (n_frames, ...) without the last axis
        ``msd[m] = < |x(t+m) - x(t)|^2 >_t`` for m = 0 .. n_frames-1.
    """
    from scipy import fft as sfft

    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    # time on the last, contiguous axis: FFTs along it are several times faster
    xt = np.ascontiguousarray(np.moveaxis(x, 0, -1))  # (..., comps, n)
    d = np.square(xt).sum(axis=-2)  # (..., n)
    # S1(m) = sum_{t=0}^{n-m-1} (d[t] + d[t+m]) / (n - m), from cumulative sums
    head = np.concatenate([np.zeros((*d.shape[:-1], 1)), np.cumsum(d, axis=-1)], axis=-1)
    m = np.arange(n)
    counts = n - m
    s1 = (head[..., n - m] + (head[..., -1:] - head[..., m])) / counts
    size = sfft.next_fast_len(2 * n, real=True)
    fx = sfft.rfft(xt, n=size, axis=-1, workers=-1)
    power = (fx.real**2 + fx.imag**2).sum(axis=-2)
    acf = sfft.irfft(power, n=size, axis=-1, workers=-1)[..., :n]
    out = s1 - 2 * acf / counts
    return np.moveaxis(out, -1, 0)


@dataclass
class DiffusionResult:
    """Transport numbers of one species at one temperature (units in the names).

    The uncertainty methods are named in ``error_method`` (tracer D and sigma) and
    ``collective_error_method`` (D_sigma and the Haven ratio); ``sigma_method`` says which D the
    conductivity comes from; ``volume_note`` which volume it uses. ``converged`` is False when
    the numbers rest on fewer than ``MIN_JUMPS`` jumps or their error exceeds their value
    (``convergence_note`` says which). ``notes`` maps a field name to why it is undefined.
    """

    species: str
    temperature_K: float
    n_mobile: int
    volume_A3: float
    time_step_fs: float
    total_time_ps: float
    fit_window_ps: tuple[float, float]
    diffusivity_cm2_s: float
    diffusivity_err_cm2_s: float
    diffusivity_components_cm2_s: tuple[float, float, float]
    charge_diffusivity_cm2_s: float
    haven_ratio: float
    conductivity_mS_cm: float
    conductivity_err_mS_cm: float
    n_jumps: float
    jump_distance_A: float
    rsd: float
    block_diffusivities_cm2_s: list[float] = field(default_factory=list)
    error_method: str = "He et al. 2018: RSD = 3.43/sqrt(N_jumps) + 0.04"
    charge_diffusivity_err_cm2_s: float = float("nan")
    haven_ratio_err: float = float("nan")
    block_charge_diffusivities_cm2_s: list[float] = field(default_factory=list)
    collective_error_method: str = (
        "D_sigma: standard error over time blocks; Haven ratio: D* (He et al.) and D_sigma errors propagated"
    )
    sigma_method: str = SIGMA_METHOD
    volume_note: str = "given"
    drift_removed: bool = True
    converged: bool = True
    convergence_note: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    weighting: str = "uniform"
    lag_times_ps: list[float] = field(default_factory=list)
    msd_A2: list[float] = field(default_factory=list)
    charge_msd_A2: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        """Return a JSON-serialisable dict: NaN/inf become ``None`` with a reason in ``notes``."""
        d = asdict(self)
        notes = d["notes"]
        for key, value in d.items():
            if isinstance(value, float) and not math.isfinite(value):
                d[key] = None
                notes.setdefault(key, f"undefined ({value})")
            elif isinstance(value, list | tuple) and any(
                isinstance(v, float) and not math.isfinite(v) for v in value
            ):
                d[key] = type(value)(
                    v if not isinstance(v, float) or math.isfinite(v) else None for v in value
                )
                notes.setdefault(key, "some entries undefined (null)")
        return d


def _block_stderr(values: list[float]) -> float:
    """Return the standard error of the mean of block estimates (NaN with fewer than 2 blocks)."""
    if len(values) < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def convergence(n_jumps: float, rsd: float, diffusivity: float) -> tuple[bool, str]:
    """Whether a diffusivity (and the conductivity from it) can be quoted, and why not.

    Parameters
    ----------
    n_jumps : float
        Jumps the mobile ions made (total squared displacement / squared jump distance).
    rsd : float
        Relative standard deviation of D (He et al.; equal for sigma).
    diffusivity : float
        The tracer diffusivity.

    Returns
    -------
    tuple of (bool, str)
        ``(True, "N jumps, RSD x")``, or ``(False, "not converged (N jumps): reasons")`` when there
        are fewer than :data:`MIN_JUMPS` jumps, the error is not below the value, or D <= 0.
    """
    reasons = []
    if not n_jumps >= MIN_JUMPS:
        reasons.append(f"fewer than {MIN_JUMPS} jumps")
    if not rsd < 1:
        reasons.append(f"error exceeds the value (RSD {rsd:.2f})")
    if not diffusivity > 0:
        reasons.append("D <= 0")
    if not reasons:
        return True, f"{n_jumps:.0f} jumps, RSD {rsd:.2f}"
    return False, f"not converged ({n_jumps:.0f} jumps): " + "; ".join(reasons)


def _fit_slope(t: np.ndarray, y: np.ndarray, weighting: str = "uniform") -> float:
    a = np.vstack([t, np.ones_like(t)]).T
    if weighting == "inverse_lag":
        w = np.sqrt(1.0 / np.maximum(t, 1e-12))
        a, y = a * w[:, None], y * w
    slope, _ = np.linalg.lstsq(a, y, rcond=None)[0]
    return float(slope)


def nernst_einstein_mS_cm(
    diffusivity_cm2_s: float,
    n_ions: int,
    volume_A3: float,
    temperature_K: float,
    charge: float = 1.0,
) -> float:
    """Return the Nernst-Einstein conductivity sigma = n q^2 D / (k_B T) in mS/cm."""
    n_per_m3 = n_ions / (volume_A3 * sc.angstrom**3)
    d_m2_s = diffusivity_cm2_s * sc.centi**2
    sigma_s_m = n_per_m3 * (charge * E_CHARGE) ** 2 * d_m2_s / (KB_J * temperature_K)
    return sigma_s_m * sc.centi / sc.milli  # 1 S/m = 10 mS/cm


def diffusion_from_displacements(
    disp: np.ndarray,
    mobile: np.ndarray,
    time_step_fs: float,
    temperature_K: float,
    volume_A3: float,
    species: str = "Li",
    charge: float = 1.0,
    fit_start: float = 0.1,
    fit_end: float = 0.7,
    jump_distance_A: float = 2.0,
    n_blocks: int = 4,
    max_curve_points: int = 400,
    weighting: str = "uniform",
) -> DiffusionResult:
    """Compute tracer and collective diffusion of the mobile atoms.

    Parameters
    ----------
    disp : ndarray, shape (n_frames, n_atoms, 3)
        Unwrapped, drift-corrected displacements in A.
    mobile : ndarray
        Boolean mask or indices of the diffusing atoms.
    time_step_fs : float
        Time between stored frames in fs (MD step times the stride).
    temperature_K : float
        Temperature of the run.
    volume_A3 : float
        Cell volume.
    species : str
        Label of the mobile species.
    charge : float
        Charge of the mobile ion in e (for the conductivity).
    fit_start, fit_end : float
        Lag window of the linear fit, as fractions of the run length.
    jump_distance_A : float
        Hop length used to count jumps for the RSD estimate.
    n_blocks : int
        Number of consecutive time blocks for the block-average spread.
    max_curve_points : int
        The MSD curve stored in the result is thinned to at most this many points.
    weighting : str
        ``uniform`` least squares over the window, or ``inverse_lag`` (weights 1/t, the
        convention of pymatgen-analysis-diffusion's ``smoothed="max"``).

    Returns
    -------
    DiffusionResult

    """
    if time_step_fs <= 0:
        raise DiffusionInputError(f"time step must be positive, got {time_step_fs} fs")
    if temperature_K <= 0:
        raise DiffusionInputError(f"temperature must be positive, got {temperature_K} K")
    n_frames = disp.shape[0]
    if n_frames < 4:
        raise DiffusionInputError(f"need at least 4 frames for a diffusivity, got {n_frames}")
    if weighting not in ("uniform", "inverse_lag"):
        raise DiffusionInputError(f"weighting must be 'uniform' or 'inverse_lag', got {weighting!r}")
    if not 0 <= fit_start < fit_end <= 1:
        raise DiffusionInputError(
            f"fit window must satisfy 0 <= start < end <= 1, got {fit_start}, {fit_end}"
        )
    sel = disp[:, mobile, :]
    n_mobile = sel.shape[1]
    if n_mobile == 0:
        raise DiffusionInputError(f"no {species} atoms in the trajectory")
    # per-atom, per-direction MSD, in chunks of atoms to bound the FFT work arrays (about ten
    # float64 arrays of FFT_ELEMENTS each: ~160 MB, whatever the run's length)
    msd_xyz = np.zeros((n_frames, 3))
    chunk = max(1, int(FFT_ELEMENTS // (n_frames * 3)))
    for start in range(0, n_mobile, chunk):
        msd_xyz += msd_fft(sel[:, start : start + chunk, :, None]).sum(axis=1)
    msd_xyz /= n_mobile  # (frames, 3)
    msd = msd_xyz.sum(axis=1)
    charge_disp = sel.sum(axis=1)  # (frames, 3)
    charge_msd = msd_fft(charge_disp) / n_mobile

    lags_fs = np.arange(n_frames) * time_step_fs
    i0 = max(1, int(fit_start * (n_frames - 1)))
    i1 = max(i0 + 2, int(fit_end * (n_frames - 1)))
    window = slice(i0, i1 + 1)
    t = lags_fs[window]
    slope = _fit_slope(t, msd[window], weighting)  # A^2/fs
    d_tracer = slope / 6 * A2_PER_FS_TO_CM2_PER_S
    comps = tuple(_fit_slope(t, msd_xyz[window, k], weighting) / 2 * A2_PER_FS_TO_CM2_PER_S for k in range(3))
    d_sigma = _fit_slope(t, charge_msd[window], weighting) / 6 * A2_PER_FS_TO_CM2_PER_S

    total_sq = float(np.square(sel[-1] - sel[0]).sum())
    n_jumps = total_sq / jump_distance_A**2
    notes: dict[str, str] = {}
    if n_jumps > 0:
        rsd = 3.43 / np.sqrt(n_jumps) + 0.04
    else:
        rsd = float("inf")
        notes["rsd"] = notes["diffusivity_err_cm2_s"] = notes["conductivity_err_mS_cm"] = (
            "no displacement at all: the He et al. error is undefined"
        )
    d_err = abs(d_tracer) * rsd

    blocks, charge_blocks = [], []
    block_len = n_frames // n_blocks
    if block_len >= 8:
        j0 = max(1, int(fit_start * (block_len - 1)))
        j1 = max(j0 + 2, int(fit_end * (block_len - 1)))
        tb = lags_fs[j0 : j1 + 1]
        for b in range(n_blocks):
            seg = sel[b * block_len : (b + 1) * block_len]
            step = max(1, int(FFT_ELEMENTS // (block_len * 3)))  # atoms per FFT, as above
            seg_msd = (
                sum(msd_fft(seg[:, k : k + step]).sum(axis=1) for k in range(0, n_mobile, step)) / n_mobile
            )
            blocks.append(_fit_slope(tb, seg_msd[j0 : j1 + 1], weighting) / 6 * A2_PER_FS_TO_CM2_PER_S)
            seg_charge = msd_fft(seg.sum(axis=1)) / n_mobile
            charge_blocks.append(
                _fit_slope(tb, seg_charge[j0 : j1 + 1], weighting) / 6 * A2_PER_FS_TO_CM2_PER_S
            )
    else:
        notes["charge_diffusivity_err_cm2_s"] = notes["haven_ratio_err"] = (
            f"run too short for {n_blocks} time blocks of >= 8 frames ({n_frames} frames)"
        )
    d_sigma_err = _block_stderr(charge_blocks)

    sigma = nernst_einstein_mS_cm(d_tracer, n_mobile, volume_A3, temperature_K, charge)
    if d_sigma > 0 and d_tracer > 0:
        haven = d_tracer / d_sigma
        # first-order propagation of the two relative errors (D* from He et al., D_sigma from blocks)
        haven_err = haven * float(np.hypot(rsd, d_sigma_err / d_sigma))
    else:
        haven = haven_err = float("nan")
        notes["haven_ratio"] = notes["haven_ratio_err"] = (
            f"undefined: D* = {d_tracer:.3g} and D_sigma = {d_sigma:.3g} cm2/s must both be positive "
            "(the MSD has no positive slope over the fit window; run longer)"
        )

    converged, convergence_note = convergence(n_jumps, rsd, d_tracer)
    stride = max(1, n_frames // max_curve_points)
    return DiffusionResult(
        species=species,
        temperature_K=float(temperature_K),
        n_mobile=int(n_mobile),
        volume_A3=float(volume_A3),
        time_step_fs=float(time_step_fs),
        total_time_ps=float(lags_fs[-1] / 1000),
        fit_window_ps=(float(t[0] / 1000), float(t[-1] / 1000)),
        diffusivity_cm2_s=float(d_tracer),
        diffusivity_err_cm2_s=float(d_err),
        diffusivity_components_cm2_s=tuple(float(c) for c in comps),
        charge_diffusivity_cm2_s=float(d_sigma),
        haven_ratio=float(haven),
        conductivity_mS_cm=float(sigma),
        conductivity_err_mS_cm=float(abs(sigma) * rsd),
        n_jumps=float(n_jumps),
        jump_distance_A=float(jump_distance_A),
        rsd=float(rsd),
        weighting=weighting,
        block_diffusivities_cm2_s=[float(b) for b in blocks],
        charge_diffusivity_err_cm2_s=d_sigma_err,
        haven_ratio_err=float(haven_err),
        block_charge_diffusivities_cm2_s=[float(b) for b in charge_blocks],
        converged=converged,
        convergence_note=convergence_note,
        notes=notes,
        lag_times_ps=[float(x) for x in lags_fs[::stride] / 1000],
        msd_A2=[float(x) for x in msd[::stride]],
        charge_msd_A2=[float(x) for x in charge_msd[::stride]],
    )


def diffusion_from_frac_coords(
    frac_coords: np.ndarray,
    lattices: np.ndarray,
    species: list[str],
    mobile_species: str,
    time_step_fs: float,
    temperature_K: float,
    charge: float = 1.0,
    jump_distance_A: float | None = None,
    **kwargs: float,
) -> DiffusionResult:
    """Unwrap, remove framework drift and analyse one mobile species.

    The drift of the framework (every other element) is subtracted; a trajectory of the mobile
    element alone has no framework, so nothing is subtracted (``drift_removed`` False, the reason
    in ``notes["drift"]``) and the Haven ratio is undefined. The conductivity uses the mean cell
    volume of the frames given (``volume_note``).

    Parameters
    ----------
    frac_coords : ndarray, shape (n_frames, n_atoms, 3)
        Fractional coordinates per frame.
    lattices : ndarray, shape (3, 3) or (n_frames, 3, 3)
        Lattice vectors as rows (A).
    species : list of str
        Element symbol per atom.
    mobile_species : str
        The diffusing element (e.g. ``"Li"``).
    time_step_fs : float
        Time between stored frames in fs.
    temperature_K : float
        Temperature of the run (K).
    charge : float
        Charge of the mobile ion (e).
    jump_distance_A : float, optional
        Defaults to the nearest-neighbour distance between mobile atoms in the first frame,
        clamped to [1.5, 4] A.
    **kwargs
        Passed to :func:`diffusion_from_displacements`.

    """
    frac = np.asarray(frac_coords)
    if frac.ndim != 3 or frac.shape[0] < 2:
        raise DiffusionInputError(
            f"a trajectory needs at least 2 frames of shape (atoms, 3); got shape {frac.shape}"
        )
    lat = np.asarray(lattices, dtype=float)
    if lat.ndim == 3 and len(lat) != len(frac):
        raise DiffusionInputError(f"{len(lat)} lattices for {len(frac)} frames: give one per frame, or one")
    return diffusion_from_chunks(
        [(frac, lat)],
        len(frac),
        species,
        mobile_species,
        time_step_fs,
        temperature_K,
        charge,
        jump_distance_A,
        **kwargs,
    )


def diffusion_from_chunks(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    n_frames: int,
    species: list[str],
    mobile_species: str,
    time_step_fs: float,
    temperature_K: float,
    charge: float = 1.0,
    jump_distance_A: float | None = None,
    **kwargs: float,
) -> DiffusionResult:
    """:func:`diffusion_from_frac_coords` on a trajectory read in consecutive chunks of frames.

    Only the mobile atoms' unwrapped, drift-corrected displacements are kept (float64:
    ``24 x n_frames x n_mobile`` bytes) plus one chunk; the framework enters through its mean
    displacement per frame. A trajectory larger than memory (a binary trajectory blob read chunk
    by chunk, :mod:`superionic.trajectory_store`) is analysed within that bound.

    Parameters
    ----------
    chunks : iterable of (frac_coords, lattices)
        Consecutive frames: ``(k, n_atoms, 3)`` fractional coordinates and their lattices,
        ``(3, 3)`` (constant) or ``(k, 3, 3)``.
    n_frames : int
        Frames in all chunks together.
    species, mobile_species, time_step_fs, temperature_K, charge, jump_distance_A, **kwargs
        As :func:`diffusion_from_frac_coords`.
    """
    symbols = np.asarray(species)
    mobile = symbols == mobile_species
    if not mobile.any():
        raise DiffusionInputError(
            f"species {mobile_species!r} is not in the trajectory; present: {sorted(set(species))}"
        )
    framework = ~mobile
    disp = np.empty((n_frames, int(mobile.sum()), 3))
    carry_mobile, carry_framework = np.zeros((int(mobile.sum()), 3)), np.zeros(3)
    previous: np.ndarray | None = None
    first_frac, first_lat, volumes, constant = None, None, [], True
    at = 0
    for frac_chunk, lat_chunk in chunks:
        frac = np.asarray(frac_chunk, dtype=float)
        lat = np.asarray(lat_chunk, dtype=float)
        if frac.ndim != 3 or frac.shape[1:] != (len(symbols), 3):
            raise DiffusionInputError(f"frames of shape {frac.shape[1:]} for {len(symbols)} atoms")
        if len(frac) == 0:
            continue
        per_frame = lat if lat.ndim == 3 else np.broadcast_to(lat, (len(frac), 3, 3))
        constant = constant and lat.ndim == 2
        # one volume per frame, whatever the chunk's cell form (a mean weighted by frames)
        volumes.append(
            np.abs(np.linalg.det(per_frame)) if lat.ndim == 3 else np.full(len(frac), abs(np.linalg.det(lat)))
        )
        if previous is None:
            first_frac, first_lat = frac[0], per_frame[0]
            disp[0] = 0.0
            at, steps, step_lat = 1, np.diff(frac, axis=0), per_frame[1:]
        else:
            steps, step_lat = np.diff(np.concatenate([previous[None], frac]), axis=0), per_frame
        previous = frac[-1]
        steps -= np.round(steps)
        dcart = np.einsum("fai,fij->faj", steps, step_lat) if lat.ndim == 3 else steps @ lat
        moved = np.cumsum(dcart[:, mobile], axis=0) + carry_mobile
        drift = (
            np.cumsum(dcart[:, framework].mean(axis=1), axis=0) + carry_framework if framework.any() else None
        )
        if at + len(moved) > n_frames:
            raise DiffusionInputError(f"the chunks hold more than the {n_frames} frames announced")
        if len(moved):
            carry_mobile = moved[-1].copy()  # before the drift comes off: the carry is undrifted
            if drift is not None:
                carry_framework = drift[-1].copy()
                moved -= drift[:, None, :]
            disp[at : at + len(moved)] = moved
            at += len(moved)
    if at != n_frames or first_frac is None or n_frames < 2:
        raise DiffusionInputError(f"the chunks held {at} frames, {n_frames} announced (at least 2 needed)")
    vols = np.concatenate(volumes)
    if constant and np.allclose(vols, vols[0]):
        volume, volume_note = float(vols[0]), "constant cell"
    else:
        volume = float(vols.mean())
        volume_note = f"mean over analysed frames ({n_frames} frames, {vols.min():.2f}-{vols.max():.2f} A3)"
    if jump_distance_A is None:
        jump_distance_A = _nearest_neighbour(first_frac[mobile], first_lat)
    result = diffusion_from_displacements(
        disp,
        slice(None),
        time_step_fs,
        temperature_K,
        volume,
        mobile_species,
        charge,
        jump_distance_A=jump_distance_A,
        **kwargs,
    )
    result.volume_note = volume_note
    if not framework.any():
        result.drift_removed = False
        result.notes["drift"] = (
            f"every atom is {mobile_species}: no framework to reference, drift not removed"
        )
        # the summed displacement of all atoms is the centre of mass, pinned by momentum conservation
        result.haven_ratio = result.haven_ratio_err = float("nan")
        result.charge_diffusivity_cm2_s = float("nan")
        why = (
            f"undefined: every atom is {mobile_species}, so the collective displacement is the "
            "centre of mass (fixed by momentum conservation)"
        )
        for key in ("haven_ratio", "haven_ratio_err", "charge_diffusivity_cm2_s"):
            result.notes[key] = why
        if hasattr(result, "charge_diffusivity_err_cm2_s"):
            result.charge_diffusivity_err_cm2_s = float("nan")
            result.notes["charge_diffusivity_err_cm2_s"] = why
    return result


def _nearest_neighbour(frac: np.ndarray, lattice: np.ndarray) -> float:
    if len(frac) < 2:
        return 2.0
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d @ lattice, axis=-1)
    np.fill_diagonal(dist, np.inf)
    return float(np.clip(dist.min(), 1.5, 4.0))


@dataclass
class ArrheniusResult:
    """Arrhenius fit y = A exp(-Ea / k_B T), with y = D or sigma*T (units in the names)."""

    quantity: str
    temperatures_K: list[float]
    values: list[float]
    errors: list[float]
    activation_energy_eV: float
    activation_energy_err_eV: float
    prefactor: float
    extrapolated_T_K: float
    extrapolated_value: float
    extrapolated_err: float
    method: str = "weighted least squares of ln(y) vs 1/T; weights from the per-point errors"

    def as_dict(self) -> dict:
        """Return a JSON-serialisable dict."""
        return asdict(self)


def arrhenius_fit(
    temperatures_K: list[float],
    values: list[float],
    errors: list[float] | None = None,
    quantity: str = "diffusivity_cm2_s",
    extrapolate_to_K: float = 300.0,
) -> ArrheniusResult:
    """Fit ``ln(y) = ln(A) - Ea / (k_B T)`` with error propagation.

    Parameters
    ----------
    temperatures_K : list of float
        At least two distinct temperatures.
    values : list of float
        Positive values of D (cm^2/s) or sigma*T.
    errors : list of float, optional
        One-sigma errors of ``values``; equal relative weights when omitted.
    quantity : str
        Name of the fitted quantity (with units).
    extrapolate_to_K : float
        Temperature at which the fitted value is reported.

    Returns
    -------
    ArrheniusResult

    """
    t = np.asarray(temperatures_K, dtype=float)
    y = np.asarray(values, dtype=float)
    if len(t) != len(y):
        raise DiffusionInputError("temperatures and values differ in length")
    if len(np.unique(t)) < 2:
        raise DiffusionInputError(
            f"an Arrhenius fit needs at least two distinct temperatures, got {t.tolist()}"
        )
    if np.any(t <= 0):
        raise DiffusionInputError(f"temperatures must be positive, got {t.tolist()}")
    if np.any(y <= 0):
        raise DiffusionInputError(
            f"{quantity} must be positive at every temperature for a log fit, got {y.tolist()}"
        )
    sig = np.asarray(errors, dtype=float) / y if errors is not None else np.full_like(y, 0.1)
    sig = np.where(sig > 0, sig, 0.1)
    x = 1.0 / t
    w = 1.0 / sig**2
    a = np.vstack([np.ones_like(x), x]).T
    cov = np.linalg.inv(a.T @ (a * w[:, None]))
    intercept, slope = cov @ (a.T @ (w * np.log(y)))
    if len(t) > 2:
        resid = np.log(y) - (intercept + slope * x)
        chi2_red = float((w * resid**2).sum() / (len(t) - 2))
        cov = cov * max(chi2_red, 1.0)
    ea = -slope * KB_EV
    ea_err = float(np.sqrt(cov[1, 1]) * KB_EV)
    x0 = 1.0 / extrapolate_to_K
    ln_y0 = intercept + slope * x0
    var_ln = cov[0, 0] + 2 * x0 * cov[0, 1] + x0**2 * cov[1, 1]
    y0 = float(np.exp(ln_y0))
    return ArrheniusResult(
        quantity=quantity,
        temperatures_K=[float(v) for v in t],
        values=[float(v) for v in y],
        errors=[float(v) for v in (sig * y)],
        activation_energy_eV=float(ea),
        activation_energy_err_eV=ea_err,
        prefactor=float(np.exp(intercept)),
        extrapolated_T_K=float(extrapolate_to_K),
        extrapolated_value=y0,
        extrapolated_err=float(y0 * np.sqrt(max(var_ln, 0.0))),
    )


def arrhenius_fits(
    results: list[dict[str, Any]], extrapolate_to_K: float = 300.0
) -> tuple[ArrheniusResult, ArrheniusResult]:
    """Arrhenius fits of D and of sigma*T over diffusion results at several temperatures.

    Parameters
    ----------
    results : list of dict
        Diffusion results (``temperature_K``, ``diffusivity_cm2_s`` and ``conductivity_mS_cm``
        with their ``_err_`` values), as :func:`diffusion_from_frac_coords` returns them.
    extrapolate_to_K : float
        Temperature of the extrapolated values.

    Returns
    -------
    tuple of ArrheniusResult
        The fit of D (``diffusivity_cm2_s``) and of sigma*T (``conductivity_T_mS_K_cm``).
    """
    t = [float(r["temperature_K"]) for r in results]
    fit_d = arrhenius_fit(
        t,
        [r["diffusivity_cm2_s"] for r in results],
        [r["diffusivity_err_cm2_s"] for r in results],
        "diffusivity_cm2_s",
        extrapolate_to_K,
    )
    fit_s = arrhenius_fit(
        t,
        [r["conductivity_mS_cm"] * r["temperature_K"] for r in results],
        [r["conductivity_err_mS_cm"] * r["temperature_K"] for r in results],
        "conductivity_T_mS_K_cm",
        extrapolate_to_K,
    )
    return fit_d, fit_s
