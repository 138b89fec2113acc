"""NMR: VASP shielding/EFG from real OUTCARs, quadrupolar parameters, referencing, spectra."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure
from typer.testing import CliRunner

from conftest import RunCampaign, require_fixtures
from superionic.analysis.nmr import (
    CQ_MHZ_PER_MB_V_A2,
    efg_parameters,
    ensemble_spectrum,
    find_peaks_ppm,
    quadrupole_moment_mb,
    reference_shifts,
    shielding_parameters,
    vasp_efg,
    vasp_shielding,
)
from superionic.cli import app
from superionic.errors import SuperionicError


def _species(base: Path) -> list[str]:
    return [s.specie.symbol for s in Structure.from_file(base / "efg" / "inputs" / "POSCAR")]


def test_efg_cq_and_eta_equal_vasps_own_table_for_every_site() -> None:
    base = require_fixtures("vasp/nmr_LiAlSiO4")
    docs = vasp_efg(base / "efg" / "outputs" / "OUTCAR.gz", _species(base), ["Li-6"])
    assert len(docs) == 21
    for d in docs:
        # same moments as VASP's QUAD_EFG (Li-6 -0.808, Al-27 146.6, O-17 -25.58 mb; Si none)
        assert d["vasp_q_mb"] == pytest.approx(
            quadrupole_moment_mb(d["isotope"]) if d["species"] != "Si" else 0.0
        )
        cq = d["cq_mhz"] if d["cq_mhz"] is not None else 0.0
        assert cq == pytest.approx(d["vasp_cq_mhz"], abs=6e-4)  # VASP prints 3 decimals
        vxx, vyy, vzz = d["efg_principal_V_A2"]
        # the OUTCAR tensor has 3 decimals (V/A^2): eta from it carries ~1e-3/|Vzz| of rounding
        assert d["eta_q"] == pytest.approx(d["vasp_eta"], abs=max(6e-4, 1.5e-3 / abs(vzz)))
        assert abs(vxx) <= abs(vyy) <= abs(vzz) and 0 <= d["eta_q"] <= 1
    al = next(d for d in docs if d["species"] == "Al")
    assert al["cq_mhz"] == pytest.approx(1.143, abs=1e-3)


def test_shielding_for_every_site_matches_vasps_printed_isotropic_value() -> None:
    base = require_fixtures("vasp/nmr_LiAlSiO4")
    docs = vasp_shielding(base / "cs" / "outputs" / "OUTCAR.gz", _species(base))
    assert len(docs) == 21
    for d in docs:
        assert d["sigma_iso_ppm"] == pytest.approx(d["vasp_printed_iso_ppm"], abs=1e-3)
    li = [d["sigma_iso_ppm"] for d in docs if d["species"] == "Li"]
    assert np.ptp(li) < 0.01  # the three Li sites are equivalent


def test_cq_unit_conversion_and_axial_tensor() -> None:
    # an axial tensor: eta = 0; C_Q(MHz) = e Q Vzz / h with Q in mb and Vzz in V/A^2
    p = efg_parameters(np.diag([-1.0, -1.0, 2.0]), 40.59)
    assert p["eta_q"] == pytest.approx(0.0) and p["efg_principal_V_A2"][2] == pytest.approx(2.0)
    assert p["cq_mhz"] == pytest.approx(1.602176634e-19 * 40.59e-31 * 2.0e20 / 6.62607015e-34 / 1e6)
    assert CQ_MHZ_PER_MB_V_A2 == pytest.approx(2.41799e-3, rel=1e-5)
    sh = shielding_parameters(np.diag([10.0, 20.0, 60.0]))
    assert sh["sigma_iso_ppm"] == pytest.approx(30.0)
    assert sh["sigma_aniso_ppm"] == pytest.approx(45.0) and sh["sigma_eta"] == pytest.approx(10 / 30)


def test_bad_isotope_and_outcar_without_nmr_are_named() -> None:
    with pytest.raises(SuperionicError) as err:
        quadrupole_moment_mb("P-31")
    assert "P-31" in str(err.value) and "spin 1/2" in str(err.value)
    base = require_fixtures("vasp/nmr_LiAlSiO4")
    with pytest.raises(SuperionicError) as err:
        vasp_efg(base / "structure_optimization" / "outputs" / "OUTCAR.relax2.gz", _species(base))
    assert "LEFG" in str(err.value)


def test_ensemble_spectrum_peaks_sit_at_the_referenced_shifts() -> None:
    sites = [{"species": "Li", "sigma_iso_ppm": s} for s in (88.0, 88.0, 88.0, 92.5, 92.5)]
    shifted = reference_shifts(sites, {"Li": {"sigma_ref_ppm": 90.0}})
    deltas = [s["delta_iso_ppm"] for s in shifted]
    assert deltas == pytest.approx([2.0, 2.0, 2.0, -2.5, -2.5])
    grid = np.linspace(-10, 10, 4001)
    spec = ensemble_spectrum(deltas, grid, fwhm_ppm=0.5)
    assert find_peaks_ppm(grid, spec) == pytest.approx([-2.5, 2.0], abs=0.01)
    assert np.trapezoid(spec, grid) == pytest.approx(5.0, rel=0.02)  # unit-area lines
    heights = [spec[np.argmin(abs(grid - x))] for x in (-2.5, 2.0)]
    assert heights[1] / heights[0] == pytest.approx(1.5, rel=0.01)  # 3 sites vs 2


def test_replayed_vasp_cs_and_efg_go_through_the_flow(tmp_path: Path, run_campaign: RunCampaign) -> None:
    from superionic.testing import ReplayJob, vasp_replay

    base = require_fixtures("vasp/nmr_LiAlSiO4")
    reference = Path(__file__).parent / "data" / "vasp_inputs"
    jobs = {
        "nmr_cs": ReplayJob(base / "cs", reference / "nmr_cs_LiAlSiO4"),
        "nmr_efg": ReplayJob(base / "efg", reference / "nmr_efg_LiAlSiO4"),
    }
    (tmp_path / "s.vasp").write_text((base / "efg" / "inputs" / "POSCAR").read_text())
    (tmp_path / "c.yaml").write_text(
        "name: nmr\nengine: vasp\nsystems:\n  - name: LiAlSiO4\n    structure: s.vasp\nstages:\n"
        "  - stage: nmr\n    isotopes: [Li-6]\n    shift_references_ppm: {Li: 89.0}\n"
        "    environment_species: [O]\n    environment_cutoff_A: 2.2\n"
    )
    with vasp_replay(jobs):
        r = run_campaign()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "report" / "nmr" / "nmr_sites.csv")))
    assert len(rows) == 21
    li = [row for row in rows if row["species"] == "Li"]
    for row in li:
        assert float(row["delta_iso_ppm"]) == pytest.approx(89.0 - float(row["sigma_iso_ppm"]))
        assert row["environment"] == "O4"  # tetrahedral Li
    al = next(row for row in rows if row["species"] == "Al")
    assert float(al["cq_mhz"]) == pytest.approx(1.143, abs=1e-3)
    assert (tmp_path / "report" / "nmr" / "nmr_spectrum_Li.png").stat().st_size > 1000


def test_analyze_nmr_cli(tmp_path: Path) -> None:
    base = require_fixtures("vasp/nmr_LiAlSiO4")
    out = tmp_path / "efg.csv"
    r = CliRunner().invoke(
        app, ["analyze", "nmr", str(base / "efg" / "outputs"), "--isotope", "Li-6", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 21 and {"site", "species", "isotope", "cq_mhz", "eta_q"} <= set(rows[0])
    assert rows[0]["isotope"] == "Li-6"


def _hcl_box(path: Path, box: float = 10.0) -> None:
    from pymatgen.core import Lattice

    c = box / 2
    s = Structure(
        Lattice.cubic(box), ["H", "Cl"], [[c, c, c - 0.64], [c, c, c + 0.64]], coords_are_cartesian=True
    )
    s.to(filename=str(path))


def test_cp2k_shielding_of_a_molecule_in_a_box_through_the_flow(
    tmp_path: Path, run_campaign: RunCampaign
) -> None:
    from conftest import require_executable

    require_executable("cp2k")
    _hcl_box(tmp_path / "HCl.cif")
    (tmp_path / "c.yaml").write_text(
        "name: cp2knmr\nengine: cp2k\nsystems:\n  - name: HCl\n    structure: HCl.cif\n"
        "stages:\n  - stage: nmr\n    efg: false\n"
    )
    r = run_campaign("c.yaml")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {
        row["species"]: row for row in csv.DictReader(open(tmp_path / "report" / "cp2knmr" / "nmr_sites.csv"))
    }
    # CP2K's own ISOTROPY line, parsed independently from the SHIFT file
    (shift,) = list((tmp_path / ".superionic" / "jobs").rglob("NMR-SHIFT-1.data"))
    printed = [float(x) for x in re.findall(r"(?<!AN)ISOTROPY =\s*(-?\d+\.\d+)", shift.read_text())]
    assert float(rows["H"]["sigma_iso_ppm"]) == pytest.approx(printed[0], abs=1e-3)
    assert float(rows["Cl"]["sigma_iso_ppm"]) == pytest.approx(printed[1], abs=1e-3)
    # gas-phase HCl: H about 31 ppm, Cl about 950 ppm; the Gamma-only periodic box shifts both
    # (this 10 A box: H 28, Cl 819; an 8 A box: H 33, Cl 898)
    assert 20 < float(rows["H"]["sigma_iso_ppm"]) < 40
    assert 750 < float(rows["Cl"]["sigma_iso_ppm"]) < 1000
    # the same numbers from `superionic analyze nmr` on the CP2K folder; Haeberlen anisotropy = CP2K's
    out = tmp_path / "cp2k.csv"
    res = CliRunner().invoke(app, ["analyze", "nmr", str(shift.parent), "--out", str(out)])
    assert res.exit_code == 0, res.output
    cli_rows = list(csv.DictReader(open(out)))
    aniso = [float(x) for x in re.findall(r"ANISOTROPY =\s*(-?\d+\.\d+)", shift.read_text())]
    assert [float(r["sigma_iso_ppm"]) for r in cli_rows] == pytest.approx(printed, abs=1e-3)
    assert [float(r["sigma_aniso_ppm"]) for r in cli_rows] == pytest.approx(aniso, abs=1e-3)


def test_cp2k_nmr_refuses_a_small_periodic_cell(tmp_path: Path) -> None:
    from pymatgen.core import Lattice

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: small\nengine: cp2k\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: nmr\n    efg: false\n"
    )
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2
    assert "Gamma-point only" in r.output and "5.13" in r.output and ">= 10" in r.output


def test_cp2k_efg_canary_refuses_the_debian_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_campaign: RunCampaign
) -> None:
    """The EFG canary runs at the start of the CP2K EFG job (never in `validate`), which fails with
    its reason; the verdict is cached per executable, and a later `validate` reports it."""
    import tempfile

    from conftest import require_executable

    require_executable("cp2k")
    monkeypatch.setenv("SUPERIONIC_CACHE_DIR", str(tmp_path / "cache"))  # run it, not a cached verdict
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the canary's folder goes
    from superionic.engines.cp2k_nmr import cached_efg_verdict, efg_canary

    _hcl_box(tmp_path / "HCl.cif")
    (tmp_path / "c.yaml").write_text(
        "name: efg\nengine: cp2k\nsystems:\n  - name: HCl\n    structure: HCl.cif\nstages:\n  - stage: nmr\n"
    )
    # validate runs no executable: with no verdict cached there is nothing to refuse yet
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 0, r.output
    assert cached_efg_verdict() is None
    # the EFG job runs the canary first and fails with its reason (before any shielding run)
    run = run_campaign()
    assert run.returncode == 1 and "vlimit_atom" in run.stderr, run.stdout + run.stderr
    assert not list((tmp_path / ".superionic" / "jobs").rglob("NMR.inp"))
    assert not list((tmp_path / "tmp").iterdir())  # the canary's temporary folder is gone
    ok, reason = efg_canary()  # the verdict the job cached, for this executable
    assert not ok
    assert "vlimit_atom" in reason and "indso(2, iso)" in reason and "eta" in reason
    assert reason in run.stderr
    # a later validate reports the cached refusal, with that reason
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "vlimit_atom" in r.output
    assert "stages[0].efg" in r.output
    # the machine's verdict keeps no one from reading or cleaning up the campaign
    for command in (["status"], ["report"]):
        r = CliRunner().invoke(app, [*command, str(tmp_path / "c.yaml")])
        assert r.exit_code == 0, (command, r.output)


def _corundum() -> Structure:
    from pymatgen.core import Lattice

    return Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(4.759, 12.991), ["Al", "O"], [[0, 0, 0.35216], [0.30624, 0, 0.25]]
    ).get_primitive_structure()


def test_abinit_efg_of_corundum_through_the_flow(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """alpha-Al2O3 with ABINIT PAW (prtefg 2): Al on the 3-fold axis has eta = 0, equivalent sites
    are equal, and C_Q from the parsed tensor equals what ABINIT printed."""
    from conftest import require_executable

    require_executable("abinit")
    _corundum().to(filename=str(tmp_path / "Al2O3.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: abi\nengine: abinit\npreset: abinit_smoke\n"
        "systems:\n  - name: corundum\n    structure: Al2O3.cif\n"
        "stages:\n  - stage: nmr\n    shielding: false\n"
    )
    r = run_campaign("c.yaml")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "report" / "abi" / "nmr_sites.csv")))
    al = [row for row in rows if row["species"] == "Al"]
    o = [row for row in rows if row["species"] == "O"]
    assert len(al) == 4 and len(o) == 6
    assert all(float(row["eta_q"]) < 1e-3 for row in al)  # axial site
    assert np.ptp([float(row["cq_mhz"]) for row in al]) < 1e-4  # equivalent sites equal
    assert np.ptp([float(row["cq_mhz"]) for row in o]) < 1e-4
    assert np.ptp([float(row["eta_q"]) for row in o]) < 1e-4
    (abo,) = list((tmp_path / ".superionic" / "jobs").rglob("run.abo"))
    printed = [float(x) for x in re.findall(r"Cq =\s*(-?[\d.]+) MHz", abo.read_text())]
    assert [float(row["cq_mhz"]) for row in rows] == pytest.approx(printed, abs=2e-4)
    assert float(al[0]["cq_mhz"]) == pytest.approx(2.0, abs=0.5)  # 27Al in corundum: 2.4 MHz measured


def test_abinit_refuses_elements_without_a_paw_dataset(tmp_path: Path) -> None:
    from conftest import require_executable

    require_executable("abinit")
    base = require_fixtures("vasp/nmr_LiAlSiO4")
    (tmp_path / "s.vasp").write_text((base / "efg" / "inputs" / "POSCAR").read_text())
    (tmp_path / "c.yaml").write_text(
        "name: li\nengine: abinit\nsystems:\n  - name: LiAlSiO4\n    structure: s.vasp\n"
        "stages:\n  - stage: nmr\n"
    )
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2
    assert "no JTH PAW dataset for Li" in r.output and "EFGs only" in r.output


def test_reference_compounds_are_computed_in_the_campaign_and_set_sigma_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With reference_compounds, LiCl (Li: -1.1 ppm, study A) is computed by the same NMR engine
    and settings once per campaign, and sigma_ref = <sigma_iso(Li in LiCl)> + delta_exp."""
    base = require_fixtures("vasp/nmr_LiAlSiO4")
    (tmp_path / "s.vasp").write_text((base / "efg" / "inputs" / "POSCAR").read_text())
    (tmp_path / "c.yaml").write_text(
        "name: ref\nengine: vasp\nsystems:\n  - name: LiAlSiO4\n    structure: s.vasp\nstages:\n"
        "  - stage: nmr\n    reference_compounds: true\n"
    )
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign
    from superionic.stages.nmr import collect_nmr

    # no VASP here: the flow is only built (check_engines off), nothing runs
    names = [
        p.name for p in planned_jobs(build_flows(load_campaign(tmp_path / "c.yaml", check_engines=False)))
    ]
    assert {"reference LiCl nmr cs", "reference LiCl nmr efg", "reference LiCl nmr"} <= set(names)
    assert names.index("reference LiCl nmr") < names.index("LiAlSiO4 #0 nmr")  # computed first, once
    # the referencing itself, on the real CS outputs
    s = Structure.from_file(base / "cs" / "inputs" / "POSCAR")
    licl_sites = [{"species": "Li", "sigma_iso_ppm": 90.0}, {"species": "Li", "sigma_iso_ppm": 90.2}]
    folder = tmp_path / "cs"
    folder.mkdir()
    (folder / "OUTCAR.gz").symlink_to(base / "cs" / "outputs" / "OUTCAR.gz")
    out = collect_nmr.original(
        s,
        str(folder),
        None,
        [],
        "x",
        reference_results={"Li": {"result": {"sites": licl_sites}, "delta_exp_ppm": -1.1}},
    )
    li = [site for site in out["sites"] if site["species"] == "Li"]
    for site in li:
        assert site["delta_iso_ppm"] == pytest.approx(90.1 - 1.1 - site["sigma_iso_ppm"])
