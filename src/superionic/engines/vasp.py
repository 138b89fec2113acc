"""VASP engine: preset -> atomate2 ``RelaxMaker`` with a pymatgen MP input set, run under custodian.

The papers' settings live in ``configs/engines/<preset>.yaml`` under ``vasp:``. A preset may fix
the k-point mesh by a reciprocal-space spacing (``kpoint_spacing_per_A``: n_i = ceil(|b_i| / s),
|b_i| including 2 pi), so that the same preset gives study A's 1x2x2 Gamma mesh on the 2x1x1
argyrodite cell and a consistent density on any other cell.

VASP itself is licensed and not installed here: its command comes from ``SUPERIONIC_VASP_CMD`` or
atomate2's ``VASP_CMD`` setting (tests replay real outputs with :mod:`superionic.testing`).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomate2.vasp.sets.core import MDSetGenerator
from pymatgen.io.vasp import Kpoints
from pymatgen.io.vasp.sets import MPNMRSet, MPRelaxSet, MPStaticSet

from superionic.engines.base import Engine
from superionic.engines.settings import VaspMDSettings, VaspNMRSettings, VaspRelaxSettings

if TYPE_CHECKING:
    from jobflow import Flow


@dataclass
class SpacingRelaxSet(MPRelaxSet):
    """MPRelaxSet whose Gamma-centred mesh follows a fixed reciprocal-space spacing (1/A)."""

    kpoint_spacing_per_A: float | None = None

    @property
    def kpoints(self) -> Kpoints | None:  # type: ignore[override]
        """Return the mesh from the spacing, or the MP default when no spacing is set."""
        if self.kpoint_spacing_per_A is None or self.structure is None:
            return super().kpoints
        return Kpoints.gamma_automatic(kpoint_mesh(self.structure.lattice, self.kpoint_spacing_per_A))


def kpoint_mesh(lattice: Any, spacing_per_A: float) -> tuple[int, int, int]:
    """Return n_i = max(1, ceil(|b_i| / spacing)) with |b_i| the reciprocal lengths (2 pi / A)."""
    b = lattice.reciprocal_lattice.abc
    return tuple(max(1, math.ceil(x / spacing_per_A - 1e-9)) for x in b)  # type: ignore[return-value]


def input_set(settings: dict[str, Any], stage: str) -> MPRelaxSet | MPStaticSet:
    """Return the pymatgen input set for a stage from the merged preset settings.

    Keys: ``incar`` (INCAR overrides), ``kpoint_spacing_per_A`` (optional), ``base``
    (``mp_relax`` default, or ``mp_static``).
    """
    s = VaspRelaxSettings.of(settings)
    if s.base == "mp_static" or stage == "static":
        return MPStaticSet(user_incar_settings=dict(s.incar))
    return SpacingRelaxSet(user_incar_settings=dict(s.incar), kpoint_spacing_per_A=s.kpoint_spacing_per_A)


def relax_maker(settings: dict[str, Any]) -> Any:
    """Return atomate2's ``RelaxMaker`` (custodian with its default VASP handlers)."""
    from atomate2.vasp.jobs.core import RelaxMaker

    return RelaxMaker(
        name="vasp relax",
        input_set_generator=input_set(settings, "relax"),
        run_vasp_kwargs={"vasp_cmd": vasp_command()},
    )


def static_maker(settings: dict[str, Any]) -> Any:
    """Return atomate2's VASP ``StaticMaker``: ``MPStaticSet`` with the preset section's INCAR overrides."""
    from atomate2.vasp.jobs.core import StaticMaker

    return StaticMaker(
        name="vasp static",
        input_set_generator=input_set({**settings, "base": "mp_static"}, "static"),
        run_vasp_kwargs={"vasp_cmd": vasp_command()},
    )


def vasp_command() -> str:
    """Return the command that runs VASP (``SUPERIONIC_VASP_CMD`` or atomate2's ``VASP_CMD``)."""
    from atomate2 import SETTINGS

    return os.environ.get("SUPERIONIC_VASP_CMD") or SETTINGS.VASP_CMD


def vasp_available(command: str | None = None) -> tuple[bool, str]:
    """Whether VASP can run here, with the reason when not.

    ``command`` is the command a job will run (default: :func:`vasp_command`).
    """
    from superionic.engines.guard import executable_of

    full = os.path.expandvars(command or vasp_command())
    exe = executable_of(full)
    if shutil.which(exe) is None:
        return False, (
            f"VASP executable '{exe}' (from '{full}') is not on PATH: set SUPERIONIC_VASP_CMD "
            "(e.g. 'srun vasp_std'), submit to a cluster with VASP, or use engine mlip/cp2k"
        )
    return True, exe


