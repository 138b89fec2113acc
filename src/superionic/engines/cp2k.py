"""CP2K engine: preset -> atomate2 CP2K makers with basis sets and pseudopotentials from the local data.

atomate2's CP2K input sets name basis sets by content hash and expect pymatgen's CP2K data
files; superionic instead reads the files that ship with the CP2K installation
(``/usr/share/cp2k`` on Debian, or ``$CP2K_DATA_DIR``): by default ``DZVP-MOLOPT-SR-GTH`` from
``BASIS_MOLOPT`` with ``GTH-PBE`` from ``GTH_POTENTIALS``, PBE, GPW, non-spin-polarised, no
smearing. The preset's ``cp2k:`` section sets the plane-wave cutoff (``cutoff_Ry``), the
k-point density, SCF and geometry tolerances and any raw ``override`` of the CP2K input tree.

CP2K runs through atomate2's ``run_cp2k`` (custodian with its CP2K handlers); the command comes
from ``SUPERIONIC_CP2K_CMD``, else ``cp2k.psmp`` or ``cp2k`` found on PATH.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from atomate2.cp2k.sets.base import Cp2kInputGenerator, recursive_update
from atomate2.cp2k.sets.core import CellOptSetGenerator, MDSetGenerator, RelaxSetGenerator, StaticSetGenerator
from jobflow import job
from monty.io import zopen
from pymatgen.core import Structure
from pymatgen.core.trajectory import Trajectory
from pymatgen.io.cp2k.inputs import BasisFile, PotentialFile
from pymatgen.io.vasp import Kpoints

from superionic.engines.base import Engine, SystemView
from superionic.engines.cp2k_frames import HA_PER_BOHR_TO_EV_PER_A, read_cells, xyz_frames
from superionic.engines.settings import Cp2kMDSettings, Cp2kNMRSettings, Cp2kRelaxSettings
from superionic.engines.vasp import kpoint_mesh
from superionic.errors import Problem, SpecError

if TYPE_CHECKING:
    from jobflow import Flow

DEFAULT_BASIS = Cp2kRelaxSettings().basis  # the defaults are written once, in the settings model
DEFAULT_POTENTIAL = Cp2kRelaxSettings().potential


def cp2k_data_dir() -> Path:
    """Return the CP2K data folder (``$CP2K_DATA_DIR`` or ``/usr/share/cp2k``)."""
    return Path(os.environ.get("CP2K_DATA_DIR", "/usr/share/cp2k"))


def cp2k_command() -> str:
    """Return the command that runs CP2K (``SUPERIONIC_CP2K_CMD``, else the first CP2K on PATH)."""
    if os.environ.get("SUPERIONIC_CP2K_CMD"):
        return os.environ["SUPERIONIC_CP2K_CMD"]
    for exe in ("cp2k.psmp", "cp2k.ssmp", "cp2k.popt", "cp2k.sopt", "cp2k"):
        if shutil.which(exe):
            return exe
    return "cp2k.psmp"


#: custodian checks a running CP2K every second (its default, 10 s, made a 2-s single point take
#: 20 s); handlers still look every 30 polls. How often it polls is not part of a job's identity
#: (superionic.fingerprint.RUN_ONLY_CUSTODIAN)
CUSTODIAN_POLLING = {"polling_time_step": 1, "monitor_freq": 30}


def run_cp2k_kwargs(**extra: Any) -> dict[str, Any]:
    """Return atomate2's ``run_cp2k`` settings: this machine's command, custodian polling each second."""
    return {"cp2k_cmd": cp2k_command(), **extra, "custodian_kwargs": dict(CUSTODIAN_POLLING)}


def cp2k_available(command: str | None = None) -> tuple[bool, str]:
    """Whether CP2K (``command``, default :func:`cp2k_command`) and its data are installed."""
    from superionic.engines.guard import executable_of

    exe = executable_of(command or cp2k_command())
    if shutil.which(exe) is None:
        return False, (
            f"CP2K executable '{exe}' is not on PATH: install it (Debian: apt-get install cp2k) or set "
            "SUPERIONIC_CP2K_CMD"
        )
    if not (cp2k_data_dir() / "BASIS_MOLOPT").is_file():
        return False, f"CP2K data folder {cp2k_data_dir()} has no BASIS_MOLOPT: set CP2K_DATA_DIR"
    return True, exe


@lru_cache(maxsize=8)
def _basis_file(path: str) -> BasisFile:
    return BasisFile.from_file(path)


@lru_cache(maxsize=8)
def _potential_file(path: str) -> PotentialFile:
    return PotentialFile.from_file(path)


def basis_and_potential(
    elements: list[str],
    basis: str = DEFAULT_BASIS,
    potential: str = DEFAULT_POTENTIAL,
    basis_file: str = "BASIS_MOLOPT",
    potential_file: str = "GTH_POTENTIALS",
) -> dict[str, dict[str, Any]]:
    """Pick the basis set and pseudopotential of each element from the CP2K data files.

    Parameters
    ----------
    elements : list of str
        Element symbols.
    basis, potential : str
        Basis-set name and pseudopotential family (the valence suffix ``-qN`` is chosen per element).
    basis_file, potential_file : str
        File names inside :func:`cp2k_data_dir`.

    Returns
    -------
    dict
        ``{element: {"basis": GaussianTypeOrbitalBasisSet, "potential": GthPotential, "aux_basis": None}}``.

    Raises
    ------
    SpecError
        Naming every element that has no such basis or potential in the files.

    """
    data = cp2k_data_dir()
    bfile, pfile = data / basis_file, data / potential_file
    problems: list[Problem] = []
    for f in (bfile, pfile):
        if not f.is_file():
            problems.append(Problem("cp2k", "CP2K data file not found", str(f), "set CP2K_DATA_DIR"))
    if problems:
        raise SpecError(problems)
    bases, pots = _basis_file(str(bfile)).objects, _potential_file(str(pfile)).objects
    out: dict[str, dict[str, Any]] = {}
    for el in elements:
        b = [o for o in bases if o.element.symbol == el and o.name == basis]
        p = [o for o in pots if o.element.symbol == el and (o.name or "").startswith(f"{potential}-q")]
        if not b:
            problems.append(Problem(f"cp2k.basis.{el}", f"no basis set '{basis}' for {el}", str(bfile), ""))
        if not p:
            problems.append(
                Problem(f"cp2k.potential.{el}", f"no pseudopotential '{potential}' for {el}", str(pfile), "")
            )
        if b and p:
            # the basis is built for one valence count: take the potential with the same count
            nval = getattr(getattr(b[0], "info", None), "electrons", None)
            same = [o for o in p if nval is None or sum(o.n_elecs.values()) == nval]
            out[el] = {"basis": b[0], "potential": (same or p)[0], "aux_basis": None}
    if problems:
        raise SpecError(problems)
    return out


def _input_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Translate preset keys into atomate2/pymatgen ``DftSet`` settings."""
    s = Cp2kRelaxSettings.of(settings)
    user: dict[str, Any] = {
        "xc_functionals": [s.functional],
        "spin_polarized": s.spin_polarized,
        "smearing": s.smearing,
        "cutoff": s.cutoff_Ry,
        "rel_cutoff": s.rel_cutoff_Ry,
        "eps_scf": s.eps_scf,
        "max_scf": s.max_scf,
        "ot": s.ot,
    }
    override = dict(s.override)
    max_force = s.max_force_Ha_per_bohr
    if s.fmax_ev_per_A is not None:  # the relax stage's, in CP2K's Ha/bohr
        max_force = s.fmax_ev_per_A / HA_PER_BOHR_TO_EV_PER_A
    max_iter = s.max_steps if s.max_steps is not None else s.max_iter
    if max_force is not None or max_iter is not None:
        geo: dict[str, Any] = {}
        if max_force is not None:
            geo["MAX_FORCE"] = max_force
        if max_iter is not None:
            geo["MAX_ITER"] = max_iter
        override = recursive_update(override, {"MOTION": {"GEO_OPT": geo, "CELL_OPT": geo}})
    if override:
        user["override_default_params"] = override
    return user


