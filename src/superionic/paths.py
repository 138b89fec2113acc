"""Where superionic finds its data: the ``configs/`` and ``workflows/`` folders.

In a source checkout (editable install) these are the top-level folders of the repository; in a
wheel they are packaged as ``superionic/_configs`` and ``superionic/_workflows``. The environment
variable ``SUPERIONIC_CONFIGS`` overrides the configs folder (a site's own presets).
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def configs_dir() -> Path:
    """Return the folder holding presets, prototypes and references."""
    env = os.environ.get("SUPERIONIC_CONFIGS")
    if env:
        return Path(env)
    return _first_existing(_PKG.parents[1] / "configs", _PKG / "_configs")


def workflows_dir() -> Path:
    """Return the folder holding the preset campaign files."""
    return _first_existing(_PKG.parents[1] / "workflows", _PKG / "_workflows")
