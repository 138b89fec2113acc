"""Hull stage: E_hull of each relaxed ordering against competing phases relaxed in the same campaign."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import job
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from superionic.analysis.hull import apply_compatibility, hull_table, load_entries_file
from superionic.stages.common import staged

if TYPE_CHECKING:
    from jobflow import Flow

    from superionic.spec.loader import Campaign, SystemInstance


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


def system_phases(
    system: SystemInstance, phase_results: dict[str, dict[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """Return the competing phases of the system's elements.

    Parameters
    ----------
    system : SystemInstance
        The system (its elements choose the phases).
    phase_results : dict or None
        Phase name -> relax output, for every phase of the campaign.

    Returns
    -------
    dict
        Phase name -> relax output, for the phases made of the system's elements.
    """
    from superionic.structures.phases import phases_for

    names = {p.name for p in phases_for(system.elements)}
    return {n: r for n, r in (phase_results or {}).items() if n in names}


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


def hull_flow(
    campaign: Campaign,
    system: SystemInstance,
    relaxed: dict[str, dict[str, Any]],
    phase_results: dict[str, dict[str, Any]] | None,
    /,
    **metadata: Any,
) -> Flow:
    """E_hull of one system's relaxed orderings against its competing phases (or an entries file).

    ``relaxed``: ordering label -> relax output; ``phase_results``: phase name -> relax output
    (only the phases of this system's elements are used). MP2020 corrections are applied by
    default (``compatibility: auto``) when the relax engine is VASP.
    """
    from jobflow import Flow

    from superionic.spec.models import HullStage

    spec = campaign.spec
    stages = {s.stage: s for s in spec.stages}
    hull = stages["hull"]
    assert isinstance(hull, HullStage)
    entries = hull.entries_file
    if entries is not None and not entries.is_absolute():
        entries = (campaign.directory / entries).resolve()
    engine = (stages["relax"].engine or spec.engine) if "relax" in stages else spec.engine
    compat = {"auto": "mp2020" if engine == "vasp" else None, "none": None}.get(
        hull.compatibility, hull.compatibility
    )
    job = compute_hull(
        relaxed,
        system_phases(system, phase_results),
        str(entries) if entries else None,
        compat,
    )
    job.name = f"{system.name} hull"
    return Flow([staged(job, "hull", **metadata)], output=job.output, name=f"{system.name} hull")
