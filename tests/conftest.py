"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_fixtures(sub: str = "") -> Path:
    """Return ``../shared/fixtures/<sub>`` or skip (fail under CI) when it is absent."""
    path = FIXTURES / sub
    if not path.exists():
        if IN_CI:
            pytest.fail(f"CI=true but the shared fixtures are missing: {path}")
        pytest.skip(f"shared fixtures not found at {path} (they live beside the project)")
    return path


def require_executable(name: str) -> str:
    """Return the path of an executable or skip (fail under CI) when it is not installed."""
    exe = shutil.which(name)
    if exe is None:
        if IN_CI:
            pytest.fail(f"CI=true but '{name}' is not installed (.ci/run installs it)")
        pytest.skip(f"'{name}' is not installed on this machine")
    return exe


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    """A temporary folder to write campaign files into."""
    return tmp_path


@dataclass(frozen=True)
class CliRun:
    """What one ``superionic`` command left, shaped like :class:`subprocess.CompletedProcess`."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Standard output then standard error."""
        return self.stdout + self.stderr


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """Put back what a command run in this process changes for the rest of the process (its job):
    torch's threads, the job environment variables, FireWorks' ping interval, the working folder."""
    import torch

    saved = {var: os.environ.get(var) for var in _PROCESS_VARIABLES}
    threads = torch.get_num_threads()
    cwd = Path.cwd()
    try:
        import fireworks.core.rocket as rocket

        ping = rocket.PING_TIME_SECS
    except ImportError:  # pragma: no cover - fireworks is a dependency
        rocket, ping = None, None
    try:
        yield
    finally:
        os.chdir(cwd)
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        torch.set_num_threads(threads)
        if rocket is not None:
            rocket.PING_TIME_SECS = ping


def superionic(*args: str, cwd: Path, env: Mapping[str, str | None] | None = None) -> CliRun:
    """Run ``superionic ARGS`` in this process, from ``cwd`` with ``env`` added to the environment.

    The in-process twin of ``subprocess.run([exe, *args], cwd=cwd, env={**os.environ, **env})``
    without the ~8 s of imports a new process pays: the exit status is the one the console script
    would return (an uncaught exception is 1, its traceback in ``stderr``), and the process is left
    as it was (working folder, environment, torch threads).
    """
    from typer.testing import CliRunner

    from superionic.cli import app

    with _process_state_kept():
        os.chdir(cwd)
        result = CliRunner().invoke(app, list(args), env=env, prog_name="superionic")
    stderr = result.stderr
    if result.exc_info is not None and not isinstance(result.exception, SystemExit | None):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return CliRun(tuple(args), result.exit_code, result.stdout, stderr)


RunCampaign = Callable[..., CliRun]


@pytest.fixture
def run_campaign(tmp_path: Path) -> RunCampaign:
    """``run_campaign(file="c.yaml", *options, cwd=tmp_path, env=None)``: ``superionic run`` in-process.

    Returns the :class:`CliRun` (``returncode``, ``stdout``, ``stderr``) of
    ``superionic run FILE OPTIONS`` started from ``cwd``, as the campaign tests used to get from a
    subprocess.
    """

    def run(
        file: str | Path = "c.yaml",
        *options: str,
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> CliRun:
        return superionic("run", str(file), *options, cwd=cwd or tmp_path, env=env)

    return run


_PROCESS_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "SUPERIONIC_CHECKPOINT_DIR",
    "SUPERIONIC_VASP_WALLTIME_S",
)


@pytest.fixture(autouse=True)
def _job_process_settings_restored():  # type: ignore[no-untyped-def]
    """`run` and `worker` invoked in-process set torch's threads and job environment variables for
    the rest of their process (that is their job); undo it after each test so later tests see the
    machine's defaults (a leaked 1-thread setting slowed every later CHGNet test, a leaked
    checkpoint folder moved later tests' checkpoints)."""
    import torch

    saved = {var: os.environ.get(var) for var in _PROCESS_VARIABLES}
    threads = torch.get_num_threads()
    yield
    for var, value in saved.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    torch.set_num_threads(threads)
