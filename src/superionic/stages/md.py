"""Analysis jobs attached to MD: diffusion per temperature and the Arrhenius fit."""

from __future__ import annotations

from typing import Any

import numpy as np
from jobflow import job
from pymatgen.core import Structure
from pymatgen.core.trajectory import Trajectory

from superionic.analysis.diffusion import arrhenius_fit, diffusion_from_frac_coords
from superionic.analysis.rotation import UNITS, jump_rotation_correlation, orientation_acf
from superionic.analysis.trajectory_io import from_pymatgen_trajectory


def trajectory_arrays(traj: Trajectory | dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return ``(frac_coords, lattices, species)`` of a pymatgen Trajectory (or its dict).

    ``lattices`` has shape (3, 3) for a constant lattice, else (n_frames, 3, 3).
    """
    arrays = from_pymatgen_trajectory(traj)
    return arrays.frac_coords, arrays.lattices, arrays.species


def concatenate_chunks(
    trajectories: list[Trajectory | dict], skip_frames: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Join MD chunks into one run (each later chunk's first frame repeats the previous last one).

    ``skip_frames`` are dropped from the start of the first chunk only.
    """
    parts = [trajectory_arrays(t) for t in trajectories]
    fracs, lats = [], []
    for k, (frac, lattice, _symbols) in enumerate(parts):
        start = skip_frames if k == 0 else 1
        fracs.append(frac[start:])
        lats.append(
            lattice[start:] if lattice.ndim == 3 else np.repeat(lattice[None], len(frac) - start, axis=0)
        )
    lattice_all = np.concatenate(lats)
    if np.allclose(lattice_all, lattice_all[0]):
        lattice_all = lattice_all[0]
    return np.concatenate(fracs), lattice_all, parts[0][2]


@job
def analyze_diffusion(
    trajectory: Trajectory | dict | list,
    temperature_K: float,
    species: str,
    frame_interval_fs: float,
    skip_frames: int = 0,
    fit_start: float = 0.1,
    fit_end: float = 0.7,
) -> dict[str, Any]:
    """Tracer/collective diffusivity, conductivity and Haven ratio of one MD run.

    Parameters
    ----------
    trajectory : Trajectory or list of Trajectory
        MD trajectory (from the blob store), or consecutive chunks of one run.
    temperature_K : float
        Production temperature.
    species : str
        Mobile element.
    frame_interval_fs : float
        Time between stored frames (time step x trajectory interval).
    skip_frames : int
        Frames to drop at the start (heating ramp, equilibration).
    fit_start, fit_end : float
        Lag window of the MSD fit as fractions of the analysed run.

    Returns
    -------
    dict
        :class:`superionic.analysis.diffusion.DiffusionResult` as a dict.

    """
    chunks = trajectory if isinstance(trajectory, list) else [trajectory]
    frac, lattice, symbols = concatenate_chunks(chunks, skip_frames)
    result = diffusion_from_frac_coords(
        frac,
        lattice,
        symbols,
        species,
        frame_interval_fs,
        temperature_K,
        fit_start=fit_start,
        fit_end=fit_end,
    )
    return result.as_dict()


@job
def fit_arrhenius(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Arrhenius fits of D and of sigma*T over the temperature sweep.

    Returns
    -------
    dict
        ``diffusivity`` and ``conductivity_T`` fits (:class:`ArrheniusResult` as dicts), or an
        ``error`` entry when fewer than two temperatures have positive diffusivities.

    """
    ok = [r for r in results if r["diffusivity_cm2_s"] > 0]
    out: dict[str, Any] = {"n_temperatures": len(results), "n_used": len(ok)}
    if len({r["temperature_K"] for r in ok}) < 2:
        out["error"] = "fewer than two temperatures with a positive diffusivity: run longer or hotter"
        return out
    t = [r["temperature_K"] for r in ok]
    out["diffusivity"] = arrhenius_fit(
        t,
        [r["diffusivity_cm2_s"] for r in ok],
        [r["diffusivity_err_cm2_s"] for r in ok],
        quantity="diffusivity_cm2_s",
    ).as_dict()
    out["conductivity_T"] = arrhenius_fit(
        t,
        [r["conductivity_mS_cm"] * r["temperature_K"] for r in ok],
        [r["conductivity_err_mS_cm"] * r["temperature_K"] for r in ok],
        quantity="conductivity_T_mS_K_cm",
    ).as_dict()
    return out


@job
def freeze_species(structure: Structure, species: list[str], engine: str = "mlip") -> Structure:
    """Return ``structure`` with every atom of ``species`` held fixed during MD (study B).

    Study B's "frozen species" runs hold Na, NH2 or BH4 in place. The constraint is carried as
    site properties that each engine's input writer understands: ``selective_dynamics`` (False for
    frozen atoms) becomes ASE ``FixAtoms`` for the MLIP and the ``Selective dynamics`` block of the
    VASP POSCAR (honoured by IBRION 0 MD); for CP2K, ``fix`` ("XYZ") becomes
    ``MOTION/CONSTRAINT/FIXED_ATOMS`` through pymatgen's CP2K input set.

    Raises
    ------
    ValueError
        When none of ``species`` is present.
    """
    present = {site.specie.symbol for site in structure}
    missing = [sp for sp in species if sp not in present]
    if len(missing) == len(species):
        raise ValueError(
            f"frozen_species {species}: none of these elements is in {structure.composition.formula}"
        )
    out = structure.copy()
    out.add_site_property(
        "selective_dynamics", [[site.specie.symbol not in species] * 3 for site in structure]
    )
    if engine == "cp2k":
        out.add_site_property("fix", ["XYZ" if site.specie.symbol in species else "" for site in structure])
    return out


@job
def analyze_rotation(
    trajectory: Trajectory | dict,
    temperature_K: float,
    units: list[str],
    frame_interval_fs: float,
    skip_frames: int = 0,
    cation: str | None = None,
) -> dict[str, Any]:
    """Orientation autocorrelation and rotation time of each polyanion species in ``units``.

    Returns
    -------
    dict
        ``temperature_K`` and, per unit name, :class:`RotationResult` as a dict (plus the
        cation jump / anion rotation correlation when ``cation`` is given).
    """
    frac, lattice, symbols = trajectory_arrays(trajectory)
    frac = frac[skip_frames:]
    if lattice.ndim == 3:
        lattice = lattice[skip_frames:]
    out: dict[str, Any] = {"temperature_K": temperature_K, "units": {}}
    for name in units:
        centre, ligand, n = UNITS[name]
        res = orientation_acf(frac, lattice, symbols, centre, ligand, n, frame_interval_fs).as_dict()
        if cation:
            res["jump_rotation"] = jump_rotation_correlation(
                frac, lattice, symbols, cation, centre, ligand, n
            )
        out["units"][name] = res
    return out


@job
def converge_diffusion(
    result: dict[str, Any],
    trajectories: list[Trajectory | dict],
    md_settings: dict[str, Any],
    temperature_K: float,
    species: str,
    frame_interval_fs: float,
    skip_frames: int,
    fit_start: float,
    fit_end: float,
    target_rsd: float,
    max_chunks: int,
    chunk: int = 1,
    engine: str = "mlip",
    last: dict[str, Any] | None = None,
) -> Any:
    """Extend an MD run chunk by chunk until the diffusivity's RSD reaches ``target_rsd``.

    Study C's criterion: RSD = 3.43 / sqrt(N_jumps) + 0.04, target 20-40 %. When the target is
    not met and fewer than ``max_chunks`` chunks ran, the job replaces itself with one more
    production run on ``engine`` (``extension_jobs`` of :mod:`superionic.engines.vasp`,
    ``.cp2k`` or ``.mlip``: VASP continues from the previous run's outputs, positions and
    velocities; CP2K and the MLIP continue the positions with velocities redrawn at
    ``temperature_K``), an analysis of all chunks together and another check.

    Parameters
    ----------
    result : dict
        The diffusion result of the chunks so far.
    trajectories : list
        The chunks so far (joined by :func:`concatenate_chunks`).
    md_settings : dict
        The MD stage's merged settings.
    temperature_K, species, frame_interval_fs, skip_frames, fit_start, fit_end
        As for :func:`analyze_diffusion`.
    target_rsd : float
        RSD at which the run stops (e.g. 0.3).
    max_chunks : int
        Most production chunks.
    chunk : int
        Production chunks run so far (a chained multi-part VASP run counts as one).
    engine : str
        ``mlip``, ``vasp`` or ``cp2k``.
    last : dict, optional
        ``structure`` (and for VASP ``dir_name``) of the last run; by default the last frame.

    Returns
    -------
    dict or Response
        The diffusion result with ``n_chunks`` and ``rsd_converged``, or the replacement flow.
    """
    import importlib

    from jobflow import CURRENT_JOB, Flow, Response

    done = result.get("rsd") is not None and result["rsd"] <= target_rsd  # None: nothing moved
    if done or chunk >= max_chunks:
        return {**result, "n_chunks": chunk, "rsd_converged": bool(done), "target_rsd": target_rsd}
    if last is None:
        frac, lattice, symbols = trajectory_arrays(trajectories[-1])
        last = {"structure": Structure(lattice if lattice.ndim == 2 else lattice[-1], symbols, frac[-1])}
    if md_settings.get("frozen_species"):
        # the next run's input is written from this structure: carry the constraint (idempotent)
        last = {
            **last,
            "structure": freeze_species.original(last["structure"], md_settings["frozen_species"], engine),
        }
    meta = dict(CURRENT_JOB.job.metadata or {}) if CURRENT_JOB.job is not None else {}
    base = str(CURRENT_JOB.job.name) if CURRENT_JOB.job is not None else f"md {temperature_K:g} K"
    base = base.replace(" converge ", " md ").split(" chunk ")[0]
    part = int(md_settings.get("production_chunks", 1)) + chunk
    engine_module = importlib.import_module(f"superionic.engines.{engine}")
    md_jobs, trajectory, new_last = engine_module.extension_jobs(
        md_settings, temperature_K, last, f"{base} chunk {chunk + 1}", part
    )
    for j in md_jobs:
        j.metadata = {**meta, **j.metadata, "stage": "md", "chunk": chunk + 1}
    chunks = [*trajectories, trajectory]
    ana = analyze_diffusion(
        chunks, temperature_K, species, frame_interval_fs, skip_frames, fit_start, fit_end
    )
    ana.name = f"{base.replace(' md ', ' diffusion ')} chunk {chunk + 1}"
    ana.metadata = {**meta, "stage": "diffusion_chunk", "chunk": chunk + 1}
    check = converge_diffusion(
        ana.output,
        chunks,
        md_settings,
        temperature_K,
        species,
        frame_interval_fs,
        skip_frames,
        fit_start,
        fit_end,
        target_rsd,
        max_chunks,
        chunk + 1,
        engine,
        new_last,
    )
    check.name = str(CURRENT_JOB.job.name) if CURRENT_JOB.job is not None else "converge"
    check.metadata = dict(meta)
    return Response(replace=Flow([*md_jobs, ana, check], output=check.output))


@job
def cp2k_trajectory(dir_name: str, structure: Structure | dict, timestep_fs: float) -> Trajectory:
    """Read the positions CP2K wrote (``*-pos-1.xyz``, every step) into a pymatgen Trajectory.

    Each frame's cell is read from CP2K's ``*-1.cell`` (one row per MD step, matched to the
    frame by its step number ``i =``), so an NpT run keeps its varying cell and volumes; a
    constant cell (NVT) gives a constant-lattice trajectory. Without a ``.cell`` file the input
    cell is used. Frame 0 is the initial configuration.
    """
    import gzip
    import re
    from pathlib import Path

    s = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
    folder = Path(str(dir_name).split(":", 1)[-1])
    path = next(iter(sorted(folder.glob("*-pos-1.xyz*"))), None)
    if path is None:
        raise FileNotFoundError(f"no CP2K *-pos-1.xyz trajectory in {folder}")
    text = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
    lines = text.splitlines()
    n = len(s)
    frames, steps = [], []
    k = 0
    while k + n + 2 <= len(lines) and lines[k].strip():
        block = lines[k + 2 : k + 2 + n]
        frames.append([[float(x) for x in ln.split()[1:4]] for ln in block])
        step = re.search(r"\bi\s*=\s*(\d+)", lines[k + 1])
        steps.append(int(step.group(1)) if step else len(steps))
        k += n + 2
    symbols = [ln.split()[0] for ln in lines[2 : 2 + n]]
    cart = np.array(frames)
    lattices = np.repeat(s.lattice.matrix[None], len(frames), axis=0)
    cell_path = next(iter(sorted(folder.glob("*-1.cell*"))), None)
    if cell_path is not None:
        # columns: step, time (fs), Ax Ay Az Bx By Bz Cx Cy Cz (A), volume (A^3); loadtxt reads .gz
        rows = np.atleast_2d(np.loadtxt(cell_path, comments="#"))
        by_step = {int(r[0]): r[2:11].reshape(3, 3) for r in rows}
        missing = [st for st in steps if st not in by_step]
        if missing:
            raise ValueError(f"{cell_path} has no cell for MD step(s) {missing[:5]} of {path.name}")
        lattices = np.array([by_step[st] for st in steps])
    frac = np.einsum("fai,fij->faj", cart, np.linalg.inv(lattices))
    if np.allclose(lattices, lattices[0]):
        return Trajectory(symbols, frac, lattice=lattices[0], constant_lattice=True, time_step=timestep_fs)
    return Trajectory(symbols, frac, lattice=lattices, constant_lattice=False, time_step=timestep_fs)
