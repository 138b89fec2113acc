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
