"""Ewald ordering: composition, optimality against brute force and pymatgen, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pymatgen.analysis.ewald import EwaldSummation
from pymatgen.core import Lattice, Structure
from pymatgen.transformations.standard_transformations import (
    OrderDisorderedStructureTransformation,
)

from superionic.errors import StructureError
from superionic.ordering import order_by_ewald
from superionic.structures import build_disordered, load_prototype


def small_cell() -> Structure:
    # 4 cation sites half Li / half vacancy around one O2-: neutral, 6 configurations
    lattice = Lattice.orthorhombic(5.0, 6.0, 7.0)
    return Structure(
        lattice,
        [{"Li": 0.5}] * 4 + ["O"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0.1, 0.5, 0.5], [0.3, 0.2, 0.7]],
    )


def test_exact_enumeration_matches_direct_ewald_of_every_configuration() -> None:
    s = small_cell()
    ox = {"Li": 1, "O": -2}
    # 4 sites hold 2 Li -> 6 configurations: compute each with pymatgen directly
    energies = []
    for occupied in itertools.combinations(range(4), 2):
        species = ["Li" if i in occupied else None for i in range(4)] + ["O"]
        keep = [i for i, sp in enumerate(species) if sp]
        ordered = Structure(s.lattice, [species[i] for i in keep], s.frac_coords[keep])
        ordered.add_oxidation_state_by_element(ox)
        energies.append(EwaldSummation(ordered).total_energy)
    result = order_by_ewald(s, 10, ox)
    assert result[0].ewald_energy_ev == pytest.approx(min(energies), abs=1e-6)
    distinct = sorted({round(e, 5) for e in energies})
    assert [round(r.ewald_energy_ev, 5) for r in result] == distinct


def test_argyrodite_orderings_beat_pymatgen_best_first() -> None:
    proto = load_prototype("argyrodite")
    s = build_disordered("argyrodite", {"halide": "Cl", "site_mixing": 0.25})
    ours = order_by_ewald(s, 5, proto.oxidation_states, seed=3)
    assert len(ours) == 5
    for o in ours:
        assert o.structure.composition.reduced_formula == "Li6PS5Cl"
        # the ordering's energy is what pymatgen's Ewald says for that structure
        assert EwaldSummation(o.structure).total_energy == pytest.approx(o.ewald_energy_ev, abs=1e-4)
    energies = [o.ewald_energy_ev for o in ours]
    assert energies == sorted(energies) and len(set(np.round(energies, 6))) == 5
    ref = s.copy()
    ref.add_oxidation_state_by_element(proto.oxidation_states)
    pmg = OrderDisorderedStructureTransformation(algo=2).apply_transformation(ref, return_ranked_list=5)
    assert energies[0] <= pmg[0]["energy"] + 1e-6
    assert energies[-1] <= pmg[-1]["energy"] + 1e-6


def test_same_seed_same_result() -> None:
    proto = load_prototype("argyrodite")
    s = build_disordered("argyrodite")
    a = order_by_ewald(s, 3, proto.oxidation_states, seed=7, n_restarts=2)
    b = order_by_ewald(s, 3, proto.oxidation_states, seed=7, n_restarts=2)
    assert [x.ewald_energy_ev for x in a] == [x.ewald_energy_ev for x in b]
    assert a[0].occupation == b[0].occupation


def test_non_integer_site_count_names_sublattice_and_counts() -> None:
    s = small_cell()
    s.replace(0, {"Li": 0.3})
    with pytest.raises(StructureError) as info:
        order_by_ewald(s, 1, {"Li": 1, "O": -2})
    text = str(info.value)
    assert "sublattice" in text and "not an integer" in text
