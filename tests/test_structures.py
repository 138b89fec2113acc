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


@pytest.mark.parametrize("name", ["argyrodite", "argyrodite_bh4"])
def test_argyrodite_free_anion_sites_sit_in_their_li_cages_clear_of_the_ps4(name: str) -> None:
    """The free anion sites (4d: S2- or BH4-; 4a: X- or BH4-) are each surrounded by 12 Li 48h
    sites (the Li cage of the argyrodite structure, Li-S 2.39 A in Li6PS5Cl) and lie more than 4 A
    from every PS4 sulfur. With the 16e sulfur on the other enantiomorph (x = 0.6196 with 4d at
    3/4), a PS4 corner pointed at 4d, 2.23 A from the free S2-, and no Li surrounded it."""
    s = build_disordered(name)
    labels = np.array(s.site_properties["wyckoff"])
    dm = s.distance_matrix
    li, s16 = labels == "Li_48h", labels == "S_16e"
    for free in [lab for lab in set(labels) if lab.endswith(("_4d", "_4a"))]:
        rows = dm[labels == free]
        assert rows[:, s16].min() > 4.0, free
        cage = np.sort(rows[:, li], axis=1)
        assert np.all(cage[:, 11] < 2.8) and np.all(cage[:, 12] > 4.0), free  # 12 Li, then nothing


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


def test_ucl3_type_halide_metal_chlorine_prism_and_68_atom_cell() -> None:
    proto = load_prototype("ucl3_halide")
    for metal, (lo, hi) in {"La": (2.94, 2.97), "Sm": (2.85, 2.92)}.items():
        s = build_disordered("ucl3_halide", {"metal": metal})
        assert s.composition.reduced_formula == f"Na0.75{metal}1.75Cl6"
        m_site = next(site for site in s if site.properties["wyckoff"] == "M_2c")
        d = sorted(n.nn_distance for n in s.get_neighbors(m_site, 3.5))
        assert len(d) == 9  # tricapped trigonal prism of the UCl3 type
        assert lo <= d[0] and d[-1] <= hi
    disordered = build_disordered("ucl3_halide")
    disordered.make_supercell([2, 2, 2])
    ordered = order_by_ewald(disordered, 2, proto.oxidation_states, steps_per_site=200)
    assert len(ordered[0].structure) == 68  # the AIMD cell of study C
    assert ordered[0].structure.composition.formula.replace(" ", "") == "Na6La14Cl48"
    assert ordered[0].ewald_energy_ev <= ordered[1].ewald_energy_ev


def test_natacl6_128_atom_cell_keeps_cations_apart() -> None:
    proto = load_prototype("natacl6")
    s = build_disordered("natacl6")
    s.make_supercell([2, 3, 4])
    best = order_by_ewald(s, 1, proto.oxidation_states, steps_per_site=200)[0].structure
    assert best.composition.formula.replace(" ", "") == "Na16Ta16Cl96"
    dm = best.distance_matrix
    sym = np.array([site.specie.symbol for site in best])
    ta_ta = dm[np.ix_(sym == "Ta", sym == "Ta")]
    # Ta5+ never on nearest-neighbour holes (a/sqrt(2) = 3.7 A) in the lowest-Ewald ordering
    assert np.min(ta_ta[ta_ta > 0]) > 5.0
    ta_cl = dm[np.ix_(sym == "Ta", sym == "Cl")]
    assert np.sort(ta_cl, axis=1)[:, :6] == pytest.approx(5.24 / 2, abs=1e-6)  # TaCl6 octahedra


def test_li_zr_oxychloride_end_members() -> None:
    pure = build_disordered("li_zr_oxychloride").composition
    assert pure["Cl"] / pure["Zr"] == pytest.approx(6.0)
    assert pure["Li"] / pure["Zr"] == pytest.approx(2.0)
    oxy = build_disordered("li_zr_oxychloride", {"t": 1.0}).composition
    assert oxy["Li"] / oxy["Zr"] == pytest.approx(3.0)
    assert oxy["Cl"] / oxy["Zr"] == pytest.approx(4.0)
    assert oxy["O"] / oxy["Zr"] == pytest.approx(1.5)