@dataclass
class _LocalDataMixin:
    """Resolve basis sets and potentials from the local CP2K data for each structure."""

    basis: str = DEFAULT_BASIS
    potential: str = DEFAULT_POTENTIAL
    kpoint_spacing_per_A: float | None = None
    user_input_settings: dict = field(default_factory=dict)

    def get_input_set(
        self, structure: Structure | None = None, prev_dir: Any = None, optional_files: Any = None
    ):  # type: ignore[no-untyped-def]
        """Return the input set with this structure's basis sets, potentials and k-mesh filled in."""
        if structure is not None:
            elements = sorted({sp.symbol for sp in structure.composition.elements})
            bp = basis_and_potential(elements, self.basis, self.potential)
            self.user_input_settings = {**self.user_input_settings, "basis_and_potential": bp}
            if self.kpoint_spacing_per_A:
                mesh = kpoint_mesh(structure.lattice, self.kpoint_spacing_per_A)
                # a 1x1x1 mesh is the Gamma point: no &KPOINTS, so OT stays available
                self.user_kpoints_settings = None if mesh == (1, 1, 1) else Kpoints.gamma_automatic(mesh)
        return super().get_input_set(structure, prev_dir, optional_files)  # type: ignore[misc]


@dataclass
class LocalStaticSet(_LocalDataMixin, StaticSetGenerator):
    """Single-point energy and forces (ENERGY_FORCE)."""


@dataclass
class LocalRelaxSet(_LocalDataMixin, RelaxSetGenerator):
    """Fixed-cell geometry optimisation (GEO_OPT, BFGS)."""


@dataclass
class LocalCellOptSet(_LocalDataMixin, CellOptSetGenerator):
    """Cell and positions optimisation (CELL_OPT, BFGS)."""


_PATCHED = False


def patch_rks_parsing() -> None:
    """Let atomate2 parse closed-shell (RKS) CP2K runs.

    atomate2 0.1.x's ``CalculationInput.cleanup_dft`` validator calls ``.upper()`` on every value
    of pymatgen's parsed ``dft`` block; an RKS run has integers, lists and dicts there and the
    parse fails (UKS runs pass only because their first value is the string "UKS"). We swap in
    the same check restricted to strings and rebuild the model (idempotent).
    """
    global _PATCHED
    if _PATCHED:
        return
    from atomate2.cp2k.schemas import calculation

    def cleanup_dft(cls: type, dft: dict) -> dict:
        if any(isinstance(v, str) and v.upper() == "UKS" for v in dft.values()):
            dft["UKS"] = True
        return dft

    model = calculation.CalculationInput
    decorator = model.__pydantic_decorators__.field_validators["cleanup_dft"]
    decorator.func = cleanup_dft.__get__(model)  # type: ignore[attr-defined]
    model.model_rebuild(force=True)
    from atomate2.cp2k.schemas import task

    for parent in (calculation.Calculation, task.TaskDocument):  # models embedding it
        parent.model_rebuild(force=True)
    _PATCHED = True


def input_generator(settings: dict[str, Any], stage: str) -> Cp2kInputGenerator:
    """Return the input-set generator of a stage (``relax`` or ``static``) from merged preset settings.

    Keys: ``basis``, ``potential``, ``cutoff_Ry``, ``rel_cutoff_Ry``, ``eps_scf``, ``max_scf``,
    ``ot``, ``smearing``, ``spin_polarized``, ``relax_cell`` (CELL_OPT rather than GEO_OPT),
    ``max_force_Ha_per_bohr``, ``max_iter``, ``kpoint_spacing_per_A`` (as for VASP: n_i =
    ceil(|b_i| / s); absent or a 1x1x1 result = Gamma only, which keeps the fast OT solver; any
    other mesh switches CP2K to diagonalisation), ``override`` (raw CP2K input tree merged last).
    """
    s = Cp2kRelaxSettings.of(settings)
    kwargs: dict[str, Any] = {
        "basis": s.basis,
        "potential": s.potential,
        "kpoint_spacing_per_A": s.kpoint_spacing_per_A,
        "user_input_settings": _input_settings(settings),
    }
    kpts = None  # Gamma only unless the spacing asks for more (set per structure)
    if stage == "static":
        gen: Cp2kInputGenerator = LocalStaticSet(**kwargs)
    elif s.relax_cell:
        gen = LocalCellOptSet(**kwargs)
    else:
        gen = LocalRelaxSet(**kwargs)
    gen.user_kpoints_settings = kpts
    return gen


def relax_maker(settings: dict[str, Any]) -> Any:
    """Return atomate2's CP2K ``CellOptMaker`` (or ``RelaxMaker`` with ``relax_cell: false``)."""
    from atomate2.cp2k.jobs.core import CellOptMaker, RelaxMaker

    patch_rks_parsing()
    gen = input_generator(settings, "relax")
    cls = CellOptMaker if isinstance(gen, LocalCellOptSet) else RelaxMaker
    return cls(
        name="cp2k relax",
        input_set_generator=gen,
        run_cp2k_kwargs=run_cp2k_kwargs(max_errors=3),
    )


def static_maker(settings: dict[str, Any]) -> Any:
    """Return atomate2's CP2K ``StaticMaker`` (a single point with forces and the stress tensor)."""
    from atomate2.cp2k.jobs.core import StaticMaker

    patch_rks_parsing()
    gen = input_generator(settings, "static")
    return StaticMaker(
        name="cp2k static",
        input_set_generator=gen,
        run_cp2k_kwargs=run_cp2k_kwargs(max_errors=3),
    )


@dataclass
class LocalMDSet(_LocalDataMixin, MDSetGenerator):
    """Born-Oppenheimer MD (RUN_TYPE MD) with the local basis sets; thermostat set by the preset.

    ``barostat`` (NpT runs): ``{"pressure_bar", "timecon_fs"}``, or ``"lattice_mass_amu"`` instead
    of ``"timecon_fs"`` (converted per structure by :func:`barostat_timecon_fs`); written as
    MOTION/MD/BAROSTAT with FORCE_EVAL/STRESS_TENSOR ANALYTICAL. ``langevin_gamma_per_fs``
    (LANGEVIN ensemble): MOTION/MD/LANGEVIN/GAMMA. Both are written with explicit units, before
    the preset's raw ``override``, which stays last.
    """

    barostat: dict[str, float] | None = None
    langevin_gamma_per_fs: float | None = None

    def get_input_set(
        self, structure: Structure | None = None, prev_dir: Any = None, optional_files: Any = None
    ):  # type: ignore[no-untyped-def]
        """Return the MD input set; repairs pymatgen's THERMOSTAT TYPE (a bare string, not a Keyword)."""
        from pymatgen.io.cp2k.inputs import Keyword

        iset = super().get_input_set(structure, prev_dir, optional_files)
        cp2k_input = iset.cp2k_input
        md = cp2k_input["MOTION"]["MD"]
        if "THERMOSTAT" in md.subsections:
            kw = md["THERMOSTAT"].keywords
            if isinstance(kw.get("TYPE"), str):
                kw["TYPE"] = Keyword("TYPE", kw["TYPE"])
        # pymatgen's activate_motion knows neither the barostat nor the Langevin friction
        extra: dict[str, Any] = {}
        if self.barostat is not None:
            timecon = self.barostat.get("timecon_fs")
            if timecon is None:
                temp = float(md["TEMPERATURE"].values[0])
                timecon = barostat_timecon_fs(cp2k_input.structure, self.barostat["lattice_mass_amu"], temp)
            extra["MOTION"] = {
                "MD": {
                    "BAROSTAT": {
                        "PRESSURE": Keyword("PRESSURE", float(self.barostat["pressure_bar"]), units="bar"),
                        "TIMECON": Keyword("TIMECON", round(float(timecon), 3), units="fs"),
                    }
                }
            }
            extra["FORCE_EVAL"] = {"STRESS_TENSOR": Keyword("STRESS_TENSOR", "ANALYTICAL")}
        if self.langevin_gamma_per_fs is not None:
            gamma = Keyword("GAMMA", float(self.langevin_gamma_per_fs), units="fs^-1")
            extra = recursive_update(extra, {"MOTION": {"MD": {"LANGEVIN": {"GAMMA": gamma}}}})
        if extra:
            cp2k_input.update(extra)
            cp2k_input.update(dict(self.user_input_settings.get("override_default_params", {})))
        return iset


def barostat_timecon_fs(structure: Structure, lattice_mass_amu: float, temperature_K: float) -> float:
    """CP2K barostat TIMECON (fs) whose cell inertia matches a Parrinello-Rahman lattice mass.

    VASP's PMASS ``W`` (amu) is the mass of the cell matrix ``h``: the cell's kinetic energy is
    ``W/2 tr(dh/dt^T dh/dt)``. CP2K's NpT (Martyna-Tobias-Klein) moves the log-strain ``eps``
    (``dh/dt = deps/dt h``) with a barostat mass derived from TIMECON ``tau``:
    ``(N_f + 3) k_B T tau^2 / 3`` per component for NPT_F, ``(N_f + 3) k_B T tau^2`` for NPT_I
    (CP2K ``init_barostat_variables``). Equal kinetic energy at equal strain rate for a cell of
    volume ``V`` (``tr(h h^T) ~ V^(2/3)`` per direction) gives, for both ensembles,
    ``tau = sqrt(3 W V^(2/3) / ((N_f + 3) k_B T))`` with ``N_f = 3 N - 3``.

    Parameters
    ----------
    structure : Structure
        The MD cell (``N`` atoms, volume ``V``).
    lattice_mass_amu : float
        The Parrinello-Rahman lattice mass (VASP PMASS), amu.
    temperature_K : float
        The ensemble temperature (CP2K's barostat temperature by default).

    Returns
    -------
    float
        TIMECON in fs.
    """
    from ase import units

    n_free = 3 * len(structure) - 3
    w = float(lattice_mass_amu) * structure.volume ** (2.0 / 3.0)  # amu A^2
    tau = np.sqrt(3.0 * w / ((n_free + 3) * units.kB * float(temperature_K)))  # ASE time units
    return float(tau / units.fs)


