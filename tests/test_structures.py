"""Prototype geometry: the argyrodite cell has the refined bond lengths."""

from __future__ import annotations

import numpy as np
import pytest

from superionic.errors import StructureError
from superionic.ordering import order_by_ewald
from superionic.structures import build_disordered, list_prototypes, load_prototype


def test_argyrodite_composition_and_sites() -> None:
    s = build_disordered("argyrodite")
    assert s.composition.reduced_formula == "Li6PS5Cl"
    assert s.lattice.a == pytest.approx(9.8598)
    counts = {label: s.site_properties["wyckoff"].count(label) for label in set(s.site_properties["wyckoff"])}
    assert counts == {"Li_48h": 48, "P_4b": 4, "S_16e": 16, "S_4d": 4, "X_4a": 4}


def test_argyrodite_bond_lengths() -> None:
    proto = load_prototype("argyrodite")
    ordered = order_by_ewald(build_disordered("argyrodite"), 1, proto.oxidation_states)[0].structure
    dm = ordered.distance_matrix
    sym = np.array([site.specie.symbol for site in ordered])
    p_s = dm[np.ix_(sym == "P", sym == "S")]
    assert np.sort(p_s, axis=1)[:, :4] == pytest.approx(2.05, abs=0.02)  # PS4 tetrahedra
    li_s = dm[np.ix_(sym == "Li", sym == "S")]
    assert np.all((np.min(li_s, axis=1) > 2.2) & (np.min(li_s, axis=1) < 2.5))
    full = build_disordered("argyrodite")
    li = [i for i, lab in enumerate(full.site_properties["wyckoff"]) if lab == "Li_48h"]
    d = full.distance_matrix[np.ix_(li, li)]
    assert np.min(d[d > 0]) == pytest.approx(1.75, abs=0.1)  # the 48h-48h doublet


def test_site_mixing_moves_halide_to_4d() -> None:
    s = build_disordered("argyrodite", {"halide": "Br", "site_mixing": 0.5})
    assert s.composition["Br"] == pytest.approx(4)
    labels = s.site_properties["wyckoff"]
    on_4d = [
        site.species.get_atomic_fraction("Br") for site, lab in zip(s, labels, strict=True) if lab == "S_4d"
    ]
    assert on_4d == pytest.approx([0.5] * 4)


def test_prototype_errors() -> None:
    with pytest.raises(StructureError, match="unknown prototype"):
        load_prototype("nope")
    with pytest.raises(StructureError, match="out of range"):
        build_disordered("argyrodite", {"site_mixing": 2})
    assert "argyrodite" in list_prototypes()
