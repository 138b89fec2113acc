"""Local-structure analysis: CSM, connectivity, coordination, RDF, G(r) on known cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from superionic.analysis.local_structure import (
    bond_angles,
    connectivity,
    coordination,
    csm,
    first_peak,
    local_structure_summary,
    polyhedra_csm,
    rdf,
    rdf_similarity,
    xray_gr,
)
from superionic.errors import SuperionicError

OCT = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)


def test_csm_is_zero_for_ideal_shapes_in_any_orientation_and_size() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert csm(2.4 * OCT @ q.T + [1.0, 2.0, 3.0]) == pytest.approx(0.0, abs=1e-10)
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    assert csm(tet[[2, 0, 3, 1]] @ q.T, "tetrahedron") == pytest.approx(0.0, abs=1e-10)


def test_csm_of_an_elongated_octahedron_by_hand() -> None:
    # vertices (+-1,0,0), (0,+-1,0), (0,0,+-c): best ideal octahedron is the same axes scaled by
    # s = (4 + 2c)/6, so S = 100 (sum|Q|^2 - (4 + 2c)^2 / 6) / sum|Q|^2 with sum|Q|^2 = 4 + 2c^2
    c = 1.2
    q = OCT.copy()
    q[4:, 2] *= c
    by_hand = 100 * ((4 + 2 * c**2) - (4 + 2 * c) ** 2 / 6) / (4 + 2 * c**2)
    assert by_hand == pytest.approx(0.7752, abs=1e-4)
    assert csm(q[[5, 2, 0, 4, 1, 3]]) == pytest.approx(by_hand, abs=1e-9)  # vertex order irrelevant


def test_csm_refuses_a_wrong_polyhedron() -> None:
    with pytest.raises(SuperionicError) as err:
        csm(OCT[:4], "octahedron")
    assert "octahedron needs 6 vertices" in str(err.value)


def test_connectivity_of_known_crystals() -> None:
    reo3 = Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.75), ["Re", "O"], [[0, 0, 0], [0.5, 0, 0]])
    assert connectivity(reo3, "Re", ["O"], 2.0)["pairs"] == {"corner": 3}  # 6 corners per octahedron / 2
    reo3.make_supercell([2, 2, 2])
    c = connectivity(reo3, "Re", ["O"], 2.0)
    assert c["pairs"] == {"corner": 24} and c["corner_bridges"] == {"O": 1.0}
    assert c["ligand_environment"]["O"]["bridging"] == 1.0
    rutile = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.305, 0.305, 0]]
    )
    # each TiO6 shares 2 edges (along c) and 8 corners: per cell of 2 Ti, 2 edge and 8 corner pairs
    assert connectivity(rutile, "Ti", ["O"], 2.1)["pairs"] == {"corner": 8, "edge": 2}
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert connectivity(nacl, "Na", ["Cl"], 3.0)["pairs"] == {"edge": 24, "corner": 12}


def test_coordination_angles_and_csm_of_rock_salt() -> None:
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    c = coordination(nacl, "Na", "Cl", 3.0)
    assert c["cn_mean"] == 6 and c["bond_length_mean_A"] == pytest.approx(2.82)
    angles = bond_angles(nacl, "Na", "Cl", 3.0)
    assert sorted(set(np.round(angles, 6))) == [90.0, 180.0]
    assert polyhedra_csm(nacl, "Na", "Cl", 3.0)["csm_mean"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(SuperionicError) as err:
        coordination(nacl, "Na", "Cl", 2.0)
    assert "no Cl within 2.0 A of any Na" in str(err.value)


def test_snapshot_pooling_by_hand() -> None:
    """Two snapshots: rock salt (every Na six Cl) and the same cell without the Cl at the body
    centre, whose six Na neighbours are three Na images twice each: three Na keep 4, one keeps 6.
    Pooled over all eight centres: CN 42/8 = 5.25, histogram {4: 3, 6: 5}, spread of the
    snapshot means 0.75. O, absent from the composition, is CN 0 (not an error)."""
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    holed = nacl.copy()
    holed.remove_sites([i for i, site in enumerate(nacl) if np.allclose(site.frac_coords, 0.5)])
    assert len(holed) == 7
    out = local_structure_summary([nacl, holed], "Na", ["Cl", "O"], 3.0)
    cl = out["coordination"]["Cl"]
    assert cl["cn_mean"] == pytest.approx(5.25)
    assert cl["cn_histogram"] == {4: 3, 6: 5}
    assert cl["cn_std_snapshots"] == pytest.approx(0.75)
    assert cl["bond_length_mean_A"] == pytest.approx(2.82)
    assert out["coordination"]["O"]["cn_mean"] == 0 and out["coordination"]["O"]["absent"]
    assert out["n_snapshots"] == 2
    # rock salt: 12 edge-sharing neighbours per octahedron; pairs pooled over both snapshots
    single = connectivity(nacl, "Na", ["Cl"], 3.0)
    assert out["connectivity"]["pairs"]["edge"] >= single["pairs"]["edge"]
    assert sum(out["connectivity"]["fractions"].values()) == pytest.approx(1.0)


def test_rdf_peaks_and_gr_of_fcc() -> None:
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nacl.make_supercell([3, 3, 3])
    g = rdf(nacl, "Na", "Na", r_max=8.0, bin_A=0.02)
    assert first_peak(g["r_A"], g["g"])[0] == pytest.approx(5.64 / np.sqrt(2), abs=0.02)
    # the number of Na within the first shell from the RDF integral: 12
    r, gg = np.array(g["r_A"]), np.array(g["g"])
    rho = (108 - 1) / nacl.volume  # g_AA is normalised to the density of the other N - 1 atoms
    mask = r < 4.5
    shell = 4 / 3 * np.pi * ((r + 0.01) ** 3 - (r - 0.01) ** 3)
    n = np.sum(gg[mask] * rho * shell[mask])
    assert n == pytest.approx(12, abs=0.01)
    xg = xray_gr(nacl, r_max=6.0)
    assert len(xg["G"]) == len(xg["r_A"])
    assert rdf_similarity(g["g"], g["g"]) == pytest.approx(1.0)


def test_analyze_structure_cli_on_a_crystal_and_a_trajectory(tmp_path: Path) -> None:
    import csv

    from typer.testing import CliRunner

    from conftest import require_fixtures
    from superionic.cli import app

    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nacl.to(filename=str(tmp_path / "NaCl.cif"))
    r = CliRunner().invoke(
        app,
        [
            "analyze",
            "structure",
            str(tmp_path / "NaCl.cif"),
            "--center",
            "Na",
            "--ligand",
            "Cl",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert r.exit_code == 0, r.output
    (row,) = list(csv.DictReader(open(tmp_path / "a" / "summary.csv")))
    assert float(row["cn_Cl"]) == 6 and float(row["csm_mean"]) < 1e-9
    assert float(row["edge_sharing"]) == pytest.approx(24 / 36) and float(
        row["corner_sharing"]
    ) == pytest.approx(12 / 36)
    assert (tmp_path / "a" / "rdf.png").is_file()
    base = require_fixtures("vasp/Si_mp_morph")
    vrun = base / "Vasp_Slow_Quench_MD_Maker_400K" / "outputs" / "vasprun.xml.gz"
    r = CliRunner().invoke(
        app,
        [
            "analyze",
            "structure",
            str(vrun),
            "--center",
            "Si",
            "--ligand",
            "Si",
            "--cutoff-A",
            "2.7",
            "--every",
            "20",
            "--out",
            str(tmp_path / "b"),
        ],
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "b" / "summary.csv")))
    assert len(rows) == 5  # 100 MD steps, every 20th frame
    assert all(3.5 < float(x["cn_Si"]) < 5.0 for x in rows)  # amorphous Si: about 4
