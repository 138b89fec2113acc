"""A study's published numbers (``configs/experiments/<study>.yaml``): loading and checking.

Checked here, where the campaign is loaded (a bad file stops ``validate``/``run`` with one clear
error); judged in :mod:`superionic.report.reproduction`, which holds each observable's table.
"""

from __future__ import annotations

from typing import Any

#: the observables a quantity may name (their tables: :data:`superionic.report.reproduction.OBSERVABLES`)
OBSERVABLE_NAMES = (
    "ea_D_eV",
    "ea_sigmaT_eV",
    "sigma_300K_mS_cm",
    "D_300K_cm2_s",
    "e_hull_meV_atom",
    "rotation_time_ps",
    "cq_MHz",
    "eta_q",
    "delta_iso_ppm",
    "local_structure",
    "none",
)


def load_study(name: str) -> dict[str, Any]:
    """Return ``configs/experiments/<name>.yaml`` as a dict."""
    from ruamel.yaml import YAML

    from superionic.paths import configs_dir

    return YAML(typ="safe").load((configs_dir() / "experiments" / f"{name}.yaml").read_text())


def study_problems(name: str) -> list[tuple[str, str]]:
    """Return what is wrong with ``configs/experiments/<name>.yaml``: ``(what, valid)`` pairs.

    Checked when a campaign that ``reproduces`` it is loaded, so that a bad entry stops
    ``validate``/``run`` with one clear message rather than ``report`` with a traceback.
    """
    from ruamel.yaml.error import YAMLError

    from superionic.paths import configs_dir

    path = configs_dir() / "experiments" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        return [(f"{path} not found", ", ".join(known))]
    try:
        study = load_study(name)
    except YAMLError as exc:
        return [(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "a YAML mapping")]
    quantities = study.get("quantities") if isinstance(study, dict) else None
    if not isinstance(quantities, list):
        return [(f"{path} has no 'quantities' list", "quantities: [{name, observable, ...}]")]
    out = []
    for i, q in enumerate(quantities):
        where = f"{path}: quantities[{i}]"
        if not isinstance(q, dict) or "name" not in q:
            out.append((f"{where} is not a mapping with a 'name'", "{name, observable, systems, ...}"))
            continue
        if q.get("observable") not in OBSERVABLE_NAMES:
            out.append((f"{where}.observable is {q.get('observable')!r}", ", ".join(OBSERVABLE_NAMES)))
        for e in q.get("systems", []) or []:
            if isinstance(e, dict) and "system" not in e:
                out.append((f"{where}.systems entry {e!r} has no 'system'", "a system name or pattern"))
        v = q.get("value")
        values = v if isinstance(v, list) else [v]
        if v is not None and (
            len(values) not in (1, 2) or not all(isinstance(x, int | float) for x in values)
        ):
            out.append((f"{where}.value is {v!r}", "a number, [low, high], or omitted for a trend"))
    return out


__all__ = ["OBSERVABLE_NAMES", "load_study", "study_problems"]
