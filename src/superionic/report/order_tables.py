"""The files `superionic order` writes: one CIF per ordering (``<rank>.cif``) and ``summary.csv``.

Each file is written to a hidden temporary name and renamed, so a folder never holds half a CIF.
An earlier run's files are recognised by its ``summary.csv`` and replaced; rank CIFs it does not
list are refused rather than mixed with the new ones.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from superionic.errors import SuperionicError

_RANK_CIF = re.compile(r"\d+\.cif")


def previous_order_outputs(out: Path) -> list[Path]:
    """Files an earlier ``superionic order`` wrote into ``out``: the rank CIFs its summary.csv lists.

    Refuses (exit 2) a folder holding rank CIFs (``<n>.cif``) that no summary.csv of ours lists, or
    a summary.csv that is not ours, rather than mixing or deleting files we did not write. Other
    files are left alone.

    Parameters
    ----------
    out : Path
        The output folder (it need not exist).

    Returns
    -------
    list of Path
        Our earlier rank CIFs, leftover temporary files and the summary.csv, to remove before
        writing new ones.

    Raises
    ------
    SuperionicError
        On rank CIFs no summary.csv of ours lists, or a summary.csv without rank/file columns.

    """
    if not out.is_dir():
        return []
    on_disk = {p.name for p in out.iterdir() if _RANK_CIF.fullmatch(p.name)}
    listed: set[str] = set()
    summary = out / "summary.csv"
    if summary.is_file():
        with open(summary, newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"rank", "file"} <= set(reader.fieldnames or []):
                raise SuperionicError.single(
                    "--out",
                    "the folder holds a summary.csv not written by `superionic order` (no rank/file columns)",
                    str(out),
                    "an empty or new folder",
                )
            listed = {r["file"] for r in reader if _RANK_CIF.fullmatch(r.get("file") or "")}
    foreign = sorted(on_disk - listed, key=lambda name: int(name.split(".")[0]))
    if foreign:
        raise SuperionicError.single(
            "--out",
            f"the folder holds {len(foreign)} rank CIF(s) not listed in a summary.csv of ours "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); they would be mixed with "
            "the new ones",
            str(out),
            "an empty or new folder, or remove those files",
        )
    ours = [out / name for name in sorted(listed & on_disk)]
    ours += [p for p in out.glob(".*.tmp") if re.fullmatch(r"\.(\d+\.cif|summary\.csv)\.tmp", p.name)]
    return ours + ([summary] if summary.is_file() else [])


def remove_previous_outputs(previous: Sequence[Path]) -> int:
    """Remove an earlier run's files (from :func:`previous_order_outputs`).

    Parameters
    ----------
    previous : sequence of Path
        The files to remove (missing ones are ignored).

    Returns
    -------
    int
        How many of them were CIFs.

    """
    for old in previous:  # our own earlier outputs: a new summary.csv must not sit beside stale CIFs
        old.unlink(missing_ok=True)
    return sum(p.suffix == ".cif" for p in previous)


def write_orderings(out: Path, orderings: Sequence[Any], structures: Sequence[Any]) -> None:
    """Write ``<rank>.cif`` per ordering (1 = lowest Ewald energy) and ``summary.csv``.

    Parameters
    ----------
    out : Path
        An existing output folder.
    orderings : sequence
        The orderings, lowest energy first (``ewald_energy_ev`` and ``vacated`` per ordering).
    structures : sequence of Structure
        The ordered structures written as CIFs, one per ordering.

    Notes
    -----
    summary.csv has the columns rank, file, ewald_energy_ev, relative_energy_ev (to rank 1),
    formula and vacated (sites vacated per sublattice).

    """
    rows = []
    e0 = orderings[0].ewald_energy_ev if orderings else 0.0
    for rank, (o, s) in enumerate(zip(orderings, structures, strict=True), start=1):
        name = f"{rank}.cif"
        tmp = out / f".{name}.tmp"
        s.to(filename=str(tmp), fmt="cif")
        tmp.replace(out / name)
        rows.append(
            {
                "rank": rank,
                "file": name,
                "ewald_energy_ev": f"{o.ewald_energy_ev:.6f}",
                "relative_energy_ev": f"{o.ewald_energy_ev - e0:.6f}",
                "formula": s.composition.formula.replace(" ", ""),
                "vacated": "; ".join(f"{k}: {len(v)}" for k, v in o.vacated.items()),
            }
        )
    tmp = out / ".summary.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["rank"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "summary.csv")
