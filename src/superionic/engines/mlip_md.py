"""MLIP molecular dynamics that resumes from checkpoints and reruns bit for bit.

:class:`ResumableMDMaker` is atomate2's ``ForceFieldMDMaker`` (same fields, same task document)
with what long MLIP runs on shared machines need:

* **Checkpoints**: every ``checkpoint_every_steps`` steps the run writes positions, momenta,
  cell, the step count, the trajectory frames so far and the integrator/thermostat state
  (Nose-Hoover variables, MTK chain and barostat, the Langevin random generator) to
  ``md_checkpoint.npz``. A rerun of the same job with the same settings continues from the last
  checkpoint, with the temperature schedule at the right step, and returns the complete,
  continuous trajectory. The checkpoint lives in ``$SUPERIONIC_CHECKPOINT_DIR/<job uuid>/`` when
  that variable is set (FireWorks reruns start in a new launch folder), else in the job's folder
  (the local runner's ``<store>/jobs/<job uuid>``, stable across reruns because job uuids are
  fingerprints). It carries a fingerprint of the maker's settings and the input structure: one
  written with other settings is ignored (and replaced). A finished run deletes it.
* **Reproducibility**: stochastic thermostats (Langevin, Andersen, Bussi) get a random
  generator seeded from ``mb_velocity_seed`` (ASE otherwise draws from numpy's unseeded global
  generator, so two runs with the same seed differed). The task document's ``tags`` say
  whether the run is reproducible and whether (and from which step) it was resumed.
* **Triangular cells**: ASE's ``NPT`` (the ``nose-hoover`` preset) needs an upper-triangular
  cell; atomate2 rotates the cell into that form without moving the atoms, which scrambles any
  cell that is not triangular already (pymatgen's hexagonal cells, monoclinic ones). Here the
  atoms rotate with the cell.
* **MTK temperature ramps**: atomate2 ramps the MTK NpT thermostat by setting ``_temperature_K``,
  which the thermostat never reads (it keeps ``kT`` of the first step), so an NpT run with a ramp
  ran entirely at the start temperature. Here the chain's ``kT`` follows the schedule.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from ase import units
from ase.md.md import MolecularDynamics
from ase.md.melchionna import MelchionnaNPT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from atomate2.ase.md import DynamicsPresets, MDEnsemble, _valid_dynamics
from atomate2.ase.schemas import AseResult
from atomate2.ase.utils import TrajectoryObserver
from atomate2.forcefields.jobs import forcefield_job
from atomate2.forcefields.md import ForceFieldMDMaker
from monty.json import jsanitize
from pymatgen.core import Molecule, Structure
from pymatgen.io.ase import AseAtomsAdaptor

if TYPE_CHECKING:
    from ase import Atoms

logger = logging.getLogger(__name__)

#: Environment variable naming a folder for checkpoints, one sub-folder per job uuid.
CHECKPOINT_ENV = "SUPERIONIC_CHECKPOINT_DIR"
CHECKPOINT_NAME = "md_checkpoint.npz"
_FORMAT = 1
#: Second element of the thermostat's seed sequence, so its noise is not the velocity draw's.
_THERMOSTAT_STREAM = 1
#: TrajectoryObserver lists saved with each checkpoint (the frames so far).
_OBSERVER_LISTS = ("energies", "forces", "stresses", "magmoms", "atom_positions", "cells", "velocities")
_OBSERVER_SCALARS = ("temperatures",)
#: Dynamics attributes that are not integrator state (references to other objects, step counters
#: handled separately, output files).
_NOT_STATE = {"atoms", "observers", "optimizable", "trajectory", "logfile", "comm", "nsteps", "max_steps"}


def checkpoint_path() -> Path:
    """Return where the running MD job keeps its checkpoint.

    ``$SUPERIONIC_CHECKPOINT_DIR/<job uuid>/md_checkpoint.npz`` when the variable is set and a
    jobflow job is running (a FireWorks rerun starts in a new launch folder but keeps the job's
    uuid), else ``md_checkpoint.npz`` in the current folder.
    """
    from jobflow import CURRENT_JOB

    root = os.environ.get(CHECKPOINT_ENV)
    job = CURRENT_JOB.job
    if root and job is not None:
        key = job.uuid if job.index == 1 else f"{job.uuid}-{job.index}"
        return Path(root) / key / CHECKPOINT_NAME
    return Path.cwd() / CHECKPOINT_NAME


def set_temperature(dyn: MolecularDynamics, temperature_K: float) -> None:
    """Set the target temperature of an ASE dynamics object mid-run.

    ASE's MTK Nose-Hoover chain classes have no ``set_temperature``; their thermostat and
    barostat each hold ``kT`` from construction. atomate2 only sets ``_temperature_K`` on them,
    which nothing reads, so the chain's ``kT`` is updated here too (masses Q and W keep their
    initial values, as in a restart at the new temperature with the same damping times).
    """
    if hasattr(dyn, "_temperature_K"):
        dyn._temperature_K = temperature_K
        kT = units.kB * temperature_K
        if hasattr(dyn, "_kT"):
            dyn._kT = kT
        for part in ("_thermostat", "_barostat"):
            if hasattr(getattr(dyn, part, None), "_kT"):
                getattr(dyn, part)._kT = kT
    else:
        dyn.set_temperature(temperature_K=temperature_K)  # type: ignore[attr-defined]


def _dynamics_state(dyn: MolecularDynamics) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """Split a dynamics object's state into arrays, JSON scalars and names that cannot be saved.

    Generic over ASE's integrators (their state is plain attributes: numbers, arrays, a numpy
    random generator, and for the MTK classes thermostat/barostat objects holding the same),
    so every thermostat the MD stage offers is covered without per-class code.
    """
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    unsaved: list[str] = []

    def walk(obj: object, prefix: str, depth: int) -> None:
        for key, value in vars(obj).items():
            if key in _NOT_STATE:
                continue
            path = prefix + key
            if isinstance(value, np.ndarray) and value.dtype != object:
                arrays[path] = value.copy()
            elif isinstance(value, np.generic):
                scalars[path] = value.item()
            elif value is None or isinstance(value, bool | int | float | str):
                scalars[path] = value
            elif isinstance(value, np.random.Generator):
                scalars[path] = {"bit_generator_state": value.bit_generator.state}
            elif depth == 0 and type(value).__module__.startswith("ase.md"):
                walk(value, path + ".", depth + 1)
            elif not callable(value) and not isinstance(value, tuple | list):
                unsaved.append(path)

    walk(dyn, "", 0)
    return arrays, scalars, unsaved


def _resolve(obj: object, path: str) -> tuple[object, str]:
    *parents, name = path.split(".")
    for p in parents:
        obj = getattr(obj, p)
    return obj, name


def _restore_dynamics(dyn: MolecularDynamics, arrays: dict[str, np.ndarray], scalars: dict[str, Any]) -> None:
    for path, value in arrays.items():
        owner, name = _resolve(dyn, path)
        setattr(owner, name, np.array(value))
    for path, value in scalars.items():
        owner, name = _resolve(dyn, path)
        if isinstance(value, dict) and "bit_generator_state" in value:
            getattr(owner, name).bit_generator.state = value["bit_generator_state"]
        else:
            setattr(owner, name, value)


@dataclass
class ResumableMDMaker(ForceFieldMDMaker):
    """atomate2's ``ForceFieldMDMaker`` with checkpoints, resume and seeded thermostat noise.

    Why a subclass that re-implements ``run_ase``: atomate2's ``AseMDMaker.run_ase`` builds the
    atoms, initial velocities, dynamics and observers inside one function and runs all
    ``n_steps`` at once, with no hook to restore a state, attach an observer or pass a random
    generator; the steps here follow it line by line otherwise (same schedules, defaults,
    observer and result), so the task document is the one atomate2 builds.

    Parameters
    ----------
    checkpoint_every_steps : int
        Write a checkpoint every this many steps (0: never). See the module docstring.
    binary_trajectory : bool
        Store the trajectory as a binary trajectory in the campaign's store (float32 positions,
        read in chunks: :mod:`superionic.trajectory_store`); the task document's
        ``objects["trajectory"]`` is then its reference. False keeps atomate2's pymatgen
        Trajectory blob.
    """

    checkpoint_every_steps: int = 500
    binary_trajectory: bool = True

    @forcefield_job
    def make(self, structure: Structure | Molecule, prev_dir: str | Path | None = None) -> Any:
        """Run the MD (atomate2's ``make``); then move its trajectory into a binary trajectory.

        atomate2 builds the task document from the in-memory trajectory (ionic steps, final
        energy); the frames are then written to the store's binary trajectories and the
        document keeps their reference, so the analyses read them a chunk at a time.
        """
        doc = ForceFieldMDMaker.make.original(self, structure, prev_dir)
        from jobflow import CURRENT_JOB

        from superionic.trajectory_store import backend_for, store_arrays

        backend = None if CURRENT_JOB.store is None else backend_for(CURRENT_JOB.store)
        if not self.binary_trajectory or backend is None or not doc.objects:
            return doc
        key = next((k for k in doc.objects if getattr(k, "value", k) == "trajectory"), None)
        if key is None or doc.objects[key] is None:
            return doc
        from superionic.analysis.md_health import trajectory_energies
        from superionic.analysis.trajectory_io import from_pymatgen_trajectory

        traj = doc.objects[key]
        arrays = from_pymatgen_trajectory(traj)
        time_step = float(self.time_step or 1.0) * self.traj_interval  # the observer's stride
        doc.objects[key] = store_arrays(
            backend,
            arrays.frac_coords,
            arrays.lattices,
            arrays.species,
            float(time_step),
            trajectory_energies(traj),
            {"engine": "mlip", "job": str(getattr(CURRENT_JOB.job, "uuid", ""))},
        )
        return doc

    def _fingerprint(self, mol_or_struct: Structure | Molecule) -> str:
        """Hash of the settings and the input that determine the trajectory."""
        maker = self.as_dict()
        for key in ("name", "checkpoint_every_steps", "binary_trajectory", "tags", "verbose", "@version"):
            maker.pop(key, None)
        text = json.dumps(
            jsanitize(
                {"format": _FORMAT, "maker": maker, "input": mol_or_struct.as_dict()},
                strict=True,
                enum_values=True,
                allow_bson=False,
            ),
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def _dynamics_class(self) -> type[MolecularDynamics]:
        """Return the ASE class for ``dynamics`` (atomate2's lookup)."""
        if not isinstance(self.dynamics, str):
            return cast("type[MolecularDynamics]", self.dynamics)  # an ASE class given explicitly
        self.dynamics = self.dynamics.lower()
        if self.dynamics not in _valid_dynamics[self.ensemble]:
            raise ValueError(
                f"{self.dynamics} thermostat not available for {self.ensemble.value}; available: "
                + ", ".join(sorted(_valid_dynamics[self.ensemble]))
            )
        module, name = DynamicsPresets[
            f"{self.ensemble.value}_{self.dynamics.replace('-', '_')}"
        ].value.rsplit(".", 1)
        return getattr(import_module(module), name)

    def run_ase(self, mol_or_struct: Structure | Molecule, prev_dir: str | Path | None = None) -> AseResult:
        """Run (or resume) the MD with ASE; see :class:`ResumableMDMaker`.

        Parameters
        ----------
        mol_or_struct : Structure or Molecule
            Start configuration (site property ``velocities`` is used when present).
        prev_dir : str or Path, optional
            Unused, as in atomate2.

        Returns
        -------
        AseResult
            Final structure, full trajectory (including the frames before a resume), folder and
            wall time (summed over the interrupted and the resumed parts).
        """
        fingerprint = self._fingerprint(mol_or_struct)
        # atomate2's helpers below mutate these fields; put them back afterwards so that a
        # second call on the same maker (and its fingerprint) sees the same settings
        mutated = ("ase_md_kwargs", "dynamics", "temperature", "pressure")
        saved_fields = {k: copy.deepcopy(getattr(self, k)) for k in mutated}
        try:
            return self._run(mol_or_struct, fingerprint)
        finally:
            for key, value in saved_fields.items():
                setattr(self, key, value)

    def _run(self, mol_or_struct: Structure | Molecule, fingerprint: str) -> AseResult:
        self._get_ensemble_schedule()
        self._get_ensemble_defaults()
        if self.time_step is None:
            has_h_isotope = any(element.Z == 1 for element in mol_or_struct.composition)
            self.time_step = 0.5 if has_h_isotope else 2.0
        dynamics = self._dynamics_class()
        atoms = mol_or_struct.to_ase_atoms()
        if issubclass(dynamics, MelchionnaNPT):
            # ASE's NPT needs an upper-triangular cell. standard_form() is a rotation: move the
            # atoms with it (atomate2 keeps the Cartesian positions, which scrambles the crystal)
            atoms.set_cell(atoms.cell.standard_form(form="upper")[0], scale_atoms=True)

        notes: list[str] = []
        initial_velocities = mol_or_struct.site_properties.get("velocities")
        if initial_velocities:
            atoms.set_velocities(initial_velocities)
        elif not np.isnan(self.t_schedule).any():
            MaxwellBoltzmannDistribution(
                atoms=atoms,
                temperature_K=self.t_schedule[0],
                rng=np.random.default_rng(seed=self.mb_velocity_seed),
            )
            if self.zero_linear_momentum:
                Stationary(atoms)
            if self.zero_angular_momentum:
                ZeroRotation(atoms)
        atoms.calc = self.calculator

        seed = self.mb_velocity_seed
        md_kwargs = dict(self.ase_md_kwargs or {})
        stochastic = "rng" in inspect.signature(dynamics.__init__).parameters
        if stochastic and md_kwargs.get("rng") is None:
            # ASE falls back to numpy's global, unseeded generator; a generator of our own is
            # seeded and its state goes into the checkpoint
            md_kwargs["rng"] = np.random.default_rng(
                None if seed is None else [int(seed), _THERMOSTAT_STREAM]
            )
        start = f"velocity seed {seed}" if seed is not None else "unseeded velocities"
        if initial_velocities:
            start = "velocities from the input structure"
        noise = f"{dynamics.__name__} noise seed [{seed}, {_THERMOSTAT_STREAM}]" if stochastic else "no noise"
        if seed is None and (stochastic or not initial_velocities):
            unseeded = f", {dynamics.__name__} noise unseeded" if stochastic else ""
            notes.append(f"not reproducible: no seed ({start}{unseeded})")
        else:
            notes.append(f"reproducible: {start}, {noise}")

        md_runner = dynamics(atoms=atoms, timestep=self.time_step * units.fs, **md_kwargs)
        observer = TrajectoryObserver(atoms, store_md_outputs=True)
        md_runner.attach(observer, interval=self.traj_interval)

        def set_schedule(dyn: Any = md_runner) -> None:
            if self.ensemble == MDEnsemble.nve:
                return
            set_temperature(dyn, float(self.t_schedule[dyn.nsteps]))
            if self.ensemble == MDEnsemble.nvt:
                return
            if "pressure_au" in md_kwargs:  # set_pressure is broken for NPTBerendsen
                dyn.pressure = self.p_schedule[dyn.nsteps] * 1e3 * units.bar
            else:
                dyn.set_stress(self.p_schedule[dyn.nsteps] * 1e3 * units.bar)

        md_runner.attach(set_schedule, interval=1)

        path = checkpoint_path()
        start_step, elapsed_before = 0, 0.0
        checkpoint = _read_checkpoint(path, fingerprint)
        if checkpoint is not None:
            start_step, elapsed_before, unrestored = _restore(checkpoint, atoms, md_runner, observer)
            notes.append(f"resumed from step {start_step} ({path})")
            if unrestored:
                notes.append(
                    "velocities continue but these dynamics variables restarted: " + ", ".join(unrestored)
                )
            logger.info("resuming MD from step %d of %d (%s)", start_step, self.n_steps, path)

        t_i = time.perf_counter()
        every = int(self.checkpoint_every_steps)
        if every > 0:

            def write_checkpoint(dyn: MolecularDynamics = md_runner) -> None:
                if 0 < dyn.nsteps < self.n_steps:
                    elapsed = elapsed_before + time.perf_counter() - t_i
                    _write_checkpoint(path, fingerprint, self.n_steps, dyn, atoms, observer, elapsed)

            # attached last: at a checkpoint step the frame and the temperature are already updated
            md_runner.attach(write_checkpoint, interval=every)

        with contextlib.redirect_stdout(sys.stdout if self.verbose else io.StringIO()):
            md_runner.run(steps=self.n_steps - start_step)
        t_f = time.perf_counter()

        if self.traj_file is not None:
            observer.save(filename=self.traj_file, fmt=self.traj_file_fmt)
        path.unlink(missing_ok=True)
        self.tags = [*(self.tags or []), *(f"md: {n}" for n in notes)]

        final = AseAtomsAdaptor.get_structure(
            atoms, cls=Structure if isinstance(mol_or_struct, Structure) else Molecule
        )
        trajectory = getattr(
            observer, "to_emmet_trajectory" if self.use_emmet_models else "to_pymatgen_trajectory"
        )(filename=None)
        return AseResult(  # type: ignore[call-arg]
            final_mol_or_struct=final,
            trajectory=trajectory,
            dir_name=os.getcwd(),
            elapsed_time=elapsed_before + t_f - t_i,
        )


def _write_checkpoint(
    path: Path,
    fingerprint: str,
    n_steps: int,
    dyn: MolecularDynamics,
    atoms: Atoms,
    observer: TrajectoryObserver,
    elapsed: float,
) -> None:
    """Write the checkpoint atomically (a temporary file renamed over the old one)."""
    dyn_arrays, dyn_scalars, unsaved = _dynamics_state(dyn)
    arrays = {
        "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(),
        "cell": np.array(atoms.get_cell()),
        **{f"obs.{k}": np.asarray(getattr(observer, k)) for k in _OBSERVER_LISTS},
        **{f"dyn.{k}": v for k, v in dyn_arrays.items()},
    }
    meta = {
        "format": _FORMAT,
        "fingerprint": fingerprint,
        "step": int(dyn.nsteps),
        "n_steps": int(n_steps),
        "dynamics": type(dyn).__name__,
        "dyn_scalars": dyn_scalars,
        "unsaved": unsaved,
        "observer": {
            "calc_kwargs": observer._calc_kwargs,
            **{k: [float(x) for x in getattr(observer, k)] for k in _OBSERVER_SCALARS},
        },
        "elapsed_s": elapsed,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """Return the checkpoint's contents, or None when absent, unreadable or from other settings."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {k: data[k] for k in data.files}
        meta = json.loads(str(content.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring unreadable MD checkpoint %s (%s); starting from step 0", path, exc)
        return None
    if meta.get("format") != _FORMAT or meta.get("fingerprint") != fingerprint:
        logger.warning(
            "ignoring MD checkpoint %s: written with other settings or input; starting from step 0", path
        )
        return None
    content["meta"] = meta
    return content


def _restore(
    checkpoint: dict[str, Any], atoms: Atoms, dyn: MolecularDynamics, observer: TrajectoryObserver
) -> tuple[int, float, list[str]]:
    """Put a checkpoint's state into freshly built atoms, dynamics and observer.

    Returns the step reached, the wall time already spent and the dynamics variables that could
    not be saved (they restart from their initial values).
    """
    meta = checkpoint["meta"]
    atoms.set_cell(checkpoint["cell"], scale_atoms=False)
    atoms.set_positions(checkpoint["positions"], apply_constraint=False)
    atoms.set_momenta(checkpoint["momenta"], apply_constraint=False)
    prefix = "dyn."
    dyn_arrays = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    _restore_dynamics(dyn, dyn_arrays, meta["dyn_scalars"])
    dyn.nsteps = int(meta["step"])
    if isinstance(dyn, MelchionnaNPT):
        # ASE's NPT refuses to continue when the atoms differ from its own coordinates q. With
        # FixAtoms (frozen species) they always do: q keeps integrating for the fixed atoms,
        # which the constraint holds in place. The uninterrupted run never checks past step 0,
        # and the state restored here is exactly its state, so skip the check likewise.
        dyn.have_the_atoms_been_changed = lambda: 0  # type: ignore[method-assign]
    for key in _OBSERVER_LISTS:
        setattr(observer, key, list(checkpoint[f"obs.{key}"]))
    for key in _OBSERVER_SCALARS:
        setattr(observer, key, list(meta["observer"][key]))
    observer._calc_kwargs = dict(meta["observer"]["calc_kwargs"])
    return int(meta["step"]), float(meta.get("elapsed_s", 0.0)), list(meta.get("unsaved", []))
