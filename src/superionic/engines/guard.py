"""Check an engine where its job runs, and give VASP runs the time left in the allocation.

``superionic submit`` runs on a login node where VASP is usually not on PATH (the job script
loads it), so the engine cannot be required there. Each DFT job checks its engine when it starts
instead, and fails with one clear message naming the executable and the host.

atomate2 offers no hook before it starts VASP or CP2K, so within :func:`engine_checks` the
functions its makers call first and last (``write_vasp_input_set`` and ``run_vasp``, likewise for
CP2K, looked up in the module that calls them) are wrapped: the wrapper checks the engine, then
calls atomate2's function unchanged. For VASP it
also sets custodian's wall time, when the maker gives none, to the time left in the SLURM
allocation, so custodian stops VASP cleanly (STOPCAR; CONTCAR written) before the queue kills
it and a chained MD run continues from that CONTCAR. ABINIT runs through our own function, which
calls :func:`require_engine` itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class EngineUnavailableError(RuntimeError):
    """The engine a job needs cannot run on the machine the job runs on."""


#: OpenMP/BLAS thread variables (as superionic.dispatch.threads; engines do not import dispatch)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: Programs that start an MPI program (their own arguments come before it).
MPI_LAUNCHERS = frozenset({"srun", "mpirun", "mpiexec", "mpiexec.hydra", "aprun", "ibrun", "jsrun"})


def executable_of(command: str) -> str:
    """Return the program an engine command starts, past any MPI launcher and its options.

    ``srun -n 64 vasp_std`` -> ``vasp_std``: the last word that is not an option, a launcher or
    an option's number (one found on PATH is preferred).
    """
    tokens = shlex.split(os.path.expandvars(command or ""))
    words = [t for t in tokens if not t.startswith("-") and os.path.basename(t) not in MPI_LAUNCHERS]
    for word in reversed(words):
        if shutil.which(word):
            return word
    named = [w for w in words if not w.isdigit() and "=" not in w]
    return named[-1] if named else (tokens[-1] if tokens else "")


def engine_thread_count(command: str) -> int | None:
    """Threads for each process of an engine command: None keeps this job's share.

    Under an MPI launcher every rank inherits the environment, so the job's share (all the CPUs
    of a node, say) would become threads per rank: each rank gets ``SLURM_CPUS_PER_TASK`` or 1.
    """
    tokens = shlex.split(os.path.expandvars(command or ""))
    if tokens and os.path.basename(tokens[0]) in MPI_LAUNCHERS:
        value = os.environ.get("SLURM_CPUS_PER_TASK", "")
        return int(value) if value.isdigit() and int(value) > 0 else 1
    return None


@contextmanager
def engine_threads(command: str) -> Iterator[None]:
    """Within the block, OpenMP/BLAS variables suit the processes ``command`` starts."""
    n = engine_thread_count(command)
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    if n is not None:
        for var in THREAD_VARIABLES:
            os.environ[var] = str(n)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def engine_status(engine: str, command: str | None = None) -> tuple[bool, str]:
    """Return ``(ok, reason)`` for ``vasp``, ``cp2k`` or ``abinit`` on this machine (others: ok).

    ``command`` is the command the job will run (default: the engine's configured command).
    """
    if engine == "vasp":
        from superionic.engines.vasp import vasp_available

        return vasp_available(command)
    if engine == "cp2k":
        from superionic.engines.cp2k import cp2k_available

        return cp2k_available(command)
    if engine == "abinit":
        from superionic.engines.abinit import abinit_available

        return abinit_available()
    return True, ""


def require_engine(engine: str, command: str | None = None) -> None:
    """Raise :class:`EngineUnavailableError` when ``engine`` cannot run here, naming the host."""
    ok, why = engine_status(engine, command)
    if not ok:
        raise EngineUnavailableError(
            f"{why} (on host {socket.gethostname()}, where this job runs: load the engine in the "
            "worker's environment, e.g. init-site --module, or set the command variable)"
        )


#: custodian's WalltimeHandler stops VASP when less than 300 s are left; below this much, a run
#: is not started at all (it would end after a step or two and pass as a finished MD part)
MIN_VASP_WALLTIME_S = 900

_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def parse_slurm_time(text: str) -> float | None:
    """Seconds in a SLURM time string (``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``); None if not one."""
    m = _SLURM_TIME.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def slurm_time_left_s() -> float | None:
    """Seconds left in this SLURM allocation (``squeue -h -j $SLURM_JOB_ID -o %L``), or None."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_slurm_time(out) if out.strip() else None


def vasp_wall_time_s(configured: float | None = None) -> int | None:
    """Return the wall time custodian gives a VASP run starting now (configured, capped by SLURM's).

    ``configured`` comes from the campaign's ``resources.walltime_s`` (``run`` and ``worker`` put
    it in ``SUPERIONIC_VASP_WALLTIME_S``; it is not a job setting, so it changes no fingerprint).
    custodian stops VASP when less than its buffer (300 s) is left.
    """
    left = slurm_time_left_s()
    options = [t for t in (configured, left) if t]
    return int(min(options)) if options else None


# (engine, module whose functions the makers call, function): input writing comes first in
# atomate2's makers, so the check runs before inputs that may need site data (POTCARs) are written
_WRAPPED = (
    ("vasp", "atomate2.vasp.jobs.base", "write_vasp_input_set"),
    ("vasp", "atomate2.vasp.jobs.base", "run_vasp"),
    ("cp2k", "atomate2.cp2k.jobs.base", "write_cp2k_input_set"),
    ("cp2k", "atomate2.cp2k.jobs.base", "run_cp2k"),
)


def _maker_command(engine: str) -> str | None:
    """Return the command the running job's maker will start (``run_<engine>_kwargs``), if known."""
    from jobflow import CURRENT_JOB

    job = CURRENT_JOB.job
    maker = getattr(getattr(job, "function", None), "__self__", None) if job is not None else None
    kwargs = getattr(maker, f"run_{engine}_kwargs", None) or {}
    return kwargs.get(f"{engine}_cmd")


def _checked(engine: str, run: Callable[..., Any]) -> Callable[..., Any]:
    def runner(*args: Any, **kwargs: Any) -> Any:
        # the command this run will start: the worker's own SUPERIONIC_<ENGINE>_CMD (set where the
        # job runs, e.g. by the job script) wins over the one recorded when the flow was built
        command = os.environ.get(f"SUPERIONIC_{engine.upper()}_CMD") or kwargs.get(f"{engine}_cmd")
        command = command or _maker_command(engine)
        require_engine(engine, command)
        if getattr(run, "__name__", "").startswith("write_"):
            return run(*args, **kwargs)
        if command:
            kwargs[f"{engine}_cmd"] = command
        if engine == "vasp" and kwargs.get("wall_time") is None:
            configured = os.environ.get("SUPERIONIC_VASP_WALLTIME_S")
            wall = vasp_wall_time_s(float(configured) if configured else None)
            if wall is not None and wall < MIN_VASP_WALLTIME_S:
                raise EngineUnavailableError(
                    f"only {wall} s left for this VASP run (allocation or resources.walltime_s); not "
                    f"starting it (custodian would stop it at once): `superionic rerun` puts it back"
                )
            if wall is not None:
                kwargs["wall_time"] = wall
        with engine_threads(command or ""):
            return run(*args, **kwargs)

    runner.superionic_checked = True  # type: ignore[attr-defined]
    return runner


def _wrap_module(module: Any, saved: list[tuple[Any, str, Any]]) -> None:
    """Wrap the :data:`_WRAPPED` functions of ``module`` (once), recording the originals in ``saved``."""
    for engine, module_name, attr in _WRAPPED:
        if module_name != module.__name__:
            continue
        original = getattr(module, attr)
        if getattr(original, "superionic_checked", False):
            continue
        saved.append((module, attr, original))
        setattr(module, attr, _checked(engine, original))


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Wrap atomate2's job modules when they are first imported (see :func:`engine_checks`)."""

    def __init__(self, saved: list[tuple[Any, str, Any]]) -> None:
        self.saved = saved
        self.names = {name for _, name, _ in _WRAPPED}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, "loader", None)
        if spec is None or not hasattr(loader, "exec_module"):
            return None
        run_module = loader.exec_module  # type: ignore[union-attr]

        def exec_module(module: Any) -> None:
            run_module(module)
            _wrap_module(module, self.saved)

        loader.exec_module = exec_module  # type: ignore[union-attr]  # this spec's own loader
        return spec


@contextmanager
def engine_checks() -> Iterator[None]:
    """Within the block, every VASP and CP2K job first checks that its engine runs here.

    atomate2's job modules already imported are wrapped at once; the others when a job first
    imports them (deserialising a VASP firework does), so a worker that runs only MLIP or ordering
    jobs does not pay the ~10 s of importing atomate2's VASP and CP2K modules.
    """
    import sys

    saved: list[tuple[Any, str, Any]] = []
    finder = _WrapOnImport(saved)
    sys.meta_path.insert(0, finder)
    try:
        for name in finder.names:
            if name in sys.modules:
                _wrap_module(sys.modules[name], saved)
        yield
    finally:
        sys.meta_path.remove(finder)
        for module, attr, original in reversed(saved):
            setattr(module, attr, original)
