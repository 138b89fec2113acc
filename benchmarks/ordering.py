"""Ewald ordering: superionic vs pymatgen's OrderDisorderedStructureTransformation (best-first).

Prints, per cell, our lowest and N-th Ewald energies, pymatgen best-first's, and both wall
times, in one run. Usage: python benchmarks/ordering.py [--n 25]
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
    proto = load_prototype("argyrodite")
    s = build_disordered("argyrodite", {"halide": "Cl", "site_mixing": 0.25})
    s.make_supercell([2, 1, 1])
    out.append(("Li6PS5Cl 2x1x1, 25 % S/Cl mixing on 4a/4d", s, proto.oxidation_states))
    s = build_disordered("argyrodite", {"halide": "Br"})
    out.append(("Li6PS5Br 1x1x1 (48h half occupied)", s, proto.oxidation_states))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=25, help="orderings to keep")
    args = parser.parse_args()
    print(
        f"{'cell':45s} {'configs':>10s} {'ours E1':>11s} {'ours EN':>11s} {'t (s)':>6s} "
        f"{'pmg E1':>11s} {'pmg EN':>11s} {'t (s)':>6s} {'dE1 (eV)':>9s}"
    )
    for name, structure, ox in cases():
        subs, _ = find_sublattices(structure)
        t0 = time.perf_counter()
        ours = order_by_ewald(structure, args.n, ox, seed=0)
        t_ours = time.perf_counter() - t0
        ref = structure.copy()
        ref.add_oxidation_state_by_element(ox)
        t0 = time.perf_counter()
        pmg = OrderDisorderedStructureTransformation(algo=2).apply_transformation(
            ref, return_ranked_list=args.n
        )
        t_pmg = time.perf_counter() - t0
        e_ours = [o.ewald_energy_ev for o in ours]
        e_pmg = [p["energy"] for p in pmg]
        print(
            f"{name:45s} {count_orderings(subs):10.2e} {e_ours[0]:11.3f} {e_ours[-1]:11.3f} "
            f"{t_ours:6.1f} {e_pmg[0]:11.3f} {e_pmg[-1]:11.3f} {t_pmg:6.1f} "
            f"{e_ours[0] - e_pmg[0]:9.3f}"
        )


if __name__ == "__main__":
    main()