def md_run_vasp_kwargs() -> dict[str, Any]:
    """Return custodian settings of every VASP MD run: atomate2's MD handlers, with this campaign's command.

    atomate2's ``MDMaker`` drops the handlers that do not apply to MD (e.g. non-converging ionic
    steps); passing only ``vasp_cmd`` would lose that choice, so its defaults are kept. The wall
    time is set where the run starts (:mod:`superionic.engines.guard`): the time left in the
    SLURM allocation or ``resources.walltime_s``.
    """
    from atomate2.vasp.jobs.md import MDMaker

    return {**MDMaker().run_vasp_kwargs, "vasp_cmd": vasp_command()}


def md_input_set(settings: dict[str, Any], start_K: float, end_K: float, nsteps: int) -> Any:
    """Return atomate2's ``MDSetGenerator`` for one MD segment (VASP: IBRION 0, TEBEG -> TEEND).

    Keys: ``ensemble`` (``nvt``: MDALGO 2 Nose-Hoover; ``npt``: MDALGO 3 Parrinello-Rahman with
    Langevin, which needs a VASP built with it), ``timestep_fs``, ``friction_per_ps`` (atoms,
    LANGEVIN_GAMMA), ``lattice_friction_per_ps`` (LANGEVIN_GAMMA_L), ``lattice_mass_amu`` (PMASS),
    ``incar`` (further INCAR settings, e.g. ISPIN 1, ENCUT).
    """
    s = VaspMDSettings.of(settings)
    incar = dict(s.incar)
    # what a long MD run should not write (the VASP wiki's advice for runs of many 1000 steps):
    # no WAVECAR/CHGCAR, OUTCAR at NWRITE 1 (energy, stress, forces each step; no eigenvalues),
    # positions to XDATCAR every trajectory_interval steps (NBLOCK), the frames the analyses read
    # (superionic.engines.vasp_md streams them into a binary trajectory).
    for key, value in (("LWAVE", False), ("LCHARG", False), ("NWRITE", 1), ("NBLOCK", s.trajectory_interval)):
        incar.setdefault(key, value)
    kpts = Kpoints.gamma_automatic((1, 1, 1))  # AIMD supercells: Gamma point
    if s.ensemble == "npt":
        incar.setdefault("LANGEVIN_GAMMA_L", s.lattice_friction_per_ps)
        incar.setdefault("PMASS", s.lattice_mass_amu)
    cls = FrictionMDSet if s.ensemble == "npt" else MDSetGenerator
    extra = {"friction_per_ps": s.friction_per_ps} if s.ensemble == "npt" else {}
    return cls(
        ensemble=s.ensemble,
        start_temp=float(start_K),
        end_temp=float(end_K),
        nsteps=int(nsteps),
        time_step=s.timestep_fs,
        user_incar_settings=incar,
        user_kpoints_settings=kpts,
        **extra,
    )


@dataclass
class FrictionMDSet(MDSetGenerator):
    """MDSetGenerator whose LANGEVIN_GAMMA (one value per species) is a set friction (1/ps)."""

    friction_per_ps: float = 10.0

    @property
    def incar_updates(self) -> dict:
        """Return atomate2's MD updates with LANGEVIN_GAMMA set to the friction for every species."""
        updates = super().incar_updates
        if "LANGEVIN_GAMMA" in updates:
            updates["LANGEVIN_GAMMA"] = [self.friction_per_ps] * len(updates["LANGEVIN_GAMMA"])
        return updates


def md_jobs(
    settings: dict[str, Any], temperature_K: float, structure: Any, name: str
) -> tuple[list, Any, Any]:
    """VASP MD at one temperature: an optional ramp (TEBEG start -> TEEND target) then production.

    Returns
    -------
    tuple
        ``(jobs, trajectory reference(s) of the production run, last)``; ``last`` holds the
        ``structure`` and ``dir_name`` references of the final run (for :func:`extension_jobs`).
    """
    from superionic.engines.vasp_md import StreamingMDMaker

    s = VaspMDSettings.of(settings)
    jobs = []
    current = structure
    if s.ramp_steps:
        maker = StreamingMDMaker(
            name=f"{name} ramp",
            input_set_generator=md_input_set(settings, s.start_temperature_K, temperature_K, s.ramp_steps),
            run_vasp_kwargs=md_run_vasp_kwargs(),
        )
        ramp_job = maker.make(current)
        ramp_job.metadata["segment"] = "ramp"
        jobs.append(ramp_job)
        current = ramp_job.output.structure
    prod, chunks = s.production_steps, s.production_chunks
    prev_dir = jobs[-1].output.dir_name if jobs else None
    trajectories = []
    for k in range(chunks):
        steps = prod // chunks + (1 if k < prod % chunks else 0)
        label = name if chunks == 1 else f"{name} part {k + 1}/{chunks}"
        segment = "production" if chunks == 1 else f"production_{k + 1}"
        prod_job, trajectory = production_job(
            settings, temperature_K, current, prev_dir, steps, label, segment
        )
        jobs.append(prod_job)
        trajectories.append(trajectory)
        current, prev_dir = prod_job.output.structure, prod_job.output.dir_name
    last = {"structure": current, "dir_name": prev_dir}
    return jobs, trajectories[0] if chunks == 1 else trajectories, last


