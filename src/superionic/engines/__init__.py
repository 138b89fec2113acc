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


class StageOverrides(dict):
    """A campaign stage's settings, remembering which of them the campaign file gave explicitly."""

    explicit: frozenset[str] = frozenset()


def stage_overrides(stage: Any) -> StageOverrides:
    """Return a stage model's settings for :func:`stage_settings` (defaults included, marked as such).

    A preset's value beats the stage model's default (``antiperovskite_amide``'s ``thermostat:
    langevin`` must not become the model's ``nose-hoover``); a value written in the campaign file
    beats the preset.
    """
    out = StageOverrides(stage.model_dump(exclude={"stage", "engine", "preset"}))
    out.explicit = frozenset(stage.model_fields_set)
    return out


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
        Settings given in the campaign file (``None`` values are ignored). From
        :func:`stage_overrides`, a value the file did not set (the model's default) only fills a
        key the preset does not set.

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
    explicit = getattr(overrides, "explicit", None)
    for key, value in overrides.items():
        if value is not None and (explicit is None or key in explicit or key not in merged):
            merged[key] = value
    return merged
