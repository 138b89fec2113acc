"""The one interface every engine implements, and the registry that names them.

Each engine (``vasp``, ``cp2k``, ``mlip``, ``abinit``, and any later one) is one module with one
:class:`Engine` subclass. Stage modules (:mod:`superionic.stages`) build their jobs only through
this interface, in atomate2's style: a method per stage kind returns a jobflow ``Flow`` whose
``output`` is declared, so a stage never needs to know which engine runs it. Adding an engine is
one module plus one entry in :data:`ENGINES` (or :func:`register_engine` from a plugin).

Engines know nothing of campaigns: they receive merged settings (a dict, validated against the
engine's typed model, see :mod:`superionic.engines.settings`), structures and names.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from superionic.errors import Problem, SpecError

if TYPE_CHECKING:
    from jobflow import Flow, Job
    from pymatgen.core import Structure


@dataclass(frozen=True)
class EngineEntry:
    """A registered engine: where its class lives and what it offers.

    Kept apart from the class so that validation and ``--help`` can answer "which engines run
    this stage" without importing every engine (atomate2's VASP and CP2K modules take seconds).
    """

    #: ``"package.module:Class"``
    target: str
    #: stage kinds it builds (``order`` and ``hull`` ride on ``relax``)
    stages: frozenset[str]
    #: stage kinds whose inputs ``superionic inputs`` writes
    writes: tuple[str, ...] = ()


ENGINES: dict[str, EngineEntry] = {
    "mlip": EngineEntry(
        "superionic.engines.mlip:MLIPEngine",
        frozenset({"order", "relax", "hull", "md", "quench"}),
        ("relax", "md"),
    ),
    "vasp": EngineEntry(
        "superionic.engines.vasp:VaspEngine",
        frozenset({"order", "relax", "finetune", "hull", "md", "quench", "nmr"}),
        ("relax", "md"),
    ),
    "cp2k": EngineEntry(
        "superionic.engines.cp2k:Cp2kEngine",
        frozenset({"order", "relax", "finetune", "hull", "md", "quench", "nmr"}),
        ("relax", "static", "md"),
    ),
    "abinit": EngineEntry("superionic.engines.abinit:AbinitEngine", frozenset({"nmr"})),
}


def engines_for(stage: str) -> list[str]:
    """Return the registered engines that build ``stage``, sorted."""
    return sorted(name for name, entry in ENGINES.items() if stage in entry.stages)


@dataclass(frozen=True)
class SystemView:
    """What an engine's :meth:`Engine.check` may look at of one system (no campaign objects)."""

    #: how a problem names the system, e.g. ``systems[0] (Li6PS5Cl)``
    label: str
    #: the input cell
    structure: Any
    #: elements of the final structures (rigid units' ligands included)
    elements: frozenset[str]


class EngineStageError(SpecError):
    """An engine was asked for a stage kind it does not offer."""


