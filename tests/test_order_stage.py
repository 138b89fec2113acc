"""Ordering of study cells: whole molecules, distinct orderings, the `order` command."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.transformations.standard_transformations import (
    OrderDisorderedStructureTransformation,
)
from typer.testing import CliRunner

from superionic.cli import app
from superionic.ordering import order_by_ewald
from superionic.structures import build_disordered, load_prototype
from superionic.structures.polyanions import check_polyanions, expand_polyanions

runner = CliRunner()
LPSCL = Composition("Li11P2S9Cl3")


def ordered(name: str, params: dict, supercell: list[int], n: int, **kw) -> tuple[list, dict]:
    proto = load_prototype(name)
    s = build_disordered(name, params)
    s.make_supercell(supercell)
    return order_by_ewald(s, n, proto.oxidation_states, **kw), proto.polyanions


def assert_whole_and_clash_free(structure: Structure, units: dict, clash: float = 1.6) -> None:
    assert check_polyanions(structure, units) == []
    unit = np.array(structure.site_properties["polyanion"])
    h = [i for i, site in enumerate(structure) if site.specie.symbol == "H"]
    dm = structure.distance_matrix
    for i in h:
        others = [j for j in range(len(structure)) if j != i and (unit[j] != unit[i] or unit[i] < 0)]
        assert dm[i, others].min() >= clash


def test_bh4_argyrodite_vacancy_on_4a_whole_molecules() -> None:
    orderings, units = ordered("argyrodite_bh4", {"bh4_vacancies": 0.25, "vacancy_site": "4a"}, [2, 1, 1], 3)
    for rank, o in enumerate(orderings):
        s = expand_polyanions(o.structure, units, seed=rank)
        assert s.composition.formula == "Li38 B14 P8 H56 S32"  # Li4.75PS4(BH4)1.75 x 8
        assert_whole_and_clash_free(s, units)
        assert list(o.vacated) == ["Li_48h", "BH4_4a"] and len(o.vacated["BH4_4a"]) == 2
        # B-H bond lengths are exactly the declared 1.21 A
        b = [i for i, site in enumerate(s) if site.specie.symbol == "B"]
        assert np.sort(
            s.distance_matrix[b][:, [i for i, x in enumerate(s) if x.specie.symbol == "H"]], axis=1
        )[:, :4] == pytest.approx(1.21, abs=1e-6)


def test_amide_antiperovskite_rounded_and_whole() -> None:
    orderings, units = ordered("antiperovskite_amide", {"x": 0.5}, [3, 3, 3], 2, round_counts=True)
    s = expand_polyanions(orderings[0].structure, units, seed=0)
    comp = s.composition
    assert (comp["Na"], comp["N"], comp["O"], comp["B"]) == (67, 14, 13, 27)
    charge = comp["Na"] - 2 * comp["O"] - comp["N"] - comp["B"]
    assert charge == 0
    assert_whole_and_clash_free(s, units)
    n = [i for i, site in enumerate(s) if site.specie.symbol == "N"]
    h_of = {i: [nb for nb in s.get_neighbors(s[i], 1.1) if nb.specie.symbol == "H"] for i in n}
    for i, hs in h_of.items():
        v1, v2 = (hs[0].coords - s[i].coords), (hs[1].coords - s[i].coords)
        angle = np.degrees(np.arccos(v1 @ v2 / np.linalg.norm(v1) / np.linalg.norm(v2)))
        assert angle == pytest.approx(104.0, abs=0.01)


@pytest.mark.parametrize(
    ("params", "group_by"),
    [
        # 4a and 4d with different occupancies: both codes keep them apart
        ({"x": 0.5, "site_mixing": 0.25}, "wyckoff"),
        # equal occupancies on 4a and 4d: pymatgen merges them; compare on that same problem
        ({"x": 0.5, "site_mixing": 0.5}, "occupancy"),
    ],
)
def test_mixed_argyrodite_orderings_distinct_and_below_pymatgen(params: dict, group_by: str) -> None:
    proto = load_prototype("argyrodite")
    s = build_disordered("argyrodite", params)
    s.make_supercell([2, 1, 1])
    ours = order_by_ewald(s, 10, proto.oxidation_states, seed=0, group_by=group_by)
    assert len(ours) == 10
    for o in ours:
        assert o.structure.composition.element_composition.reduced_composition == LPSCL  # Li5.5PS4.5Cl1.5
    matcher = StructureMatcher()
    for i in range(len(ours)):
        for j in range(i):
            assert not matcher.fit(ours[i].structure, ours[j].structure)
    ref = s.copy()
    ref.add_oxidation_state_by_element(proto.oxidation_states)
    pmg = OrderDisorderedStructureTransformation(algo=2).apply_transformation(ref, return_ranked_list=10)
    assert ours[0].ewald_energy_ev <= pmg[0]["energy"]
    assert ours[-1].ewald_energy_ev <= pmg[-1]["energy"]


@pytest.mark.slow
def test_default_search_within_1_ev_of_long_annealing() -> None:
    params = {"x": 0.5, "site_mixing": 0.5}
    default, _ = ordered("argyrodite", params, [2, 1, 1], 1, seed=0)
    long_run, _ = ordered("argyrodite", params, [2, 1, 1], 1, seed=11, n_restarts=48, steps_per_site=3000)
    assert default[0].ewald_energy_ev - long_run[0].ewald_energy_ev < 1.0


def test_order_command_writes_cifs_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "ord"
    result = runner.invoke(
        app,
        [
            "order",
            "argyrodite",
            "--param",
            "x=0.5",
            "--param",
            "site_mixing=0.5",
            "--supercell",
            "2",
            "1",
            "1",
            "--n",
            "25",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "configurations before symmetry" in result.output
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [int(r["rank"]) for r in rows] == list(range(1, 26))
    energies = [float(r["ewald_energy_ev"]) for r in rows]
    assert energies == sorted(energies)
    first = Structure.from_file(out / rows[0]["file"])
    assert first.composition.reduced_composition == LPSCL
    assert {"rank", "file", "ewald_energy_ev", "formula"} <= set(rows[0])


def test_order_command_refuses_non_integer_counts(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "order",
            "antiperovskite_amide",
            "--param",
            "x=0.5",
            "--supercell",
            "3",
            "3",
            "3",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2
    assert "antiperovskite_amide (supercell 3x3x3)" in result.output
    assert "sublattice Na_3c" in result.output and "67.500 atoms" in result.output
    assert not (tmp_path / "o").exists()


def test_order_command_on_cif_with_polyanion(tmp_path: Path) -> None:
    s = build_disordered("argyrodite_bh4", {"bh4_vacancies": 0.25, "vacancy_site": "4d"})
    cif = tmp_path / "dis.cif"
    s.to(filename=str(cif))
    out = tmp_path / "o"
    result = runner.invoke(
        app,
        [
            "order",
            str(cif),
            "--supercell",
            "2",
            "1",
            "1",
            "--n",
            "2",
            "--out",
            str(out),
            "--oxidation",
            "Li=1",
            "--oxidation",
            "P=5",
            "--oxidation",
            "S=-2",
            "--polyanion",
            "B=BH4",
        ],
    )
    assert result.exit_code == 0, result.output
    ordered_cif = Structure.from_file(out / "1.cif")
    assert ordered_cif.composition["H"] == 4 * ordered_cif.composition["B"] == 56


def test_order_stage_through_campaign_run(tmp_path: Path) -> None:
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        "name: ord\nsystems:\n  - prototype: argyrodite_bh4\n"
        "    params: {bh4_vacancies: 0.25, vacancy_site: [4a, 4d]}\n"
        "    supercell: [2, 1, 1]\nstages:\n  - stage: order\n    n_structures: 3\n"
    )
    result = runner.invoke(app, ["run", str(campaign), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "rep" / "orderings.csv")))
    assert len(rows) == 6  # 2 systems x 3 orderings
    assert {r["system"] for r in rows} == {"argyrodite_bh4-vacancy_site=4a", "argyrodite_bh4-vacancy_site=4d"}
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    c = load_campaign(campaign)
    store = open_campaign_store(c, create=False)
    assert store is not None
    store.connect()
    for job in planned_jobs(build_flows(c)):
        out = store.job_store.get_output(job.uuid)
        for s in out["structures"]:
            s = Structure.from_dict(s) if isinstance(s, dict) else s
            assert s.composition["H"] == 4 * s.composition["B"] == 56


def test_missing_oxidation_state_is_named(tmp_path: Path) -> None:
    s = Structure(
        [[5, 0, 0], [0, 5, 0], [0, 0, 5]],
        [{"Li": 0.5}, {"Li": 0.5}, "Xe"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]],
    )
    cif = tmp_path / "x.cif"
    s.to(filename=str(cif))
    result = runner.invoke(app, ["order", str(cif), "--out", str(tmp_path / "o"), "--oxidation", "Li=1"])
    assert result.exit_code == 2
    assert "Xe" in result.output and "oxidation state" in result.output


def test_ordered_end_member_gets_orientation_replicas() -> None:
    """Na3O(BH4) has one site ordering: a second replica turns its BH4 units, nothing else moves."""
    from superionic.stages.order import OrderMaker

    proto = load_prototype("antiperovskite_amide")
    s = build_disordered("antiperovskite_amide", {"x": 0.0})
    maker = OrderMaker(n_structures=2, oxidation_states=proto.oxidation_states, polyanions=proto.polyanions)
    out = maker.make.original(maker, s)
    a, b = out["structures"]
    assert out["orientation_replicas"] == [1] and out["ewald_energies_ev"][0] == out["ewald_energies_ev"][1]
    heavy = [i for i, site in enumerate(a) if site.specie.symbol != "H"]
    assert np.allclose(a.frac_coords[heavy], b.frac_coords[heavy])
    h = [i for i, site in enumerate(a) if site.specie.symbol == "H"]
    assert len(h) == 4 and np.abs(a.cart_coords[h] - b.cart_coords[h]).max() > 0.3
    check_polyanions(b, proto.polyanions)
    rock_salt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.1), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    plain = OrderMaker(n_structures=2, oxidation_states={"Li": 1, "Cl": -1})  # no polyanions to turn
    with pytest.raises(ValueError, match="only 1 distinct orderings exist"):
        plain.make.original(plain, rock_salt)
