"""Ewald ordering: superionic vs pymatgen's OrderDisorderedStructureTransformation (best-first).

For each cell, in one run: our lowest and N-th Ewald energies and wall time, pymatgen
best-first's, and the lowest energy of a long annealing run (48 restarts x 3000 steps per site)
as a reference for how close the default search gets. Both codes solve the same problem
(``group_by="occupancy"``, pymatgen's grouping of sites).

Usage: python benchmarks/ordering.py [--n 25] [--no-long]
"""

from __future__ import annotations

import argparse
import time

from pymatgen.transformations.standard_transformations import (
    OrderDisorderedStructureTransformation,
)

from superionic.ordering import count_orderings, order_by_ewald
from superionic.ordering.ewald import find_sublattices
from superionic.structures import build_disordered, load_prototype


def cases() -> list[tuple[str, object, dict]]:
    out = []
    proto = load_prototype("argyrodite_bh4")
    s = build_disordered("argyrodite_bh4", {"bh4_vacancies": 0.0})
    s.make_supercell([2, 1, 1])
    out.append(("A: Li5PS4(BH4)2 2x1x1 (96 Li sites, 40 Li)", s, proto.oxidation_states))
    proto = load_prototype("antiperovskite_amide")
    s = build_disordered("antiperovskite_amide", {"x": 14 / 27})  # x = 0.5 rounded to whole NH2
    s.make_supercell([3, 3, 3])
    out.append(("B: Na(3-x)O(1-x)(NH2)x(BH4) 3x3x3, 14 NH2", s, proto.oxidation_states))
    proto = load_prototype("argyrodite")
    s = build_disordered("argyrodite", {"x": 0.5, "site_mixing": 0.5})
    s.make_supercell([2, 1, 1])
    out.append(("E: Li5.5PS4.5Cl1.5 2x1x1, S/Cl mixed 4a/4d", s, proto.oxidation_states))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=25, help="orderings to keep")
    parser.add_argument("--no-long", action="store_true", help="skip the long annealing reference")
    args = parser.parse_args()
    header = (
        f"{'cell':45s} {'configs':>9s} | {'ours E1':>10s} {'ours EN':>10s} {'t(s)':>5s} | "
        f"{'pmg E1':>10s} {'pmg EN':>10s} {'t(s)':>5s} | {'long E1':>10s} | {'E1-pmg':>7s} {'EN-pmg':>7s}"
    )
    print(header)
    for name, structure, ox in cases():
        subs, _ = find_sublattices(structure, group_by="occupancy")
        t0 = time.perf_counter()
        ours = order_by_ewald(structure, args.n, ox, seed=0, group_by="occupancy")
        t_ours = time.perf_counter() - t0
        ref = structure.copy()
        ref.add_oxidation_state_by_element(ox)
        t0 = time.perf_counter()
        pmg = OrderDisorderedStructureTransformation(algo=2).apply_transformation(
            ref, return_ranked_list=args.n
        )
        t_pmg = time.perf_counter() - t0
        long_e = float("nan")
        if not args.no_long:
            long_e = order_by_ewald(
                structure, 1, ox, seed=1, n_restarts=48, steps_per_site=3000, group_by="occupancy"
            )[0].ewald_energy_ev
        e_ours = [o.ewald_energy_ev for o in ours]
        e_pmg = [p["energy"] for p in pmg]
        print(
            f"{name:45s} {count_orderings(subs):9.2e} | {e_ours[0]:10.3f} {e_ours[-1]:10.3f} {t_ours:5.1f} | "
            f"{e_pmg[0]:10.3f} {e_pmg[-1]:10.3f} {t_pmg:5.1f} | {long_e:10.3f} | "
            f"{e_ours[0] - e_pmg[0]:7.3f} {e_ours[-1] - e_pmg[-1]:7.3f}"
        )


if __name__ == "__main__":
    main()
