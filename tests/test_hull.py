"""Energy above hull: analytic cases, shipped competing phases, and an MLIP campaign (study A)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Composition
from pymatgen.entries.computed_entries import ComputedEntry
from typer.testing import CliRunner

from conftest import RunCampaign
from superionic.analysis.hull import hull_table, load_entries_file, mixing_enthalpy_ev_per_atom
from superionic.cli import app
from superionic.errors import SuperionicError
from superionic.structures.phases import build_phase, load_phases, min_distance_A, missing_elements

ROOT = Path(__file__).resolve().parents[1]


def _e(formula: str, e_per_atom: float, label: str = "") -> ComputedEntry:
    c = Composition(formula)
    return ComputedEntry(c, e_per_atom * c.num_atoms, data={"label": label or formula})


def test_hull_of_a_binary_by_hand() -> None:
    # Li and Cl at 0 eV/atom, LiCl at -1 eV/atom: the hull at Li3Cl (x_Cl = 0.25) is -0.5 eV/atom
    competing = [_e("Li", 0.0), _e("Cl", 0.0), _e("LiCl", -1.0)]
    (row,) = hull_table([_e("Li3Cl", -0.45, "t")], competing)
    assert row["e_hull_meV_per_atom"] == pytest.approx(50.0)
    assert row["decomposition"] == "0.5 LiCl + 0.5 Li"
    (below,) = hull_table([_e("LiCl", -1.2, "t")], competing)
    assert below["e_hull_meV_per_atom"] == pytest.approx(-200.0) and below["stable"]


def test_missing_elemental_reference_is_named() -> None:
    with pytest.raises(SuperionicError) as err:
        hull_table([_e("LiCl", -1.0)], [_e("Li", 0.0), _e("LiCl", -1.0)])
    assert "no elemental reference for Cl" in str(err.value)


def test_mixing_enthalpy_against_end_members() -> None:
    # Li6PS5Cl-Li6PS5Br style: the 50/50 solution 10 meV/atom above the linear mix
    a, b = _e("Li6PS5Cl", -4.0), _e("Li6PS5Br", -3.9)
    mix = _e("Li12P2S10ClBr", -3.95 + 0.010)
    dh, fractions = mixing_enthalpy_ev_per_atom(mix, [a, b])
    assert dh == pytest.approx(0.010)
    assert fractions == pytest.approx({"Li6PS5Cl": 0.5, "Li6PS5Br": 0.5})
    with pytest.raises(SuperionicError):
        mixing_enthalpy_ev_per_atom(_e("Li2O", -3.0), [a, b])


def test_entries_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "mp.json"
    bad.write_text("{not json")
    with pytest.raises(SuperionicError) as err:
        load_entries_file(bad)
    assert "mp.json" in str(err.value)
    good = tmp_path / "ok.json"
    good.write_text(json.dumps([_e("Li", -1.9).as_dict(), _e("LiCl", -3.4).as_dict()]))
    assert [e.composition.reduced_formula for e in load_entries_file(good)] == ["Li", "LiCl"]


def test_shipped_phases_are_sane() -> None:
    names = {p.name for p in load_phases()}
    assert {"Li2S", "Li3PS4", "LiBH4", "Na2O", "NaBH4", "NaH", "NaCl", "LiCl", "Li2O", "ZrO2"} <= names
    for phase in load_phases():
        s = build_phase(phase)
        assert s.is_ordered, phase.name
        assert min_distance_A(s) > 0.7, phase.name  # H2 is 0.74 A
        assert phase.citation, phase.name
    li3ps4 = build_phase("Li3PS4")
    assert li3ps4.composition.formula.replace(" ", "") == "Li6P2S8"
    assert missing_elements({"Li", "P", "S", "B", "H"}) == []
    assert missing_elements({"Li", "Sm"}) == ["Sm"]


def test_campaign_with_unlisted_element_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: h\nengine: mlip\nsystems:\n  - prototype: ucl3_halide\n    params: {metal: Sm}\n"
        "stages:\n  - stage: order\n  - stage: relax\n  - stage: hull\n"
    )
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "no competing phases for element(s) Sm" in result.output and "entries_file" in result.output


def test_study_a_hull_campaign_prints_e_hull(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """Li5PS4(BH4)2 and Li4.75PS4(BH4)1.75 (vacancy on 4a, on 4d) with CHGNet: each E_hull equals
    the energy above the LiBH4-Li3PS4 tie line computed by hand from the relaxed energies."""
    # one ordering per system, and 60 relax steps instead of 300: the 80-atom cells start ~330
    # meV/atom above their minimum (random BH4 orientations) and reach fmax 0.05 only after ~200
    # CHGNet steps; after 60 BFGS steps (the preset's optimizer) they are within ~20 meV/atom of
    # it, which the E_hull window below allows
    text = (
        (ROOT / "workflows" / "study_a_hull.yaml")
        .read_text()
        .replace("n_structures: 2", "n_structures: 1")
        .replace("max_steps: 300", "max_steps: 60")
    )
    (tmp_path / "c.yaml").write_text(text)
    result = run_campaign("c.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "E_hull" in result.stdout and "vacancy_site=4a" in result.stdout
    report = tmp_path / "report" / "study-a-hull"
    rows = list(csv.DictReader(open(report / "hull.csv")))
    phases = {r["phase"]: float(r["energy_per_atom_ev"]) for r in csv.DictReader(open(report / "phases.csv"))}
    assert len(rows) == 3
    for r in rows:
        c = Composition(r["formula"])
        # per formula unit Li(5-y)PS4(BH4)(2-y) = (1) Li3PS4 + (2-y) LiBH4: fractions by atoms
        n_li3ps4, n_libh4 = c["P"], c["B"]
        atoms = 8 * n_li3ps4 + 6 * n_libh4
        assert atoms == pytest.approx(c.num_atoms)
        tie = (8 * n_li3ps4 * phases["Li3PS4"] + 6 * n_libh4 * phases["LiBH4"]) / atoms
        assert float(r["e_hull_meV_per_atom"]) == pytest.approx(
            1000 * (float(r["energy_per_atom_ev"]) - tie), abs=1e-6
        )
        assert -50 < float(r["e_hull_meV_per_atom"]) < 100
        assert "LiBH4" in r["decomposition"] and "Li3PS4" in r["decomposition"]
    assert (report / "hull.png").stat().st_size > 1000
    assert np.isfinite([float(r["formation_energy_ev_per_atom"]) for r in rows]).all()
