"""How many threads a job may use, and setting them before any model or subprocess starts.

torch and OpenMP/BLAS take every core of the machine unless told otherwise. On a node where a
worker runs several jobs at once, each of them then fights the others for the same cores: CHGNet
MD of a 52-atom cell ran 4.5x slower in aggregate with two default-threaded runs on two cores
than with two single-threaded ones. Neither jobflow nor FireWorks sets thread counts, so a
superionic process does it itself, once, before the first job builds a model or starts CP2K or
ABINIT (subprocesses inherit the environment variables set here).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

#: Environment variables read by OpenMP, BLAS libraries and torch in subprocesses.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ThreadPlan:
    """CPUs given to a process, how many jobs it runs at once, and the threads each job gets."""

    cpus: int
    source: str
    jobs_at_once: int
    threads_per_job: int

    def describe(self) -> str:
        """Return one line for the console, e.g. ``threads: 1 per job (2 CPUs from SLURM_CPUS_PER_TASK)``."""
        per = "job" if self.jobs_at_once == 1 else f"job, {self.jobs_at_once} jobs at once"
        return f"threads: {self.threads_per_job} per {per} ({self.cpus} CPUs from {self.source})"


def _positive_int(value: str | None) -> int | None:
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def available_cpus(
    threads: int | None = None, source: str = "the campaign's resources.threads"
) -> tuple[int, str]:
    """Return the CPUs this process was given and where that number came from.

    Order: the campaign's ``resources.threads``; SLURM's ``SLURM_CPUS_PER_TASK``; an
    ``OMP_NUM_THREADS`` already set by the user or the site; the cores this process may run on
    (its CPU affinity, which SLURM and taskset restrict).
    """
    if threads is not None and threads > 0:
        return int(threads), source
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        n = _positive_int(os.environ.get(var))
        if n is not None:
            return n, var
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    return max(1, n), "the machine's cores"


def plan_threads(
    threads: int | None = None, jobs_at_once: int = 1, source: str = "the campaign's resources.threads"
) -> ThreadPlan:
    """Divide the CPUs among the jobs run at once: ``max(1, cpus // jobs_at_once)`` each.

    ``threads`` (explicit CPUs, labelled ``source``) wins over the environment; see :func:`available_cpus`.
    """
    cpus, source = available_cpus(threads, source)
    jobs = max(1, int(jobs_at_once))
    return ThreadPlan(cpus, source, jobs, max(1, cpus // jobs))


def apply_threads(n: int) -> None:
    """Limit this process (torch) and the subprocesses it starts (OpenMP/BLAS) to ``n`` threads.

    Call before a model is built: torch's intra-op pool size is read when work first runs. If
    torch is not imported yet it is not imported here (2.6 s that a worker running only ordering
    jobs would pay): torch sizes its intra-op pool from ``OMP_NUM_THREADS`` when it is imported.
    """
    n = max(1, int(n))
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is None:
        return
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only settable before the first parallel work; the intra-op count matters
        pass


def configure_process(resources: object, jobs_at_once: int = 1, threads: int | None = None) -> ThreadPlan:
    """Set up a process that runs a campaign's jobs: threads per job, and VASP's wall time.

    Parameters
    ----------
    resources : ResourcesSpec
        The campaign's ``resources`` (``threads``, ``walltime_s``).
    jobs_at_once : int
        How many jobs this process runs at the same time.
    threads : int, optional
        Threads given on the command line (``worker --threads``): wins over ``resources``.

    Returns
    -------
    ThreadPlan
        What was chosen (print :meth:`ThreadPlan.describe`).
    """
    if threads is not None:
        plan = plan_threads(threads, jobs_at_once, source="--threads")
    else:
        plan = plan_threads(getattr(resources, "threads", None), jobs_at_once)
    apply_threads(plan.threads_per_job)
    walltime = getattr(resources, "walltime_s", None)
    if walltime:  # read where each VASP run starts (engines.guard); not a job setting
        os.environ["SUPERIONIC_VASP_WALLTIME_S"] = str(float(walltime))
    return plan
