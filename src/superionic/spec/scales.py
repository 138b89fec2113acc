"""Scales: one campaign file, three sizes of the same study (``--scale paper|quick|smoke``).

A study file is written at the paper's scale (its engine, cells and run lengths); its ``scales:``
block says what changes for a smaller run::

    default_scale: quick
    scales:
      paper: {}                                   # the file as written
      quick:
        engine: mlip
        preset: argyrodite_bh4
        systems: {Li5PS4(BH4)2: {supercell: [1, 1, 1]}}
        stages: {order: {n_structures: 2}, nmr: null, md: {production_steps: 1000}}
      smoke: {...}

Top-level keys (``engine``, ``preset``, ``description``, ``resources``) are replaced; ``systems``
and ``stages`` are merged by system name and stage kind, key by key (a mapping merges into a
mapping, anything else replaces), and ``null`` drops the system or the stage. The merge works on
the YAML nodes themselves, so an error in an overridden value names the line of the override.
The chosen scale is appended to the campaign name (``study-a-quick``): each scale has its own
report folder and FireWorks workflows, and jobs whose content is the same at two scales are not
recomputed (they share fingerprints).

jobflow and atomate2 have no notion of a profile of one workflow at several sizes (atomate2's
makers are configured in Python): this is ours.
"""

from __future__ import annotations

import copy
from typing import Any

from superionic.errors import Problem

#: the scales a study file may define, smallest last
SCALES = ("paper", "quick", "smoke")
#: what a scale may override at the top level (systems and stages are merged, see the module doc)
REPLACEABLE = ("engine", "preset", "description", "resources")


def _line(node: Any, key: Any) -> int | None:
    try:
        return int(node.lc.key(key)[0]) + 1 if isinstance(key, str) else int(node.lc.item(key)[0]) + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def _merge(base: Any, override: Any) -> None:
    """Merge mapping ``override`` into mapping ``base`` in place, keeping the override's lines."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            # a copy first: YAML anchors (`params: *p`) share one node between systems
            base[key] = copy.deepcopy(base[key])
            _merge(base[key], value)
            continue
        base[key] = value
        try:  # ruamel keeps each key's position per mapping: point it at the override
            base.lc.data[key] = override.lc.data[key]
        except (AttributeError, KeyError):
            pass


def apply_scale(data: Any, scale: str | None) -> tuple[str | None, list[Problem]]:
    """Apply ``scale`` (or the file's ``default_scale``) to a campaign's YAML data, in place.

    Parameters
    ----------
    data : dict
        The campaign file as loaded by ruamel (round-trip, so lines are known).
    scale : str or None
        ``--scale`` from the command line; ``None`` takes the file's ``default_scale``.

    Returns
    -------
    (scale, problems)
        The scale applied (``None`` for a file without ``scales:``) and what is wrong, if anything.
        ``scales`` and ``default_scale`` are removed from ``data``, and the campaign ``name`` gets
        ``-<scale>`` appended.
    """
    scales = data.pop("scales", None) if "scales" in data else None
    default_line = _line(data, "default_scale")
    default = data.pop("default_scale", None)
    if scales is None:
        if scale is not None:
            return None, [
                Problem(
                    "--scale",
                    "this campaign file has no 'scales:' block",
                    scale,
                    "leave --scale out, or add scales: {paper: {}, quick: {...}, smoke: {...}} to the file",
                )
            ]
        if default is not None:
            return None, [
                Problem(
                    "default_scale", "given without a 'scales:' block", default, "remove it", default_line
                )
            ]
        return None, []
    if not isinstance(scales, dict) or not scales:
        return None, [Problem("scales", "must map scale names to overrides", scales, f"keys from {SCALES}")]
    problems = [
        Problem(f"scales.{name}", "unknown scale", name, ", ".join(SCALES), _line(scales, name))
        for name in scales
        if name not in SCALES
    ]
    if default is not None and default not in scales:
        problems.append(
            Problem("default_scale", "not one of the file's scales", default, ", ".join(scales), default_line)
        )
    chosen = scale if scale is not None else default
    if chosen is None:
        problems.append(
            Problem(
                "--scale",
                "this file has several scales and no default_scale",
                None,
                "--scale " + " | ".join(str(s) for s in scales),
            )
        )
    elif chosen not in scales:
        where, line = ("--scale", None) if scale is not None else ("default_scale", default_line)
        problems.append(
            Problem(where, "the file does not define this scale", chosen, ", ".join(scales), line)
        )
    if problems:
        return None, problems
    override = scales[chosen] or {}
    problems += _apply(data, override, f"scales.{chosen}", scales[chosen])
    if problems:
        return None, problems
    if isinstance(data.get("name"), str):
        data["name"] = f"{data['name']}-{chosen}"
    return str(chosen), []


def _apply(data: Any, override: Any, where: str, node: Any) -> list[Problem]:
    """Replace and merge one scale's ``override`` into ``data``; problems name ``where``."""
    if not isinstance(override, dict):
        return [Problem(where, "a scale must be a mapping", override, "keys " + ", ".join(REPLACEABLE))]
    problems = []
    for key, value in override.items():
        if key in REPLACEABLE:
            data[key] = value
            try:
                data.lc.data[key] = override.lc.data[key]
            except (AttributeError, KeyError):
                pass
        elif key == "systems":
            problems += _merge_named(data, value, "systems", "name", f"{where}.systems", override)
        elif key == "stages":
            problems += _merge_named(data, value, "stages", "stage", f"{where}.stages", override)
        else:
            problems.append(
                Problem(
                    f"{where}.{key}",
                    "a scale cannot change this key",
                    key,
                    ", ".join([*REPLACEABLE, "systems", "stages"]),
                    _line(node, key),
                )
            )
    return problems


def _merge_named(data: Any, changes: Any, field: str, key: str, where: str, parent: Any) -> list[Problem]:
    """Merge ``{name: partial mapping or null}`` into the list ``data[field]`` by each item's ``key``."""
    if not isinstance(changes, dict):
        return [
            Problem(
                where,
                f"must map each {key} to its changes",
                changes,
                f"e.g. {{<{key}>: {{...}}}}",
                _line(parent, field),
            )
        ]
    items = data.get(field)
    if not isinstance(items, list):
        return []  # the schema reports the missing list
    problems = []
    for name, change in changes.items():
        idx = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get(key) == name]
        if not idx:
            known = [str(item.get(key)) for item in items if isinstance(item, dict)]
            problems.append(
                Problem(
                    f"{where}.{name}",
                    f"no {field[:-1]} of this name",
                    name,
                    ", ".join(known),
                    _line(changes, name),
                )
            )
            continue
        if change is None:
            for i in reversed(idx):
                del items[i]
        elif isinstance(change, dict):
            for i in idx:
                _merge(items[i], change)
        else:
            problems.append(
                Problem(
                    f"{where}.{name}",
                    "must be a mapping of changes, or null to drop it",
                    change,
                    "{...} or null",
                    _line(changes, name),
                )
            )
    return problems
