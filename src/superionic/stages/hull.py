"""Hull stage: E_hull of each relaxed ordering against competing phases relaxed in the same campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobflow import job
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from superionic.analysis.hull import apply_compatibility, hull_table, load_entries_file


def _entry(result: dict[str, Any], label: str) -> ComputedEntry:
    """Entry from ``{"energy": eV, "structure": ..., "entry": optional VASP ComputedEntry}``."""
    if result.get("entry") is not None:
        e = result["entry"]
        e = e if isinstance(e, ComputedEntry) else ComputedEntry.from_dict(e)
        e.data["label"] = label
        return e
    s = result["structure"]
    s = s if isinstance(s, Structure) else Structure.from_dict(s)
    return ComputedStructureEntry(s, float(result["energy"]), data={"label": label})


@job
def compute_hull(
    targets: dict[str, dict[str, Any]],
    phases: dict[str, dict[str, Any]],
    entries_file: str | None = None,
    compatibility: str | None = None,
) -> dict[str, Any]:
    """E_hull (meV/atom) and decomposition per target.

    Parameters
    ----------
    targets : dict
        Label -> relaxed result (``energy`` in eV, ``structure``, optional VASP ``entry``).
    phases : dict
        Competing phase name -> relaxed result, same engine and preset as the targets.
    entries_file : str, optional
        JSON list of extra entries (e.g. Materials Project), used with ``compatibility``.
    compatibility : str, optional
        ``mp2020`` for VASP GGA(+U) energies, else ``None``.

    Returns
    -------
    dict
        ``rows`` (see :func:`superionic.analysis.hull.hull_table`), ``phases`` (name -> energy per
        atom) and the compatibility used.
    """
    target_entries = [_entry(r, label) for label, r in targets.items()]
    competing = [_entry(r, name) for name, r in phases.items()]
    if entries_file:
        competing += load_entries_file(Path(entries_file))
    if compatibility:
        target_entries = apply_compatibility(target_entries, compatibility)
        competing = apply_compatibility(competing, compatibility)
    rows = hull_table(target_entries, competing)
    return {
        "rows": rows,
        "phases": {e.data.get("label", e.composition.reduced_formula): e.energy_per_atom for e in competing},
        "compatibility": compatibility,
    }