def md_jobs(
    settings: dict[str, Any], temperature_K: float, structure: Any, name: str
) -> tuple[list, Any, Any]:
    """CP2K MD at one temperature: stepwise heating (if ``ramp_steps``) then production.

    CP2K's NVT has no linear temperature ramp, so the ramp is run as ``ramp_segments`` (default 4)
    runs at temperatures evenly spaced from ``start_temperature_K`` to the target, each
    ``ramp_steps / ramp_segments`` steps. Thermostats: ``nose-hoover`` (NOSE, NVT) or ``langevin``
    (LANGEVIN ensemble, GAMMA = ``friction_per_ps`` / 1000 per fs, default 10/ps as for VASP).
    ``ensemble: npt`` (ramp and production): ENSEMBLE NPT_F (the whole cell, as VASP's
    Parrinello-Rahman and the MLIP's MTK barostat; ``npt_cell: isotropic`` gives NPT_I), Nose-Hoover
    particles, BAROSTAT PRESSURE = ``pressure_kbar`` (default 0) in bar, TIMECON =
    ``barostat_timecon_fs`` (default 1000 fs, CP2K's own default), or, when only
    ``lattice_mass_amu`` is set, the TIMECON of :func:`barostat_timecon_fs`; STRESS_TENSOR
    ANALYTICAL. Returns ``(jobs, production trajectory, last)``, ``last`` holding the final
    ``structure`` and ``dir_name`` references (for :func:`extension_jobs`).
    """
    s = Cp2kMDSettings.of(settings)
    jobs, current = [], structure
    ramp = s.ramp_steps
    if ramp:
        n_seg = s.ramp_segments
        for k, temp in enumerate(np.linspace(s.start_temperature_K, temperature_K, n_seg + 1)[:-1]):
            j = _md_maker(settings, float(temp), max(1, ramp // n_seg), f"{name} ramp {k + 1}/{n_seg}").make(
                current
            )
            j.metadata["segment"] = "ramp"
            jobs.append(j)
            current = j.output.structure
    prod_jobs, traj, last = _production(settings, temperature_K, current, s.production_steps, name)
    return jobs + prod_jobs, traj, last


def md_settings_problems(settings: dict[str, Any]) -> list[Problem]:
    """List what in merged CP2K MD settings CP2K cannot run as asked (``where``: the settings key).

    CP2K's LANGEVIN ensemble has no barostat and CP2K has no Berendsen thermostat: both are
    refused rather than replaced by another thermostat. Checked by the campaign loader and again
    when a maker is built.

    Parameters
    ----------
    settings : dict
        The MD stage's merged settings (preset ``cp2k.md`` section and stage fields).

    Returns
    -------
    list of Problem
        Empty when the settings can be written as CP2K input.
    """
    problems: list[Problem] = []
    thermostat = settings.get("thermostat", "nose-hoover")
    ensemble = settings.get("ensemble", "nvt")
    if thermostat not in ("nose-hoover", "langevin"):
        problems.append(
            Problem("thermostat", "CP2K has no such thermostat", thermostat, "nose-hoover or langevin")
        )
    elif thermostat == "langevin" and ensemble == "npt":
        problems.append(
            Problem(
                "thermostat",
                "CP2K's Langevin dynamics (ENSEMBLE LANGEVIN) has no barostat",
                thermostat,
                "nose-hoover with ensemble npt (NPT_F, Nose-Hoover particles), or ensemble nvt",
            )
        )
    if settings.get("npt_cell", "flexible") not in ("flexible", "isotropic"):
        problems.append(
            Problem(
                "npt_cell", "unknown NpT cell", settings["npt_cell"], "flexible (NPT_F) or isotropic (NPT_I)"
            )
        )
    for key in ("barostat_timecon_fs", "lattice_mass_amu", "friction_per_ps", "pressure_kbar"):
        if key not in settings:
            continue
        value = settings[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
        if not ok or (key != "pressure_kbar" and value <= 0):
            valid = "a number" if key == "pressure_kbar" else "a number > 0"
            problems.append(Problem(key, "not a valid value", value, valid))
    return problems


def _md_maker(settings: dict[str, Any], temp: float, nsteps: int, label: str) -> Any:
    """atomate2 CP2K MDMaker for ``nsteps`` at ``temp`` with the preset's thermostat."""
    from atomate2.cp2k.jobs.core import MDMaker

    patch_rks_parsing()
    problems = md_settings_problems(settings)
    if problems:
        raise SpecError(problems)
    s = Cp2kMDSettings.of(settings)
    motion: dict[str, Any] = {"temperature": float(temp), "timestep": s.timestep_fs, "nsteps": int(nsteps)}
    barostat, gamma = None, None
    if s.thermostat == "langevin":  # NVT only (NpT refused above)
        motion.update(ensemble="LANGEVIN")
        gamma = s.friction_per_ps * 1e-3  # CP2K's GAMMA is in 1/fs
    elif s.ensemble == "npt":
        motion.update(ensemble="NPT_I" if s.npt_cell == "isotropic" else "NPT_F", thermostat="NOSE")
        barostat = {"pressure_bar": s.pressure_kbar * 1000.0}
        if s.barostat_timecon_fs is not None or s.lattice_mass_amu is None:
            barostat["timecon_fs"] = s.barostat_timecon_fs or 1000.0  # CP2K's own default TIMECON
        else:
            barostat["lattice_mass_amu"] = s.lattice_mass_amu
    else:
        motion.update(ensemble="NVT", thermostat="NOSE")
    user = {**_input_settings(settings), "activate_motion": motion}
    gen = LocalMDSet(
        basis=s.basis,
        potential=s.potential,
        kpoint_spacing_per_A=s.kpoint_spacing_per_A,
        user_input_settings=user,
        barostat=barostat,
        langevin_gamma_per_fs=gamma,
    )
    gen.user_kpoints_settings = None
    # atomate2's CP2K trajectory parser miscounts frames (the initial one): read it ourselves
    return MDMaker(
        name=label,
        input_set_generator=gen,
        run_cp2k_kwargs=run_cp2k_kwargs(),
        task_document_kwargs={"store_trajectory": False},
    )


def _production(
    settings: dict[str, Any], temperature_K: float, structure: Any, nsteps: int, name: str
) -> tuple[list, Any, dict[str, Any]]:
    """Return a production run and the job reading its trajectory: ``(jobs, trajectory, last)``."""
    prod = _md_maker(settings, temperature_K, nsteps, name).make(structure)
    prod.metadata["segment"] = "production"
    traj = cp2k_trajectory(prod.output.dir_name, structure, Cp2kMDSettings.of(settings).timestep_fs)
    traj.name = f"{name} trajectory"
    return [prod, traj], traj.output, {"structure": prod.output.structure, "dir_name": prod.output.dir_name}


def extension_jobs(
    settings: dict[str, Any], temperature_K: float, last: dict[str, Any], name: str, part: int
) -> tuple[list, Any, dict[str, Any]]:
    """One more CP2K production run from the final structure in ``last`` (for target_rsd).

    Velocities are redrawn from a Maxwell-Boltzmann distribution at ``temperature_K`` (the
    atomate2 CP2K maker does not carry a restart file across runs); the positions continue. The
    run is ``production_steps`` long; ``part`` only labels it.

    Returns
    -------
    tuple
        ``(jobs, trajectory reference, {"structure", "dir_name"} references of the new end)``.
    """
    steps = Cp2kMDSettings.of(settings).production_steps
    jobs, traj, new_last = _production(settings, temperature_K, last["structure"], steps, name)
    jobs[0].metadata["segment"] = f"production_{part}"
    return jobs, traj, new_last


def quench_jobs(
    settings: dict[str, Any], melt_K: float, structure: Any, name: str, seed: int = 0
) -> tuple[list, Any]:
    """CP2K melt-quench: heat start -> T_melt, hold, cool T_melt -> start (NVT Nose-Hoover).

    CP2K's NVT has no linear temperature ramp, so each constant-rate ramp is run as
    ``quench_segments`` (default 4) consecutive runs whose temperatures step evenly to the
    ramp's end (heat: start + k dT, cool: T_melt - k dT), each ``1/quench_segments`` of the
    ramp's time. Closed shell (non-spin-polarised) and Gamma point as study C; replicas differ in
    CP2K's ``GLOBAL/SEED`` (initial velocities). Returns the jobs and the final structure reference.
    """
    s = Cp2kMDSettings.of(settings)
    dt, start, n_seg = s.timestep_fs, s.start_temperature_K, s.quench_segments
    override = recursive_update(dict(s.override), {"GLOBAL": {"SEED": 2000 + int(seed)}})
    md_settings = {
        **settings,
        "thermostat": "nose-hoover",
        "ensemble": "nvt",  # a preset's md `ensemble: npt` is for the md stage, not the quench
        "spin_polarized": False,
        "kpoint_spacing_per_A": None,
        "override": override,
    }
    plan: list[tuple[str, float, float]] = []  # (segment, temperature, ps)
    for seg, t0, t1, ps in (
        ("heat", start, melt_K, s.heat_ps),
        ("cool", melt_K, start, s.quench_ps),
    ):
        temps = np.linspace(t0, t1, n_seg + 1)[1:]
        plan += [(f"{seg} {k + 1}/{n_seg}", float(t), ps / n_seg) for k, t in enumerate(temps)]
        if seg == "heat":
            plan.append(("hold", float(melt_K), s.hold_ps))
    jobs, current = [], structure
    for seg, temp, ps in plan:
        j = _md_maker(md_settings, temp, max(1, round(ps * 1000 / dt)), f"{name} {seg}").make(current)
        j.metadata["segment"] = seg.split()[0]
        jobs.append(j)
        current = j.output.structure
    return jobs, current


@job
def cp2k_trajectory(dir_name: str, structure: Structure | dict, timestep_fs: float) -> Trajectory | dict:
    """Read the positions CP2K wrote (``*-pos-1.xyz``, every step) into a trajectory.

    Each frame's cell is read from CP2K's ``*-1.cell`` (one row per MD step, matched to the
    frame by its step number ``i =``), so an NpT run keeps its varying cell and volumes; a
    constant cell (NVT) gives a constant-lattice trajectory. Without a ``.cell`` file the input
    cell is used. Frame 0 is the initial configuration.

    Inside a campaign (a store exposed to the job) the frames are streamed, a chunk at a time,
    into a binary trajectory (:mod:`superionic.trajectory_store`) and its reference is returned;
    otherwise a pymatgen Trajectory.
    """
    from jobflow import CURRENT_JOB

    from superionic.trajectory_store import TrajectoryWriter, backend_for

    frames = Cp2kFrames(dir_name, structure)
    backend = None if CURRENT_JOB.store is None else backend_for(CURRENT_JOB.store)
    if backend is None:
        parts = list(frames.chunks())
        frac = np.concatenate([f for f, _ in parts])
        if frames.constant:
            return Trajectory(
                frames.symbols, frac, lattice=frames.lattice0, constant_lattice=True, time_step=timestep_fs
            )
        lattices = np.concatenate([lat for _, lat in parts])
        return Trajectory(
            frames.symbols, frac, lattice=lattices, constant_lattice=False, time_step=timestep_fs
        )
    meta = {"engine": "cp2k", "job": str(getattr(CURRENT_JOB.job, "uuid", ""))}
    lattice = frames.lattice0 if frames.constant else None
    with TrajectoryWriter(backend, frames.symbols, lattice, timestep_fs, meta=meta) as writer:
        for frac, lattices in frames.chunks():
            writer.append(frac, None if frames.constant else lattices)
        return writer.close()


class Cp2kFrames:
    """CP2K's ``*-pos-1.xyz`` (and ``*-1.cell``) of one run, read a chunk of frames at a time.

    Parameters
    ----------
    dir_name : str
        The run's folder (a ``host:`` prefix is dropped).
    structure : Structure or dict
        The run's input: atom count, and the cell when CP2K wrote no ``-1.cell``.
    chunk_frames : int
        Frames per chunk.
    """

    def __init__(self, dir_name: str, structure: Structure | dict, chunk_frames: int = 2000) -> None:
        from pathlib import Path

        from atomate2.utils.path import strip_hostname

        s = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
        self.n_atoms, self.chunk_frames = len(s), chunk_frames
        folder = Path(strip_hostname(str(dir_name)))
        path = next(iter(sorted(folder.glob("*-pos-1.xyz*"))), None)
        if path is None:
            raise FileNotFoundError(f"no CP2K *-pos-1.xyz trajectory in {folder}")
        self.path = path
        with zopen(path, "rt") as fh:
            head = [next(fh, "") for _ in range(2 + self.n_atoms)]
        self.symbols = [ln.split()[0] for ln in head[2:] if ln.strip()]
        self.lattice0 = s.lattice.matrix
        self.by_step: dict[int, np.ndarray] | None = None
        self.cell_path = next(iter(sorted(folder.glob("*-1.cell*"))), None)
        self.constant = True
        if self.cell_path is not None:
            self.by_step = read_cells(self.cell_path)
            cells = np.array([c.ravel() for c in self.by_step.values()])
            self.constant = bool(np.allclose(cells, cells[0]))
            self.lattice0 = cells[0].reshape(3, 3)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(frac (k, n, 3), lattices (k, 3, 3))`` of consecutive frames."""
        cart: list = []
        steps: list[int] = []
        for index, (step, _, _, values) in enumerate(xyz_frames(self.path)):
            cart.append(values)  # frame k is step k when CP2K wrote no "i ="
            steps.append(index if step is None else step)
            if len(cart) == self.chunk_frames:
                yield self._fractional(np.array(cart), steps)
                cart, steps = [], []
        if cart:
            yield self._fractional(np.array(cart), steps)

    def _fractional(self, cart: np.ndarray, steps: list[int]) -> tuple[np.ndarray, np.ndarray]:
        if self.by_step is None:
            lattices = np.repeat(self.lattice0[None], len(cart), axis=0)
        else:
            missing = [st for st in steps if st not in self.by_step]
            if missing:
                raise ValueError(
                    f"{self.cell_path} has no cell for MD step(s) {missing[:5]} of {self.path.name}"
                )
            lattices = np.array([self.by_step[st] for st in steps])
        return np.einsum("fai,fij->faj", cart, np.linalg.inv(lattices)), lattices


class Cp2kEngine(Engine):
    """CP2K (GPW/GAPW, local basis sets and potentials) through atomate2's CP2K makers."""

    name = "cp2k"
    install_hint = "an installed CP2K (apt-get install cp2k), or engine mlip"

    def md_frames(self, settings: dict[str, Any]) -> tuple[int, int]:
        """Return every MD step as a frame (``*-pos-1.xyz``); the ramp is a run of its own."""
        return 1, 0

    def available(self) -> tuple[bool, str]:
        """See :func:`cp2k_available`."""
        return cp2k_available()

    def check(self, stage: str, settings: dict[str, Any], systems: list[SystemView]) -> list[Problem]:
        """List what CP2K cannot run as asked.

        MD settings it has no input for; a density step before a quench; NMR cells too small
        for the Gamma point. A cached refusal of this CP2K's EFG is :meth:`machine_check`'s.
        """
        problems: list[Problem] = []
        if stage == "md":
            problems += md_settings_problems(settings)
        if stage == "quench" and settings.get("density", "none") != "none":
            problems.append(
                Problem(
                    "density",
                    "the density step runs on the mlip and vasp engines only",
                    settings["density"],
                    "none, or engine mlip/vasp for this stage",
                )
            )
        if stage == "nmr":
            min_cell = Cp2kNMRSettings.of(settings).min_cell_A
            for system in systems:
                s, label = system.structure, system.label
                if min(s.lattice.abc) < min_cell:
                    problems.append(
                        Problem(
                            label,
                            "CP2K NMR is Gamma-point only; this cell is too small "
                            f"(lengths {', '.join(f'{x:.2f}' for x in s.lattice.abc)} A)",
                            f"{min(s.lattice.abc):.2f} A",
                            f"a supercell with every length >= {min_cell:g} A (set `supercell`), "
                            "or engine vasp",
                        )
                    )
        return problems

    def machine_check(self, stage: str, settings: dict[str, Any]) -> list[Problem]:
        """Return a cached refusal of this CP2K's EFG (the EFG job runs the canary; see :mod:`.cp2k_nmr`)."""
        if stage != "nmr" or not settings.get("efg"):
            return []
        from superionic.engines.cp2k_nmr import cached_efg_verdict

        verdict = cached_efg_verdict()  # runs nothing
        if verdict is None or verdict[0]:
            return []
        valid = "efg: false with engine cp2k (shielding only), or engine vasp for the EFG"
        return [Problem("efg", verdict[1], True, valid)]

    def nmr(self, structure: Any, settings: dict[str, Any], label: str) -> Flow:
        """GAPW shielding in one job (its EFG is refused by the canary); output ``{"cs": result}``."""
        from superionic.engines.cp2k_nmr import cp2k_nmr

        s = Cp2kNMRSettings.of(settings)
        j = cp2k_nmr(structure, label, s.efg, s.min_cell_A, s.cutoff_Ry)
        j.name = f"{label} nmr cs (cp2k)"
        j.metadata["stage"] = "nmr_cs"
        return self.flow([j], {"cs": j.output, "efg": None}, f"{label} nmr runs")

    def write_inputs(self, structure: Any, stage: str, settings: dict[str, Any], out_dir: Path) -> list[Path]:
        """``cp2k.inp`` with the BASIS and POTENTIAL files it reads (from the local CP2K data)."""
        if stage not in self.writable:
            raise self._unsupported(stage)
        out_dir.mkdir(parents=True, exist_ok=True)
        if stage == "md":  # the input of one production run of the md stage, at temperature_K
            temp = float(settings.get("temperature_K", 300.0))
            gen: Any = _md_maker(settings, temp, int(settings.get("production_steps", 1000)), "md")
            gen = gen.input_set_generator
        else:
            gen = input_generator(settings, stage)
        gen.get_input_set(structure).write_input(out_dir, overwrite=True)
        return sorted(p for p in out_dir.iterdir() if p.is_file())
