"""Computed local structure beside published experiments (``configs/experiments/<name>.yaml``).

An experiment file names the polyhedron ``center`` and, per ligand, the measured ``coordination``
(``cn``, ``distance_A``); optionally ``corner_sharing_bridges`` (fraction of centre-centre corner
links through each ligand) and ``<ligand element name>_environment`` (e.g. ``chlorine_environment``
with its ``terminal`` fraction). The centre and ligands of the model come from the analysed
structures themselves (the quench stage's ``center`` and ``ligands``), so nothing here names an
element.
"""

from __future__ import annotations

from typing import Any

from superionic.report.queries import StageItems


def load_experiment(name: str) -> dict[str, Any]:
    """Return ``configs/experiments/<name>.yaml`` as a dict."""
    from ruamel.yaml import YAML

    from superionic.paths import configs_dir

    return YAML(typ="safe").load((configs_dir() / "experiments" / f"{name}.yaml").read_text())


def _environment_key(ligand: str) -> str:
    """``Cl`` -> ``chlorine_environment``: the experiment file's key for a ligand's surroundings."""
    from pymatgen.core import Element

    return f"{Element(ligand).long_name.lower()}_environment"


def comparison_rows(items: StageItems, exp: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``structure, quantity, model, experiment`` for every structure the experiment fits.

    A structure fits when its polyhedron centre is the experiment's and it has every ligand the
    experiment measured (none absent from its composition). Quantities, in the experiment file's
    order: ``CN <centre>-<ligand>`` and ``d <centre>-<ligand> (A)`` per ligand, then
    ``corner links via <ligand>``, then ``<ligand> terminal``.

    Parameters
    ----------
    items : list of (PlannedJob, dict)
        The ``structure`` stage's results (local-structure summaries).
    exp : dict
        An experiment file's content (:func:`load_experiment`).

    Returns
    -------
    list of dict
        One row per structure and quantity.
    """
    ligands = list(exp["coordination"])
    rows = []
    for _p, d in items:
        o = d["output"]
        coord = o.get("coordination") or {}
        if not coord or not set(ligands) <= set(coord) or any(coord[lig].get("absent") for lig in ligands):
            continue
        center = next(iter(coord.values()))["center"]
        if center != exp["center"]:
            continue
        conn = o.get("connectivity") or {}
        quantities: list[tuple[str, Any, Any]] = []
        for lig in ligands:
            measured = exp["coordination"][lig]
            quantities += [
                (f"CN {center}-{lig}", coord[lig]["cn_mean"], measured["cn"]),
                (f"d {center}-{lig} (A)", coord[lig]["bond_length_mean_A"], measured["distance_A"]),
            ]
        bridges = conn.get("corner_bridges", {})
        for lig, fraction in (exp.get("corner_sharing_bridges") or {}).items():
            if lig in coord:
                quantities.append((f"corner links via {lig}", bridges.get(lig, 0.0), fraction))
        for lig in coord:
            environment = exp.get(_environment_key(lig)) or {}
            if "terminal" in environment:
                model = conn.get("ligand_environment", {}).get(lig, {}).get("terminal", 0.0)
                quantities.append((f"{lig} terminal", model, environment["terminal"]))
        rows += [
            {"system": _p.system, "structure": o["label"], "quantity": q, "model": m, "experiment": e}
            for q, m, e in quantities
        ]
    return rows


def study_d_rows(items: StageItems) -> list[dict[str, Any]]:
    """Return the generated polyhedra beside study D's EXAFS/RMC values (``study_d.yaml``).

    Study D (Li3ZrCl4O1.5) measured Zr-centred polyhedra with O and Cl ligands; structures with
    another centre, or without one of those ligands, are left out.
    """
    return comparison_rows(items, load_experiment("study_d"))
