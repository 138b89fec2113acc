"""Engine adapters: (engine, preset, stage settings) -> an atomate2 Maker.

Presets are data in ``configs/engines/<name>.yaml`` with one section per engine and, inside,
one per stage. Settings given on a stage in the campaign file override the preset's.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ruamel.yaml import YAML

from superionic.errors import SpecError
from superionic.paths import configs_dir


@lru_cache(maxsize=32)
def _load_preset_cached(name: str) -> dict[str, Any]:
    path = configs_dir() / "engines" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (configs_dir() / "engines").glob("*.yaml"))
        raise SpecError.single("preset", "unknown preset", name, ", ".join(known))
    return dict(YAML(typ="safe").load(path.read_text()) or {})


def load_preset(name: str) -> dict[str, Any]:
    """Return a preset (a deep copy; callers may modify it)."""
    import copy

    return copy.deepcopy(_load_preset_cached(name))


def stage_settings(preset: str, engine: str, stage: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge the preset's settings for (engine, stage) with the stage's explicit overrides.

    Parameters
    ----------
    preset : str
        Preset name.
    engine : str
        ``mlip``, ``vasp`` or ``cp2k``.
    stage : str
        Stage name.
    overrides : dict
        Settings given in the campaign file (``None`` values are ignored).

    Returns
    -------
    dict
        The merged settings, plus the engine-wide keys of the preset (e.g. ``force_field``). The
        quench stage starts from the preset's ``md`` section.

    """
    data = load_preset(preset).get(engine, {})
    merged = {k: v for k, v in data.items() if not isinstance(v, dict)}
    if stage == "quench":  # a melt-quench is MD: the preset's md settings, then any quench section
        merged.update(data.get("md", {}) or {})
    merged.update(data.get(stage, {}) or {})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged
