"""The ``order`` command: the lowest-Ewald-energy orderings of a disordered cell, as CIFs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from superionic.cli.common import _user_errors, check_supercell, console, load_input, parse_pairs, quiet
from superionic.errors import SuperionicError


@_user_errors
def order(
    input: Annotated[str, typer.Argument(help="A CIF/POSCAR with partial occupancies, or a prototype name.")],
    supercell: Annotated[tuple[int, int, int], typer.Option(help="Supercell multiples A B C.")] = (1, 1, 1),
    n: Annotated[int, typer.Option("--n", min=1, help="Number of orderings to keep.")] = 25,
    out: Annotated[Path, typer.Option(help="Output folder for <rank>.cif and summary.csv.")] = Path(
        "orderings"
    ),
    param: Annotated[
        list[str] | None, typer.Option(help="Prototype parameter KEY=VALUE (repeatable).")
    ] = None,
    oxidation: Annotated[
        list[str] | None, typer.Option(help="Oxidation state EL=CHARGE (repeatable).")
    ] = None,
    polyanion: Annotated[
        list[str] | None,
        typer.Option(help="Rigid unit CENTRE=NAME from configs/polyanions.yaml, e.g. B=BH4 (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (results are deterministic per seed).")] = 0,
    restarts: Annotated[int, typer.Option(min=1, help="Simulated-annealing restarts.")] = 8,
    round_counts: Annotated[
        bool, typer.Option("--round", help="Round non-integer site counts, keeping neutrality.")
    ] = False,
    group_by: Annotated[
        str,
        typer.Option(
            help="wyckoff: each Wyckoff site keeps its counts; occupancy: equal occupancies pool (pymatgen)."
        ),
    ] = "wyckoff",
    orientation: Annotated[str, typer.Option(help="Molecule orientation: random or aligned.")] = "random",
) -> None:
    """Write the N lowest-Ewald-energy orderings of a disordered cell, distinct under symmetry.

    Examples::

        superionic order argyrodite --param x=0.5 --param site_mixing=0.5 --supercell 2 1 1 --n 25
        superionic order argyrodite_bh4 --param bh4_vacancies=0.25 --param vacancy_site=4a --supercell 2 1 1
        superionic order antiperovskite_amide --param x=0.5 --supercell 3 3 3 --round
        superionic order my_disordered.cif --oxidation Li=1 --oxidation S=-2 --polyanion B=BH4

    Writes OUT/<rank>.cif (1 = lowest energy) and OUT/summary.csv with rank, file, ewald_energy_ev,
    relative_energy_ev, formula and the vacated sites per sublattice. The CIFs of an earlier run
    into OUT (those its summary.csv lists) are removed first; rank CIFs it does not list are
    refused. Without --oxidation for a CIF, the oxidation states assumed are printed.
    """
    import time

    from rich.progress import Progress

    from superionic.ordering import count_orderings
    from superionic.ordering.ewald import find_sublattices
    from superionic.report.order_tables import (
        previous_order_outputs,
        remove_previous_outputs,
        write_orderings,
    )
    from superionic.stages.order import ordered_structures
    from superionic.structures.polyanions import check_polyanions, polyanion_library

    quiet()
    if orientation not in ("random", "aligned"):
        raise SuperionicError.single("--orientation", "unknown orientation", orientation, "random or aligned")
    check_supercell(supercell)
    params = parse_pairs(param or [], "--param", number=False)
    structure, ox, units = load_input(input, params, "INPUT")
    ox.update({k: float(v) for k, v in parse_pairs(oxidation or [], "--oxidation", number=True).items()})
    library = polyanion_library()
    for centre, name in parse_pairs(polyanion or [], "--polyanion", number=False).items():
        if name not in library:
            raise SuperionicError.single("--polyanion", "unknown unit", name, ", ".join(library))
        units[centre] = library[name]
        ox.setdefault(centre, float(library[name]["charge"]))
    if not ox:  # a structure file without --oxidation: the Ewald energy needs charges, say which
        from superionic.ordering.ewald import _guess_oxidation_states  # what order_by_ewald would use

        decorated = any(
            getattr(sp, "oxi_state", None) is not None for site in structure for sp in site.species
        )
        ox = _guess_oxidation_states(structure)
        if ox:
            source = "read from the file" if decorated else "pymatgen's guess"
            console.print(
                f"oxidation states assumed ({source}; set with --oxidation EL=CHARGE): "
                + ", ".join(f"{el} {q:+g}" for el, q in ox.items()),
                highlight=False,
            )
    # refuse a folder of someone else's rank CIFs now, not after the search
    previous = previous_order_outputs(out)
    structure.make_supercell(list(supercell))
    try:
        subs, fixed = find_sublattices(structure, round_counts=round_counts, group_by=group_by)
    except SuperionicError as exc:
        exc.file = f"{input} (supercell {'x'.join(map(str, supercell))})"
        raise
    console.print(f"{structure.composition.formula}: {len(structure)} sites, {len(fixed)} fixed")
    for sub in subs:
        counts = ", ".join(f"{k} {v}" for k, v in sub.counts.items())
        console.print(f"  sublattice {sub.label}: {len(sub.sites)} sites -> {counts}")
    total = count_orderings(subs)
    method = "exact enumeration" if total <= 20000 else f"simulated annealing, {restarts} restarts"
    console.print(f"configurations before symmetry: {total:.3e}; search: {method}")
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ordering", total=restarts if total > 20000 else 1)
        orderings, expanded = ordered_structures(
            structure,
            n,
            ox,
            units,
            seed=seed,
            orientation=orientation,
            n_restarts=restarts,
            round_counts=round_counts,
            group_by=group_by,
            progress=lambda done, tot: progress.update(task, completed=done, total=tot),
        )
    for s in expanded:
        bad = check_polyanions(s, units)
        if bad:
            raise SuperionicError.single(
                "polyanions",
                "a molecule is not whole after expansion",
                bad[0],
                "a larger cell or fewer crowded units",
            )
    out.mkdir(parents=True, exist_ok=True)
    n_cifs = remove_previous_outputs(previous)
    if n_cifs:
        console.print(f"removed {n_cifs} CIFs of an earlier `superionic order` from {out}/", highlight=False)
    write_orderings(out, orderings, expanded)
    e0 = orderings[0].ewald_energy_ev if orderings else 0.0
    console.print(
        f"{len(orderings)} orderings in {time.perf_counter() - t0:.1f} s; "
        f"lowest {e0:.3f} eV, highest kept {orderings[-1].ewald_energy_ev:.3f} eV -> {out}/"
    )
    if len(orderings) < n:
        console.print(
            f"[yellow]note[/yellow]: only {len(orderings)} distinct ordering(s) exist for "
            f"{structure.composition.formula} in this cell, {n} requested (a larger --supercell has more)",
            highlight=False,
        )