def production_job(
    settings: dict[str, Any],
    temperature_K: float,
    structure: Any,
    prev_dir: Any,
    nsteps: int,
    name: str,
    segment: str,
) -> tuple[Any, Any]:
    """One VASP NVT/NpT production run at ``temperature_K`` that continues the run in ``prev_dir``.

    atomate2 copies the previous run's outputs; its CONTCAR (positions and velocities) becomes
    the new POSCAR, so chained runs are one continuous trajectory (atomate2's multi-MD pattern).
    With ``prev_dir`` None the run starts from ``structure`` with velocities drawn at TEBEG.

    Returns
    -------
    tuple
        ``(job, trajectory reference)``.
    """
    from superionic.engines.vasp_md import StreamingMDMaker

    maker = StreamingMDMaker(
        name=name,
        input_set_generator=md_input_set(settings, temperature_K, temperature_K, nsteps),
        run_vasp_kwargs=md_run_vasp_kwargs(),
    )
    job = maker.make(structure, prev_dir=prev_dir)
    job.metadata["segment"] = segment
    return job, job.output.vasp_objects["trajectory"]


def extension_jobs(
    settings: dict[str, Any], temperature_K: float, last: dict[str, Any], name: str, part: int
) -> tuple[list, Any, dict[str, Any]]:
    """One more production run continuing ``last`` (``structure``, ``dir_name``): for target_rsd.

    The run has the length of one production part (``production_steps / production_chunks``)
    and is labelled ``production_<part>``.

    Returns
    -------
    tuple
        ``(jobs, trajectory reference, {"structure", "dir_name"} references of the new end)``.
    """
    s = VaspMDSettings.of(settings)
    steps = math.ceil(s.production_steps / s.production_chunks)
    job, traj = production_job(
        settings, temperature_K, last["structure"], last.get("dir_name"), steps, name, f"production_{part}"
    )
    return [job], traj, {"structure": job.output.structure, "dir_name": job.output.dir_name}


@dataclass
class SpacingNMRSet(MPNMRSet):
    """pymatgen's MPNMRSet (``cs``: LCHIMAG; ``efg``: LEFG, QUAD_EFG from the isotopes) on a k-spacing.

    The Gamma-centred mesh may follow a fixed k-spacing like the relax presets.
    """

    kpoint_spacing_per_A: float | None = None

    @property
    def kpoints(self) -> Kpoints | None:  # type: ignore[override]
        """Return the mesh from the spacing, or pymatgen's default."""
        if self.kpoint_spacing_per_A is None or self.structure is None:
            return super().kpoints
        return Kpoints.gamma_automatic(kpoint_mesh(self.structure.lattice, self.kpoint_spacing_per_A))


def nmr_makers(settings: dict[str, Any], isotopes: list[str]) -> dict[str, Any]:
    """atomate2 VASP makers for the NMR stage: ``{"cs": ..., "efg": ...}`` (two separate runs).

    Keys: ``cs_inputs``/``efg_inputs`` (each: ``incar`` overrides and ``kpoint_spacing_per_A``).
    """
    from atomate2.vasp.jobs.base import BaseVaspMaker

    s = VaspNMRSettings.of(settings)
    makers = {}
    for mode, sub in (("cs", s.cs_inputs), ("efg", s.efg_inputs)):
        gen = SpacingNMRSet(
            mode=mode,
            isotopes=list(isotopes),
            user_incar_settings=dict(sub.incar),
            kpoint_spacing_per_A=sub.kpoint_spacing_per_A,
        )
        makers[mode] = BaseVaspMaker(
            name=f"vasp nmr {mode}", input_set_generator=gen, run_vasp_kwargs={"vasp_cmd": vasp_command()}
        )
    return makers


