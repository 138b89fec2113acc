"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
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
