"""Energy above the convex hull and mixing enthalpy from computed entries (pymatgen PhaseDiagram).

No jobflow imports: the hull stage and ``superionic analyze hull`` both call :func:`hull_table`.
Energies are total energies (eV) of the relaxed cells. For VASP GGA(+U) entries the Materials
Project 2020 compatibility scheme is applied (``compatibility="mp2020"``); MLIP and CP2K energies
are used as computed (they are consistent among themselves, not with MP).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pymatgen.analysis.phase_diagram import PhaseDiagram
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from superionic.errors import SuperionicError


def load_entries_file(path: Path) -> list[ComputedEntry]:
    """Read a JSON list of (Computed[Structure]Entry) dicts, e.g. Materials Project entries.

    Raises
    ------
    SuperionicError
        Naming the file and what is wrong with it.

    """
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SuperionicError.single(
            str(path), f"cannot read the entries file: {exc}", str(path), "a JSON list of ComputedEntry dicts"
        ) from exc
    if isinstance(raw, dict) and "entries" in raw:
        raw = raw["entries"]
    if not isinstance(raw, list):
        raise SuperionicError.single(
            str(path), "the entries file is not a list", type(raw).__name__, "a JSON list"
        )
    out: list[ComputedEntry] = []
    for i, d in enumerate(raw):
        try:
            cls = ComputedStructureEntry if "structure" in d else ComputedEntry
            out.append(cls.from_dict(d))
        except Exception as exc:
            raise SuperionicError.single(
                f"{path}: entry {i}",
                f"not a ComputedEntry ({exc})",
                str(d)[:80],
                "as written by entry.as_dict()",
            ) from exc
    return out


def apply_compatibility(entries: list[ComputedEntry], scheme: str | None) -> list[ComputedEntry]:
    """Apply a compatibility scheme (``mp2020`` or ``None``); entries it cannot correct are dropped."""
    if not scheme:
        return entries
    if scheme != "mp2020":
        raise SuperionicError.single(
            "compatibility", "unknown compatibility scheme", scheme, "mp2020 or none"
        )
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

    return list(MaterialsProject2020Compatibility(check_potcar=False).process_entries(entries, clean=True))


def hull_table(
    targets: Sequence[ComputedEntry],
    competing: Sequence[ComputedEntry],
) -> list[dict[str, Any]]:
    """E_hull and decomposition of each target against the competing phases (and the other targets).

    Parameters
    ----------
    targets : sequence of ComputedEntry
        The structures being assessed; ``entry.data["label"]`` names them in the table.
    competing : sequence of ComputedEntry
        Reference phases (elements included).

    Returns
    -------
    list of dict
        Per target: ``label``, ``formula``, ``energy_per_atom_ev``, ``e_hull_meV_per_atom``,
        ``formation_energy_ev_per_atom``, ``decomposition`` (e.g. ``"0.5 Li3PS4 + 0.5 LiBH4"``,
        fractions by atoms) and ``stable``.

    Raises
    ------
    SuperionicError
        When an element of a target has no elemental reference among the competing phases.

    """
    elements = {el for e in targets for el in e.composition.elements}
    have = {e.composition.elements[0] for e in competing if len(e.composition.elements) == 1}
    missing = sorted(str(el) for el in elements - have)
    if missing:
        raise SuperionicError.single(
            "hull",
            f"no elemental reference for {', '.join(missing)}",
            [e.composition.reduced_formula for e in competing],
            "an elemental phase for every element (configs/phases/ or the entries file)",
        )
    # the hull is built from the competing phases only: each target is judged against them,
    # so orderings of the same composition do not push each other off the hull
    pd = PhaseDiagram(list(competing))
    rows = []
    for e in targets:
        decomp, e_hull = pd.get_decomp_and_e_above_hull(e, allow_negative=True)
        parts = sorted(decomp.items(), key=lambda kv: -kv[1])
        rows.append(
            {
                "label": e.data.get("label", e.composition.reduced_formula),
                "formula": e.composition.reduced_formula,
                "energy_per_atom_ev": e.energy_per_atom,
                "e_hull_meV_per_atom": 1000.0 * float(e_hull),
                "formation_energy_ev_per_atom": float(pd.get_form_energy_per_atom(e)),
                "decomposition": " + ".join(
                    f"{frac:.3g} {p.composition.reduced_formula}" for p, frac in parts
                ),
                "stable": bool(e_hull <= 1e-6),
            }
        )
    return rows


def mixing_enthalpy_ev_per_atom(
    solid_solution: ComputedEntry, end_members: Sequence[ComputedEntry]
) -> tuple[float, dict[str, float]]:
    """dH_mix of a solid solution against its end members (eV/atom), with the end-member fractions.

    The fractions solve composition(solution) = sum_i x_i composition(end_member_i) per atom
    (least squares; a solution outside the end members' span is an error).
    """
    import numpy as np

    solution = solid_solution
    els = sorted({el for e in [solution, *end_members] for el in e.composition.elements})
    a = np.array([[m.composition.get_atomic_fraction(el) for m in end_members] for el in els])
    b = np.array([solution.composition.get_atomic_fraction(el) for el in els])
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    if np.max(np.abs(a @ x - b)) > 1e-6 or np.any(x < -1e-9):
        raise SuperionicError.single(
            "end_members",
            "the solid solution is not a mixture of the end members",
            [m.composition.reduced_formula for m in end_members],
            f"end members spanning {solution.composition.reduced_formula}",
        )
    ref = float(sum(xi * m.energy_per_atom for xi, m in zip(x, end_members, strict=True)))
    return solution.energy_per_atom - ref, {
        m.composition.reduced_formula: float(xi) for xi, m in zip(x, end_members, strict=True)
    }


def plot_hull(rows: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Bar chart of E_hull (meV/atom) per structure, with the 50 meV/atom metastability line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(rows) + 2), 3.5))
    labels = [str(r.get("label", r.get("structure", ""))) for r in rows]
    values = [r["e_hull_meV_per_atom"] for r in rows]
    ax.bar(range(len(rows)), values, color=["tab:green" if v <= 50 else "tab:red" for v in values])
    ax.axhline(50.0, ls="--", color="grey", lw=1, label="50 meV/atom")
    ax.set_xticks(range(len(rows)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("E above hull (meV/atom)")
    ax.set_title(title or "Energy above the convex hull")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