def quench_jobs(
    settings: dict[str, Any], melt_K: float, structure: Any, name: str, seed: int = 0
) -> tuple[list, Any]:
    """VASP melt-quench: three NVT MD runs (heat start -> T_melt, hold, quench T_melt -> start).

    ISPIN 1 and the Gamma point, as study C; TEBEG/TEEND per segment. Replicas after the first
    (``seed`` > 0) set ``RANDOM_SEED`` so that their initial velocities differ. Returns the jobs
    and the final structure reference.
    """
    from superionic.engines.vasp_md import StreamingMDMaker

    s = VaspMDSettings.of(settings)
    dt, start = s.timestep_fs, s.start_temperature_K
    incar = {"ISPIN": 1, **s.incar}
    if seed:
        incar["RANDOM_SEED"] = [int(seed) * 7919 + 1, 0, 0]
    md_settings = {**settings, "ensemble": "nvt", "incar": incar}
    jobs, current = [], structure
    for seg, t0, t1, ps in (
        ("heat", start, melt_K, s.heat_ps),
        ("hold", melt_K, melt_K, s.hold_ps),
        ("cool", melt_K, start, s.quench_ps),
    ):
        nsteps = max(1, round(ps * 1000 / dt))
        maker = StreamingMDMaker(
            name=f"{name} {seg}",
            input_set_generator=md_input_set(md_settings, t0, t1, nsteps),
            run_vasp_kwargs=md_run_vasp_kwargs(),
        )
        j = maker.make(current)
        j.metadata["segment"] = seg
        jobs.append(j)
        current = j.output.structure
    return jobs, current


def density_maker(settings: dict[str, Any], melt_K: float, name: str, method: str) -> Any:
    """Return the VASP MD maker of the density step at T_melt (``density_ps`` long, ISPIN 1).

    ``method`` ``npt``: an NpT Langevin run (MDALGO 3, needs a VASP built for it); ``mpmorph``:
    the NVT runs of atomate2's EOS volume search (see :func:`superionic.stages.quench.density_jobs`).
    """
    from atomate2.vasp.jobs.md import MDMaker

    s = VaspMDSettings.of(settings)
    steps = max(1, round(s.density_ps * 1000 / s.timestep_fs))
    incar = {"ISPIN": 1, **s.incar}
    ensemble = "npt" if method == "npt" else "nvt"
    gen = md_input_set({**settings, "ensemble": ensemble, "incar": incar}, melt_K, melt_K, steps)
    return MDMaker(
        name=f"{name} density {method}", input_set_generator=gen, run_vasp_kwargs=md_run_vasp_kwargs()
    )


class VaspEngine(Engine):
    """VASP through atomate2's makers and custodian; inputs from pymatgen sets and the presets."""

    name = "vasp"
    install_hint = "an installed VASP (set SUPERIONIC_VASP_CMD, e.g. 'srun vasp_std'), or engine mlip/cp2k"

    def md_frames(self, settings: dict[str, Any]) -> tuple[int, int]:
        """Return a frame every NBLOCK steps (XDATCAR, see :mod:`.vasp_md`); the ramp is its own run."""
        s = VaspMDSettings.of(settings)
        return int(s.incar.get("NBLOCK", s.trajectory_interval)), 0

    def available(self) -> tuple[bool, str]:
        """See :func:`vasp_available`."""
        return vasp_available()

    def relax_output(self, job: Any) -> dict[str, Any]:
        """Return the structure, the energy and the entry (MP2020 corrections need its data)."""
        return {**super().relax_output(job), "entry": job.output.entry}

    def nmr(self, structure: Any, settings: dict[str, Any], label: str) -> Flow:
        """Separate LCHIMAG (``cs``) and LEFG (``efg``) runs; output: their run folders."""
        s = VaspNMRSettings.of(settings)
        makers = nmr_makers(settings, list(s.isotopes))
        jobs, out = [], {"cs": None, "efg": None}
        for mode, wanted in (("cs", s.shielding), ("efg", s.efg)):
            if not wanted:
                continue
            maker = makers[mode]
            maker.name = f"{label} nmr {mode}"
            job = maker.make(structure)
            job.metadata["stage"] = f"nmr_{mode}"
            jobs.append(job)
            out[mode] = job.output.dir_name
        return self.flow(jobs, out, f"{label} nmr runs")

    def write_inputs(self, structure: Any, stage: str, settings: dict[str, Any], out_dir: Path) -> list[Path]:
        """INCAR, KPOINTS, POSCAR and POTCAR.spec (a real POTCAR with ``PMG_VASP_PSP_DIR`` set)."""
        if stage not in self.writable:
            raise self._unsupported(stage)
        out_dir.mkdir(parents=True, exist_ok=True)
        if stage == "md":
            temp = float(settings.get("temperature_K", 300.0))  # `superionic inputs --set temperature_K=...`
            vis = md_input_set(settings, temp, temp, int(settings.get("production_steps", 1000)))
        else:
            vis = input_set(settings, stage)
        use_spec = not os.environ.get("PMG_VASP_PSP_DIR")
        vis.get_input_set(structure, potcar_spec=use_spec).write_input(out_dir)
        return sorted(p for p in out_dir.iterdir() if p.is_file())
