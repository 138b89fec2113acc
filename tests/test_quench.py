"""Quench stage: replayed VASP melt-quench segments through the flow; MLIP melt-quench of NaTaCl6."""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure
from typer.testing import CliRunner

from conftest import RunCampaign, require_fixtures
from superionic.cli import app


def test_replayed_vasp_quench_goes_through_the_flow(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """Si16 (atomate2 MPMorph fixture): heat, hold and cool replayed from the slow-quench runs at
    500, 450 and 400 K; the analysis sees the last run's final structure."""
    from superionic.testing import ReplayJob, vasp_replay

    base = require_fixtures("vasp/Si_mp_morph")
    reference = Path(__file__).parent / "data" / "vasp_inputs"
    jobs = {
        f"quench_{seg}": ReplayJob(
            base / f"Vasp_Slow_Quench_MD_Maker_{folder}", reference / f"quench_{inputs}"
        )
        for seg, folder, inputs in (
            ("heat", "500K", "heat_100_to_2000K"),
            ("hold", "450K", "hold_2000K"),
            ("cool", "400K", "cool_2000_to_100K"),
        )
    }
    start = base / "Vasp_Slow_Quench_MD_Maker_500K" / "inputs" / "POSCAR.gz"
    (tmp_path / "Si.vasp").write_text(gzip.open(start, "rt").read())
    (tmp_path / "c.yaml").write_text(
        "name: siq\nengine: vasp\nsystems:\n  - name: Si16\n    structure: Si.vasp\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [2000]\n    heat_ps: 0.2\n    hold_ps: 0.2\n"
        "    quench_ps: 0.2\n    center: Si\n    ligands: [Si]\n    cutoff_A: 2.7\n"
    )
    with vasp_replay(jobs):
        r = run_campaign("c.yaml")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for seg in ("heat", "hold", "cool"):
        assert f"done Si16 #0 quench 2000 K #0 {seg}" in r.stdout
    rows = list(csv.DictReader(open(tmp_path / "report" / "siq" / "structure.csv")))
    assert [row["structure"] for row in rows] == ["crystal", "quench 2000 K #0"]
    final = Structure.from_str(
        gzip.open(base / "Vasp_Slow_Quench_MD_Maker_400K" / "outputs" / "CONTCAR.gz", "rt").read(),
        fmt="poscar",
    )
    assert float(rows[1]["density_g_cm3"]) == pytest.approx(final.density, rel=1e-6)
    # the three segments carry their own TEBEG/TEEND/NSW (heat 100 -> 2000 K, hold, cool 2000 -> 100)
    from superionic.engines.vasp import quench_jobs

    settings = {
        "start_temperature_K": 100.0,
        "heat_ps": 0.2,
        "hold_ps": 0.2,
        "quench_ps": 0.2,
        "timestep_fs": 2.0,
    }
    jobs, _ = quench_jobs(settings, 2000.0, final, "x")
    gens = [j.function.__self__.input_set_generator for j in jobs]
    assert [(g.start_temp, g.end_temp, g.nsteps) for g in gens] == [
        (100, 2000, 100),
        (2000, 2000, 100),
        (2000, 100, 100),
    ]
    assert all(g.user_incar_settings["ISPIN"] == 1 for g in gens)


def test_replayed_vasp_mpmorph_density_step_sets_the_quench_volume(
    tmp_path: Path, run_campaign: RunCampaign
) -> None:
    """density: mpmorph on VASP: atomate2's EquilibriumVolumeMaker runs NVT at -20/0/+20 % linear
    strain (replayed from the Si MPMorph fixture's three EOS runs), fits P(V), and the quench
    starts at the fitted volume: the same volume atomate2 chose for its own production run."""
    from pymatgen.io.vasp import Poscar

    from superionic.testing import ReplayJob, vasp_replay

    base = require_fixtures("vasp/Si_mp_morph")
    reference = Path(__file__).parent / "data" / "vasp_inputs"
    eos = "MP_Morph_VASP_Equilibrium_Volume_Maker_Convergence_MPMorph_VASP_MD_Maker"
    jobs = {
        f"quench_density_{k}": ReplayJob(base / f"{eos}_{k}", reference / "quench_density_eos_500K")
        for k in (1, 2, 3)
    }
    for seg, folder, inputs in (
        ("heat", "500K", "heat_100_to_500K"),
        ("hold", "450K", "hold_500K"),
        ("cool", "400K", "cool_500_to_100K"),
    ):
        jobs[f"quench_{seg}"] = ReplayJob(
            base / f"Vasp_Slow_Quench_MD_Maker_{folder}", reference / f"quench_{inputs}"
        )
    # the heat run starts from the fitted volume, not from the recorded run's cell: INCAR and KPOINTS only
    jobs["quench_heat"] = replace(jobs["quench_heat"], check_inputs=("incar", "kpoints"))
    start = Poscar.from_str(gzip.open(base / f"{eos}_2" / "inputs" / "POSCAR.gz", "rt").read()).structure
    start.to(filename=str(tmp_path / "Si.vasp"), fmt="poscar")
    (tmp_path / "c.yaml").write_text(
        "name: sim\nengine: vasp\nsystems:\n  - name: Si\n    structure: Si.vasp\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [500]\n    heat_ps: 0.2\n    hold_ps: 0.2\n"
        "    quench_ps: 0.2\n    density: mpmorph\n    density_ps: 0.1\n"
    )
    with vasp_replay(jobs):
        r = run_campaign("c.yaml", env={"SUPERIONIC_VASP_CMD": "srun vasp_std"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    written = {}
    for folder in (tmp_path / ".superionic" / "jobs").iterdir():
        if (folder / "inputs.written" / "POSCAR").is_file():
            incar = (folder / "inputs.written" / "INCAR").read_text()
            written[folder] = (Poscar.from_file(folder / "inputs.written" / "POSCAR").structure, incar)
    assert len(written) == 6  # three EOS runs, heat, hold, cool
    # every run (density EOS, heat, hold, cool) would start the campaign's VASP command under
    # atomate2's MD error handlers (not atomate2's default command and relax handlers)
    from atomate2.vasp.jobs.md import MDMaker

    md_handlers = [type(h).__name__ for h in MDMaker().run_vasp_kwargs["handlers"]]
    for folder in written:
        run = json.loads((folder / "inputs.written" / "custodian.json").read_text())
        assert run["vasp_cmd"] == "srun vasp_std", run
        assert run["handlers"] == md_handlers, run
    eos_volumes = sorted(s.volume for s, inc in written.values() if "NSW = 50\n" in inc)  # density_ps 0.1
    assert len(eos_volumes) == 3
    v0 = start.volume
    for want in (0.8**3 * v0, v0, 1.2**3 * v0):
        assert any(v == pytest.approx(want, rel=1e-6) for v in eos_volumes)
    production = Poscar.from_str(
        gzip.open(base / "MP_Morph_VASP_MD_Maker_production_run" / "inputs" / "POSCAR.gz", "rt").read()
    ).structure
    heat = [s for s, inc in written.values() if "TEBEG = 100" in inc]
    assert len(heat) == 1
    assert heat[0].volume == pytest.approx(production.volume, rel=1e-4)
    assert not any(v == pytest.approx(production.volume, rel=1e-4) for v in eos_volumes)


def test_mlip_density_step_and_snapshot_averaged_local_structure(
    tmp_path: Path, run_campaign: RunCampaign
) -> None:
    """LiCl on CHGNet: an NpT density step at T_melt sets the quench's volume; the md stage at
    600 K then runs on the crystal and on the quenched cell, and the local structure is pooled
    over snapshots every 0.02 ps of those runs (study C samples every 2 ps at 600 K). The pooled
    Li-Cl CN equals a direct neighbour count over the same stored frames."""
    from pymatgen.core import Lattice

    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign
    from superionic.stages.md import trajectory_arrays

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiCl.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: snap\nengine: mlip\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [1500]\n    heat_ps: 0.02\n    hold_ps: 0.02\n"
        "    quench_ps: 0.02\n    trajectory_interval: 5\n    density: npt\n    density_ps: 0.2\n"
        "    center: Li\n    ligands: [Cl]\n    cutoff_A: 3.3\n    shape: octahedron\n"
        "    snapshot_temperature_K: 600\n    snapshot_every_ps: 0.02\n"
        "  - stage: md\n    temperatures_K: [600]\n    production_steps: 40\n    trajectory_interval: 5\n"
        "    fit_start: 0.0\n    fit_end: 1.0\n"
    )
    r = run_campaign("c.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {
        row["structure"]: row for row in csv.DictReader(open(tmp_path / "report" / "snap" / "structure.csv"))
    }
    assert set(rows) == {
        "crystal",
        "quench 1500 K #0",
        "crystal 600 K snapshots",
        "quench 1500 K #0 600 K snapshots",
    }
    # 40 steps stored every 5 -> 9 frames; every 0.02 ps = every 2nd frame -> 5 snapshots
    assert int(rows["crystal 600 K snapshots"]["n_snapshots"]) == 5
    assert float(rows["crystal 600 K snapshots"]["snapshot_temperature_K"]) == 600

    campaign = load_campaign(tmp_path / "c.yaml")
    store = open_campaign_store(campaign, create=False)
    assert store is not None
    store.connect()
    plan = planned_jobs(build_flows(campaign))
    by_name = {p.name: p.uuid for p in plan}
    npt = store.job_store.get_output(by_name["LiCl #0 quench 1500 K #0 density npt"], load=True)
    npt_volume = Structure.from_dict(npt["structure"]).volume
    assert abs(npt_volume / s.volume - 1) > 1e-3  # the NpT run changed the volume ...
    quenched_density = float(rows["quench 1500 K #0"]["density_g_cm3"])
    assert quenched_density == pytest.approx(
        s.density * s.volume / npt_volume, rel=1e-6
    )  # ... and the NVT quench kept it

    md = store.job_store.get_output(by_name["LiCl #0 md 600 K"], load=True)
    frac, lattice, symbols = trajectory_arrays(md["objects"]["trajectory"], store.job_store)
    cns = []
    for k in range(0, len(frac), 2):
        frame = Structure(lattice if lattice.ndim == 2 else lattice[k], symbols, frac[k] % 1.0)
        for site in frame:
            if site.specie.symbol == "Li":
                cns.append(sum(1 for nb in frame.get_neighbors(site, 3.3) if nb.specie.symbol == "Cl"))
    assert len(cns) == 5 * 4
    assert float(rows["crystal 600 K snapshots"]["cn_Cl"]) == pytest.approx(np.mean(cns), abs=1e-9)


def test_study_d_model_run_beside_experiment(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """workflows/study_d_oxychloride.yaml, shortened (Li3ZrCl4O1.5 only, 0.1/0.2/0.1 ps quench
    after a 0.1 ps NpT step, no md): the generated Li12Zr4Cl16O6 glass's Zr-O / Zr-Cl CN land in
    study_d_comparison.csv beside the EXAFS values, and equal a direct count on the stored cell."""
    from ruamel.yaml import YAML

    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    yaml = YAML(typ="safe")
    root = Path(__file__).resolve().parents[1]
    spec = yaml.load((root / "workflows" / "study_d_oxychloride.yaml").read_text())
    for key in ("scales", "default_scale"):  # the file as written (paper scale), on CHGNet
        spec.pop(key)
    spec["engine"] = "mlip"
    spec["systems"] = [sy for sy in spec["systems"] if sy["name"] == "Li3ZrCl4O1.5"]
    spec["stages"] = [st for st in spec["stages"] if st["stage"] != "md"]
    quench = next(st for st in spec["stages"] if st["stage"] == "quench")
    quench.update(heat_ps=0.1, hold_ps=0.2, quench_ps=0.1, density_ps=0.1)
    for key in ("snapshot_temperature_K", "snapshot_every_ps"):
        quench.pop(key)
    with open(tmp_path / "d.yaml", "w") as fh:
        yaml.dump(spec, fh)
    r = run_campaign("d.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "report" / "study-d-oxychloride" / "study_d_comparison.csv")))
    glass = {row["quantity"]: row for row in rows if row["structure"] == "quench 1500 K #0"}
    assert float(glass["CN Zr-O"]["experiment"]) == 2.5 and float(glass["CN Zr-Cl"]["experiment"]) == 5.6
    assert float(glass["d Zr-Cl (A)"]["experiment"]) == 2.49

    campaign = load_campaign(tmp_path / "d.yaml")
    store = open_campaign_store(campaign, create=False)
    assert store is not None
    store.connect()
    uuid = next(
        p.uuid for p in planned_jobs(build_flows(campaign)) if p.name == "Li3ZrCl4O1.5 #0 quench 1500 K #0"
    )
    final = Structure.from_dict(store.job_store.get_output(uuid, load=True)["structure"])
    assert final.composition.get_el_amt_dict() == {"Li": 12, "Zr": 4, "Cl": 16, "O": 6}
    zr = [site for site in final if site.specie.symbol == "Zr"]
    for lig in ("O", "Cl"):
        direct = np.mean(
            [sum(1 for nb in final.get_neighbors(site, 3.0) if nb.specie.symbol == lig) for site in zr]
        )
        assert float(glass[f"CN Zr-{lig}"]["model"]) == pytest.approx(direct, abs=1e-9)
    assert float(glass["d Zr-O (A)"]["model"]) == pytest.approx(
        2.1, abs=0.3
    )  # a Zr-O bond, not a cutoff artefact


def test_quench_bad_input_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: q\nengine: mlip\nsystems:\n  - prototype: natacl6\n    supercell: [1, 2, 3]\nstages:\n"
        "  - stage: order\n  - stage: quench\n    melt_temperatures_K: [80]\n"
    )
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "melt temperature must lie above the start temperature" in r.output
    (tmp_path / "c.yaml").write_text(
        (tmp_path / "c.yaml").read_text().replace("[80]", "[1200]\n    quench_ps: 0")
    )
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "stages[1].quench_ps" in r.output and "greater than 0" in r.output


@pytest.mark.slow
def test_mlip_melt_quench_of_natacl6_disorders_with_melt_temperature(
    tmp_path: Path, run_campaign: RunCampaign
) -> None:
    """128-atom NaTaCl6 (CHGNet), T_melt 1200 and 2000 K: TaCl6 CSM rises from the crystal, and
    the Ta-Ta RDF loses its crystalline shape (similarity to the crystal's falls below 1)."""
    (tmp_path / "c.yaml").write_text(
        "name: q\nengine: mlip\nsystems:\n  - name: NaTaCl6\n    prototype: natacl6\n"
        "    supercell: [2, 3, 4]\n"
        "stages:\n  - stage: order\n    n_structures: 1\n"
        "  - stage: quench\n    melt_temperatures_K: [1200, 2000]\n"
        "    heat_ps: 0.2\n    hold_ps: 2.0\n    quench_ps: 0.2\n    center: Ta\n    ligands: [Cl]\n"
        "    cutoff_A: 3.0\n    shape: octahedron\n"
    )
    r = run_campaign("c.yaml")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {
        row["structure"]: row for row in csv.DictReader(open(tmp_path / "report" / "q" / "structure.csv"))
    }
    crystal, q1200, q2000 = (rows[k] for k in ("crystal", "quench 1200 K #0", "quench 2000 K #0"))
    assert float(crystal["csm_mean"]) == pytest.approx(0.0, abs=1e-6)
    assert 0 < float(q1200["csm_mean"]) < float(q2000["csm_mean"])
    assert float(q2000["crystallinity"]) < float(q1200["crystallinity"]) < 1.0
    assert np.isfinite(float(q2000["cn_Cl"]))


def test_quench_options_refused_where_they_cannot_run(tmp_path: Path) -> None:
    base = (
        "name: q\nengine: cp2k\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [1200]\n    center: Li\n    ligands: [Cl]\n"
    )
    from pymatgen.core import Lattice

    Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
        filename=str(tmp_path / "LiCl.cif")
    )
    (tmp_path / "c.yaml").write_text(base + "    density: mpmorph\n")
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "stages[0].density" in r.output and "mlip and vasp engines only" in r.output
    (tmp_path / "c.yaml").write_text(
        base.replace("engine: cp2k", "engine: mlip")
        + "    snapshot_temperature_K: 600\n  - stage: md\n    temperatures_K: [700]\n"
    )
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "stages[0].snapshot_temperature_K" in r.output and "[700.0]" in r.output
    (tmp_path / "c.yaml").write_text(
        base.replace("engine: cp2k", "engine: mlip")
        + "  - stage: md\n    temperatures_K: [700]\n    ensemble: npt\n    thermostat: berendsen\n"
    )
    r = CliRunner().invoke(app, ["validate", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "stages[1].thermostat" in r.output and "MTK Nose-Hoover chain" in r.output
