"""Analysis jobs attached to MD: diffusion per temperature and the Arrhenius fit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import job
from pymatgen.core import Structure
from pymatgen.core.trajectory import Trajectory

from superionic.analysis.diffusion import arrhenius_fits, diffusion_from_chunks, diffusion_from_frac_coords
from superionic.analysis.md_health import md_health, trajectory_energies
from superionic.analysis.rotation import UNITS, jump_rotation_correlation, orientation_acf
from superionic.analysis.trajectory_io import from_pymatgen_trajectory
from superionic.engines.base import get_engine
from superionic.engines.settings import MDSettings
from superionic.stages.common import engine_for, jobs_of, staged
from superionic.trajectory_store import is_reference, open_trajectory

if TYPE_CHECKING:
    from jobflow import Flow

    from superionic.spec.models import CampaignSpec, MDStage, QuenchStage


def trajectory_arrays(traj: Trajectory | dict, store: Any = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return ``(frac_coords, lattices, species)`` of an MD trajectory, all frames in memory.

    A pymatgen Trajectory (or its dict), or a binary trajectory in the store (its reference,
    :mod:`superionic.trajectory_store`).

    ``lattices`` has shape (3, 3) for a constant lattice, else (n_frames, 3, 3). ``store`` (a
    JobStore) is where a binary trajectory is read from outside a job (inside one: its store).
    """
    if is_reference(traj):
        with open_trajectory(traj, store) as reader:  # type: ignore[arg-type]
            return reader.arrays()
    arrays = from_pymatgen_trajectory(traj)
    return arrays.frac_coords, arrays.lattices, arrays.species


def last_frame(traj: Trajectory | dict, store: Any = None) -> Structure:
    """Return the last frame of a trajectory as a Structure (a binary one reads that frame only)."""
    if is_reference(traj):
        with open_trajectory(traj, store) as reader:  # type: ignore[arg-type]
            record = reader.read(reader.n_frames - 1)
            lattice = reader.lattice if reader.lattice is not None else record["lattice"][-1]
            return Structure(lattice, reader.species, record["frac"][-1].astype(float))
    frac, lattice, symbols = trajectory_arrays(traj)
    return Structure(lattice if lattice.ndim == 2 else lattice[-1], symbols, frac[-1])


def frame_energies(traj: Any) -> np.ndarray | None:
    """Energy per frame of a trajectory (pymatgen or a stored binary one), if it carries them."""
    if is_reference(traj):
        with open_trajectory(traj) as reader:
            return reader.energies()
    return trajectory_energies(traj)


def recorded_frame_spacing_fs(trajectory: Any, default_fs: float) -> float:
    """Return the time between stored frames that the trajectory itself records, else ``default_fs``.

    A binary trajectory records it (``time_step_fs``), and so does a VASP Trajectory parsed by
    atomate2 (POTIM: every ionic step, as stores made before VASP frames were thinned to every
    NBLOCK steps hold); an MLIP Trajectory records none (``default_fs``, the stage's time step x
    trajectory interval, applies). The recorded value wins, so a run stored one way is never
    analysed with the spacing of the other.
    """
    if is_reference(trajectory):
        return float(trajectory["time_step_fs"])
    if isinstance(trajectory, dict):
        step = trajectory.get("time_step")
    else:
        step = getattr(trajectory, "time_step", None)
    return float(step) if step else float(default_fs)