class Engine:
    """Base of every engine: what it can run, its checks, and one Flow-building method per stage kind.

    Subclasses set :attr:`name`, :attr:`stages`, :attr:`install_hint` and override the methods
    of the stage kinds they offer; the others raise :class:`EngineStageError`.

    Every Flow returned has a declared ``output``:

    ``relax``
        ``{"structure", "energy"}``, plus ``entry`` from engines whose entries carry the data
        energy corrections need (VASP's ``ComputedStructureEntry``).
    ``md`` / ``extend_md``
        ``{"trajectory", "last"}``: the production trajectory (a list for chained parts) and
        ``{"structure", "dir_name"?}`` of the run's end (what :meth:`extend_md` continues).
    ``quench`` / ``density``
        The final structure.
    ``nmr``
        ``{"cs", "efg"}``: what :func:`superionic.stages.nmr.collect_nmr` reads for each mode
        (a run folder, or a result dict), None for a mode not run.
    """

    name: ClassVar[str] = ""
    #: what to do when :meth:`available` says no
    install_hint: ClassVar[str] = ""

    # The stage methods below wrap the engine module's own job builders, found by name:
    #   relax_maker(settings) -> atomate2 Maker
    #   md_jobs(settings, T, structure, name) -> (jobs, trajectory, last)
    #   extension_jobs(settings, T, last, name, part) -> (jobs, trajectory, last)
    #   quench_jobs(settings, melt_K, structure, name, seed=) -> (jobs, final structure)
    #   density_maker(settings, melt_K, name, method) -> MD maker of the density step
    # An engine module without one of them does not offer that stage kind (or overrides the method).
    def builder(self, name: str) -> Any:
        """Return the engine module's job builder ``name`` (see above), or None."""
        return getattr(sys.modules[type(self).__module__], name, None)

    def md_frames(self, settings: dict[str, Any]) -> tuple[int, int]:
        """Return how a production trajectory's frames sit on the MD steps.

        Returns
        -------
        tuple of int
            ``(steps between frames, frames of the temperature ramp at its start)``. Default
            (MLIP): every ``trajectory_interval`` steps, the ramp inside the same run.
        """
        from superionic.engines.settings import MDSettings

        s = MDSettings.of(settings)
        return s.trajectory_interval, -(-s.ramp_steps // s.trajectory_interval)

    # -- where it can run ------------------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        """Whether the engine can run on this machine, and the reason when it cannot."""
        return True, ""

    def check(self, stage: str, settings: dict[str, Any], systems: list[SystemView]) -> list[Problem]:
        """List what this engine cannot do as asked, before any job is built.

        Parameters
        ----------
        stage : str
            The stage kind.
        settings : dict
            The stage's merged settings (preset, then campaign values).
        systems : list of SystemView
            Every system; a problem about one system has its ``label`` as ``where``.

        Returns
        -------
        list of Problem
            ``where`` is a settings key (the loader names the stage field or preset key) or a
            system label. Empty when all is well.
        """
        return []

    def machine_check(self, stage: str, settings: dict[str, Any]) -> list[Problem]:
        """List what is known to fail with this engine on this machine (e.g. a cached verdict).

        Asked only by the commands that run or vet jobs here (``validate``, ``run``), never by
        ``status``, ``report``, ``rerun`` or a worker: a machine's past failure must not keep a
        user from reading or cleaning up a campaign. Same return as :meth:`check`.
        """
        return []

    def _unsupported(self, stage: str) -> EngineStageError:
        ok = ", ".join(sorted(self.stages))
        return EngineStageError.single(
            "engine", f"engine '{self.name}' has no '{stage}' stage", self.name, ok
        )

    # -- one method per stage kind -----------------------------------------------------------
    def relax(self, structure: Any, settings: dict[str, Any], name: str) -> Flow:
        """Relax ``structure``; output ``{"structure", "energy"}`` (and ``entry``, see above)."""
        job = self._maker_job("relax", settings, structure, name)
        return self.flow([job], self.relax_output(job), name)

    def static(self, structure: Any, settings: dict[str, Any], name: str) -> Job:
        """Return one single-point job (energy, forces, stress); its output is the task document."""
        return self._maker_job("static", settings, structure, name)

    def _maker_job(self, kind: str, settings: dict[str, Any], structure: Any, name: str) -> Job:
        """Return the job of the engine module's ``<kind>_maker`` on ``structure``, named ``name``."""
        make_maker = self.builder(f"{kind}_maker")
        if make_maker is None:
            raise self._unsupported(kind)
        maker = make_maker(settings)
        maker.name = name
        return maker.make(structure)

    def relax_output(self, job: Job) -> dict[str, Any]:
        """Return what the hull needs of a relax job: the structure and the total energy (eV)."""
        return {"structure": job.output.structure, "energy": job.output.output.energy}

    def md(self, structure: Any, settings: dict[str, Any], temperature_K: float, name: str) -> Flow:
        """MD at one temperature (ramp, then production); output ``{"trajectory", "last"}``."""
        md_jobs = self.builder("md_jobs")
        if md_jobs is None:
            raise self._unsupported("md")
        jobs, trajectory, last = md_jobs(settings, temperature_K, structure, name)
        return self.flow(jobs, {"trajectory": trajectory, "last": last}, name)

    def extend_md(
        self, settings: dict[str, Any], temperature_K: float, last: dict[str, Any], name: str, part: int
    ) -> Flow:
        """One more production run continuing ``last``; output ``{"trajectory", "last"}``."""
        extension_jobs = self.builder("extension_jobs")
        if extension_jobs is None:
            raise self._unsupported("md")
        jobs, trajectory, new_last = extension_jobs(settings, temperature_K, last, name, part)
        return self.flow(jobs, {"trajectory": trajectory, "last": new_last}, name)

    def quench(
        self, structure: Any, settings: dict[str, Any], melt_K: float, name: str, seed: int = 0
    ) -> Flow:
        """Heat to ``melt_K``, hold, cool back; output: the final structure."""
        quench_jobs = self.builder("quench_jobs")
        if quench_jobs is None:
            raise self._unsupported("quench")
        jobs, final = quench_jobs(settings, melt_K, structure, name, seed=seed)
        return self.flow(jobs, final, name)

    def density(
        self, structure: Any, settings: dict[str, Any], melt_K: float, name: str, method: str, strain: float
    ) -> Flow:
        """Run the density step at ``melt_K`` (``npt`` or ``mpmorph``); output: the structure.

        ``npt``: the engine's NpT MD maker runs once. ``mpmorph``: atomate2's MPMorph
        ``EquilibriumVolumeMaker`` runs its NVT maker at strains -``strain``, 0, +``strain``,
        fits a P-V equation of state and returns the structure at zero pressure.
        """
        density_maker = self.builder("density_maker")
        if density_maker is None:
            raise self._unsupported("quench")
        maker = density_maker(settings, melt_K, name, method)
        if method == "npt":
            job = maker.make(structure)
            return self.flow([job], job.output.structure, f"{name} density")
        from atomate2.common.flows.mpmorph import EquilibriumVolumeMaker

        eos = EquilibriumVolumeMaker(md_maker=maker, name=f"{name} density", initial_strain=float(strain))
        job = eos.make(structure)
        return self.flow([job], job.output["structure"], f"{name} density")

    def nmr(self, structure: Any, settings: dict[str, Any], label: str) -> Flow:
        """NMR runs of one structure; output ``{"cs", "efg"}`` (see class docstring).

        ``settings`` holds the nmr stage's ``isotopes``, ``shielding`` and ``efg`` too.
        """
        raise self._unsupported("nmr")

    def write_inputs(
        self, structure: Structure, stage: str, settings: dict[str, Any], out_dir: Path
    ) -> list[Path]:
        """Write the input files a ``stage`` job would run with, without running it; return them."""
        raise self._unsupported(stage)

    @property
    def stages(self) -> frozenset[str]:
        """Stage kinds this engine builds (from its :data:`ENGINES` entry)."""
        return ENGINES[self.name].stages

    @property
    def writable(self) -> frozenset[str]:
        """Stage kinds :meth:`write_inputs` handles (from its :data:`ENGINES` entry)."""
        return frozenset(ENGINES[self.name].writes)

    # -- helpers for subclasses ------------------------------------------------------------------
    @staticmethod
    def flow(jobs: list[Job | Flow], output: Any, name: str) -> Flow:
        """Return ``Flow(jobs, output, name)`` (jobflow imported here, not at module import)."""
        from jobflow import Flow

        return Flow(jobs, output=output, name=name)


_INSTANCES: dict[str, Engine] = {}


def register_engine(name: str, entry: EngineEntry) -> None:
    """Make an engine available under ``name`` (e.g. a plugin's second MLIP)."""
    ENGINES[name] = entry
    _INSTANCES.pop(name, None)


def get_engine(name: str) -> Engine:
    """Return the engine registered as ``name``.

    Raises
    ------
    SpecError
        For a name no engine is registered under.
    """
    if name not in _INSTANCES:
        if name not in ENGINES:
            raise SpecError.single("engine", "unknown engine", name, ", ".join(sorted(ENGINES)))
        module, cls = ENGINES[name].target.split(":")
        _INSTANCES[name] = getattr(importlib.import_module(module), cls)()
    return _INSTANCES[name]