def _frame_chunks(
    chunks: list[Any], skip_frames: int
) -> tuple[int, list[str], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """``(n_frames, species, chunks of frames)`` of joined MD parts, read a chunk at a time.

    As :func:`concatenate_chunks` (``skip_frames`` off the first part, each later part's first
    frame dropped), but a stored binary part is read in chunks of frames, never whole.
    """
    sizes, species, in_memory = [], None, {}
    for k, part in enumerate(chunks):
        if is_reference(part):
            n, names = int(part["n_frames"]), list(part["species"])
        else:
            in_memory[k] = trajectory_arrays(part)
            n, names = len(in_memory[k][0]), in_memory[k][2]
        sizes.append(n - (skip_frames if k == 0 else 1))
        species = species or names

    def frames() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k, part in enumerate(chunks):
            start = skip_frames if k == 0 else 1
            if k in in_memory:
                frac, lat, _names = in_memory.pop(k)
                yield frac[start:], (lat[start:] if lat.ndim == 3 else lat)
            else:
                with open_trajectory(part) as reader:
                    yield from reader.chunks(start)

    return sum(max(0, n) for n in sizes), list(species or []), frames()


def concatenate_chunks(
    trajectories: list[Trajectory | dict], skip_frames: int = 0, every: int = 1
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Join MD chunks into one run (each later chunk's first frame repeats the previous last one).

    ``skip_frames`` are dropped from the start of the first chunk only; ``every`` keeps every
    N-th frame of the joined run (a stored binary part is read a chunk at a time).
    """
    _n, species, frames = _frame_chunks(trajectories, skip_frames)
    fracs, lats = [], []
    at = 0
    for frac, lattice in frames:
        pick = slice((-at) % every, None, every)
        kept = np.asarray(frac[pick], dtype=float)
        fracs.append(kept)
        lats.append(
            np.asarray(lattice[pick], dtype=float)
            if lattice.ndim == 3
            else np.repeat(np.asarray(lattice, dtype=float)[None], len(kept), axis=0)
        )
        at += len(frac)
    lattice_all = np.concatenate(lats)
    if np.allclose(lattice_all, lattice_all[0]):
        lattice_all = lattice_all[0]
    return np.concatenate(fracs), lattice_all, species


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
    frame_interval_fs = recorded_frame_spacing_fs(chunks[0], frame_interval_fs)
    if any(is_reference(c) for c in chunks):  # binary trajectories: streamed, memory bounded
        n_frames, symbols, frames = _frame_chunks(chunks, skip_frames)
        result = diffusion_from_chunks(
            frames,
            n_frames,
            symbols,
            species,
            frame_interval_fs,
            temperature_K,
            fit_start=fit_start,
            fit_end=fit_end,
        )
        # the health check looks at (at most) 2,000 evenly spread frames and every energy
        stride = max(1, n_frames // 2000)
        frac, lattice, _ = concatenate_chunks(chunks, skip_frames, every=stride)
        frame_fs = frame_interval_fs * stride
    else:
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
        stride, frame_fs = 1, frame_interval_fs
    out = result.as_dict()
    energies = [frame_energies(t) for t in chunks]
    joined = None
    if all(e is not None for e in energies):
        joined = np.concatenate([e[(skip_frames if k == 0 else 1) :] for k, e in enumerate(energies)])  # type: ignore[index]
    from pymatgen.core import Composition

    out["n_atoms"] = len(symbols)
    out["formula"] = Composition("".join(symbols)).formula.replace(" ", "")
    out["health"] = md_health(
        frac, lattice, list(symbols), frame_fs, None if joined is None else joined[::stride]
    )
    return out


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
    fit_d, fit_s = arrhenius_fits(ok)
    return {**out, "diffusivity": fit_d.as_dict(), "conductivity_T": fit_s.as_dict()}


@job
def freeze_species(structure: Structure, species: list[str], engine: str = "mlip") -> Structure:
    """Return ``structure`` with every atom of ``species`` held fixed during MD (study B).

    Study B's "frozen species" runs hold Na, NH2 or BH4 in place. The constraint is carried as
    site properties that each engine's input writer understands: ``selective_dynamics`` (False for
    frozen atoms) becomes ASE ``FixAtoms`` for the MLIP and the ``Selective dynamics`` block of the
    VASP POSCAR (honoured by IBRION 0 MD); for CP2K, ``fix`` ("XYZ") becomes
    ``MOTION/CONSTRAINT/FIXED_ATOMS`` through pymatgen's CP2K input set.

    A polyanion name (``BH4``, ``NH2``, ... as in :data:`superionic.analysis.rotation.UNITS`)
    freezes each centre with the ligands bonded to it, so ``[BH4]`` leaves the H of NH2 free.

    Raises
    ------
    ValueError
        When none of ``species`` is present.
    """
    frozen = frozen_indices(structure, species)
    if not frozen:
        raise ValueError(
            f"frozen_species {species}: none of these elements or units is in {structure.composition.formula}"
        )
    out = structure.copy()
    out.add_site_property("selective_dynamics", [[i not in frozen] * 3 for i in range(len(structure))])
    if engine == "cp2k":
        out.add_site_property("fix", ["XYZ" if i in frozen else "" for i in range(len(structure))])
    return out


#: centre-ligand distance (A) within which a ligand belongs to its polyanion, by ligand
_UNIT_BOND_A = {"H": 1.5, "S": 2.6, "Cl": 3.0, "O": 2.2}


def frozen_indices(structure: Structure, species: list[str]) -> set[int]:
    """Return the indices of the atoms of ``species``: elements, or whole units (centre + ligands)."""
    out: set[int] = set()
    for name in species:
        if name in UNITS:
            centre, ligand, _n = UNITS[name]
            cut = _UNIT_BOND_A.get(ligand, 2.5)
            for i, site in enumerate(structure):
                if site.specie.symbol == centre:
                    out.add(i)
                    out.update(
                        n.index for n in structure.get_neighbors(site, cut) if n.specie.symbol == ligand
                    )
        else:
            out.update(i for i, site in enumerate(structure) if site.specie.symbol == name)
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
    frame_interval_fs = recorded_frame_spacing_fs(trajectory, frame_interval_fs)
    frac, lattice, symbols = trajectory_arrays(trajectory)
    frac = frac[skip_frames:]
    if lattice.ndim == 3:
        lattice = lattice[skip_frames:]
    # A sweep's end member may lack a unit (Na3O(BH4) has no NH2): that unit is listed as absent
    # rather than failing the analysis of the units that are there.
    present = set(symbols)
    out: dict[str, Any] = {"temperature_K": temperature_K, "units": {}}
    out["absent_units"] = [name for name in units if UNITS[name][0] not in present]
    for name in units:
        centre, ligand, n = UNITS[name]
        if name in out["absent_units"]:
            continue
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
    from jobflow import CURRENT_JOB, Flow, Response

    done = result.get("rsd") is not None and result["rsd"] <= target_rsd  # None: nothing moved
    if done or chunk >= max_chunks:
        return {**result, "n_chunks": chunk, "rsd_converged": bool(done), "target_rsd": target_rsd}
    if last is None:
        last = {"structure": last_frame(trajectories[-1])}
    s = MDSettings.of(md_settings)
    if s.frozen_species:
        # the next run's input is written from this structure: carry the constraint (idempotent)
        last = {
            **last,
            "structure": freeze_species.original(last["structure"], s.frozen_species, engine),
        }
    meta = dict(CURRENT_JOB.job.metadata or {}) if CURRENT_JOB.job is not None else {}
    base = str(CURRENT_JOB.job.name) if CURRENT_JOB.job is not None else f"md {temperature_K:g} K"
    base = base.replace(" converge ", " md ").split(" chunk ")[0]
    part = s.production_chunks + chunk
    extension = get_engine(engine).extend_md(
        md_settings, temperature_K, last, f"{base} chunk {chunk + 1}", part
    )
    trajectory, new_last = extension.output["trajectory"], extension.output["last"]
    for j in jobs_of(extension):
        j.metadata = {**meta, **j.metadata, "stage": "md", "chunk": chunk + 1}
        j.config.expose_store = True  # binary trajectories: see stages.common.staged
    chunks = [*trajectories, trajectory]
    ana = analyze_diffusion(
        chunks, temperature_K, species, frame_interval_fs, skip_frames, fit_start, fit_end
    )
    ana.name = f"{base.replace(' md ', ' diffusion ')} chunk {chunk + 1}"
    ana.metadata = {**meta, "stage": "diffusion_chunk", "chunk": chunk + 1}
    ana.config.expose_store = True
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
    check.config.expose_store = True
    return Response(replace=Flow([extension, ana, check], output=check.output))


def __getattr__(name: str) -> Any:
    # cp2k_trajectory moved to the CP2K engine (engines import no stage); old imports keep working
    if name == "cp2k_trajectory":
        from superionic.engines.cp2k import cp2k_trajectory

        return cp2k_trajectory
    raise AttributeError(name)


def md_flow(
    spec: CampaignSpec,
    md: MDStage,
    structure: Any,
    prefix: str,
    quench: QuenchStage | None = None,
    crystal: Any = None,
    variant: str | None = None,
    /,
    **metadata: Any,
) -> Flow:
    """Build the md stage of one structure.

    Per temperature: MD, diffusion (extended to the RSD target), rotation and snapshot
    analyses; then the Arrhenius fit (the output; the diffusion results
    when fewer than two temperatures).

    Parameters
    ----------
    spec, md
        The campaign and its md stage.
    structure : Structure or reference
        The MD start (a relaxed ordering, or a quenched glass).
    prefix : str
        Job-name prefix, e.g. ``Li6PS5Cl #0``.
    quench : QuenchStage, optional
        The campaign's quench stage: snapshots of the MD at its ``snapshot_temperature_K``.
    crystal : Structure or reference, optional
        The crystal the snapshots are compared with.
    variant : str, optional
        ``quench 1200 K #0`` for a glass (its jobs report as their own system).
    **metadata
        Tags for every job (campaign, system, ordering).
    """
    from jobflow import Flow

    engine, settings = engine_for(spec, md)
    meta = {**metadata, "variant": variant}
    s = MDSettings.of(settings)
    interval, skip = engine.md_frames(settings)
    frame_fs = s.timestep_fs * interval
    jobs: list[Any] = []
    start = structure
    if md.frozen_species:
        frozen = freeze_species(structure, md.frozen_species, engine.name)
        frozen.name = f"{prefix} freeze {'+'.join(md.frozen_species)}"
        jobs.append(staged(frozen, "md", **meta))
        start = frozen.output
    analyses = []
    for temp in md.temperatures_K:
        run = engine.md(start, settings, temp, f"{prefix} md {temp:g} K")
        jobs.append(staged(run, "md", **meta, temperature_K=temp))
        trajectory, last = run.output["trajectory"], run.output["last"]
        ana = analyze_diffusion(
            trajectory,
            temperature_K=temp,
            species=md.species,
            frame_interval_fs=frame_fs,
            skip_frames=skip,
            fit_start=md.fit_start,
            fit_end=md.fit_end,
        )
        ana.name = f"{prefix} diffusion {temp:g} K"
        if md.target_rsd is None:
            jobs.append(staged(ana, "diffusion", **meta, temperature_K=temp))
            analyses.append(ana.output)
        else:
            jobs.append(staged(ana, "diffusion_chunk", **meta, temperature_K=temp))
            conv = converge_diffusion(
                ana.output,
                trajectory if isinstance(trajectory, list) else [trajectory],
                settings,
                temp,
                md.species,
                frame_fs,
                skip,
                md.fit_start,
                md.fit_end,
                md.target_rsd,
                md.max_chunks,
                engine=engine.name,
                last=last,
            )
            conv.name = f"{prefix} converge {temp:g} K"
            jobs.append(staged(conv, "diffusion", **meta, temperature_K=temp))
            analyses.append(conv.output)
        if quench is not None and quench.snapshot_temperature_K == temp:
            from superionic.stages.quench import analyze_snapshots

            snaps = analyze_snapshots(
                trajectory,
                f"{variant or 'crystal'} {temp:g} K snapshots",
                quench.center,
                list(quench.ligands),
                quench.cutoff_A,
                quench.shape,
                max(1, round(quench.snapshot_every_ps * 1000 / frame_fs)),
                skip,
                temp,
                crystal,
            )
            snaps.name = f"{prefix} structure {temp:g} K snapshots"
            jobs.append(staged(snaps, "structure", **meta, temperature_K=temp))
        if md.rotation_units:
            rot = analyze_rotation(
                trajectory,
                temperature_K=temp,
                units=list(md.rotation_units),
                frame_interval_fs=frame_fs,
                skip_frames=skip,
                cation=md.species,
            )
            rot.name = f"{prefix} rotation {temp:g} K"
            jobs.append(staged(rot, "rotation", **meta, temperature_K=temp))
    output: Any = analyses
    if len(md.temperatures_K) >= 2:
        arr = fit_arrhenius(analyses)
        arr.name = f"{prefix} arrhenius"
        jobs.append(staged(arr, "arrhenius", **meta))
        output = arr.output
    return Flow(jobs, output=output, name=f"{prefix} md")
