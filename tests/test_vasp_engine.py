"""VASP engine: preset inputs, and real outputs replayed through the production flow code.

Replayed runs (:mod:`superionic.testing`) check the inputs each job writes against the reference
``inputs/`` folders in ``tests/data/vasp_inputs`` (written from the protocols, not from the
presets), then copy the recorded outputs of ``../shared/fixtures`` in place of running VASP.
"""

from __future__ import annotations

import csv
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pymatgen.io.vasp import Incar, Kpoints, Vasprun
from typer.testing import CliRunner

from conftest import CliRun, RunCampaign
from superionic.cli import app
from superionic.testing import ReplayJob, vasp_replay

runner = CliRunner()
REFERENCE_INPUTS = Path(__file__).parent / "data" / "vasp_inputs"


def test_study_a_inputs_on_2x1x1_argyrodite(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "inputs",
            "argyrodite_bh4",
            "--supercell",
            "2",
            "1",
            "1",
            "--engine",
            "vasp",
            "--preset",
            "argyrodite_bh4",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    incar = Incar.from_file(tmp_path / "INCAR")
    assert incar["ENCUT"] == 520 and incar["ISIF"] == 3
    kpts = Kpoints.from_file(tmp_path / "KPOINTS")
    assert tuple(kpts.kpts[0]) == (1, 2, 2)
    assert (tmp_path / "POTCAR.spec").is_file() and not (tmp_path / "POTCAR").exists()


def test_study_b_inputs(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "inputs",
            "antiperovskite_amide",
            "--param",
            "x=1",
            "--engine",
            "vasp",
            "--preset",
            "antiperovskite_amide",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    incar = Incar.from_file(tmp_path / "INCAR")
    assert (incar["ENCUT"], incar["EDIFF"], incar["EDIFFG"]) == (550, 1e-5, -0.01)


def test_missing_vasp_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: v\nengine: vasp\npreset: argyrodite_bh4\nsystems:\n  - prototype: argyrodite\n"
        "stages:\n  - stage: order\n  - stage: relax\n"
    )
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "not on PATH" in result.output and "SUPERIONIC_VASP_CMD" in result.output
    assert not (tmp_path / ".superionic").exists()


def replay_setup(tmp_path: Path, preset: str = "argyrodite_bh4") -> tuple[Path, dict[str, ReplayJob]]:
    """A study-A relax of LiAlSiO4 replayed from the recorded atomate relax (fixtures)."""
    from conftest import require_fixtures

    ref = require_fixtures("vasp/nmr_LiAlSiO4/structure_optimization")
    (tmp_path / "LiAlSiO4.vasp").write_text((ref / "inputs" / "POSCAR").read_text())
    (tmp_path / "c.yaml").write_text(
        f"name: replay\nengine: vasp\npreset: {preset}\nsystems:\n  - name: LiAlSiO4\n"
        "    structure: LiAlSiO4.vasp\nstages:\n  - stage: relax\n"
    )
    relax = ReplayJob(
        ref, REFERENCE_INPUTS / "study_a_relax_LiAlSiO4", incar_settings=("ENCUT", "ISIF", "IBRION")
    )
    return ref, {"relax": relax}


def test_replayed_relax_goes_through_the_flow(tmp_path: Path, run_campaign: RunCampaign) -> None:
    ref, jobs = replay_setup(tmp_path)
    with vasp_replay(jobs):
        result = run_campaign()
    assert result.returncode == 0, result.stdout + result.stderr
    import csv

    row = next(csv.DictReader(open(tmp_path / "report" / "replay" / "relax.csv")))
    vasprun = Vasprun(
        str(ref / "outputs" / "vasprun.xml.relax2.gz"),
        parse_dos=False,
        parse_eigen=False,
        parse_potcar_file=False,
    )
    assert float(row["energy_per_atom_ev"]) == pytest.approx(
        vasprun.final_energy / len(vasprun.final_structure), abs=1e-8
    )
    # the job wrote study A's inputs (checked by the replay) before the outputs were copied
    job_dirs = list((tmp_path / ".superionic" / "jobs").iterdir())
    assert len(job_dirs) == 1
    written = Incar.from_file(next(job_dirs[0].glob("INCAR*")))
    assert written["ENCUT"] == 520 and written["ISIF"] == 3


def test_replay_refuses_inputs_that_differ_from_the_preset(tmp_path: Path) -> None:
    """The written INCAR is compared with the reference folder: one that says ENCUT 600 refuses
    the preset's 520, naming both."""
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.dispatch.local import run_flows
    from superionic.flows import build_flows
    from superionic.spec import load_campaign

    _, jobs = replay_setup(tmp_path)
    reference = tmp_path / "reference"
    shutil.copytree(jobs["relax"].reference, reference)
    (reference / "inputs" / "INCAR").write_text("ENCUT = 600\nISIF = 3\nIBRION = 2\n")
    with vasp_replay({"relax": replace(jobs["relax"], reference=reference)}):
        campaign = load_campaign(tmp_path / "c.yaml")
        store = open_campaign_store(campaign)
        assert store is not None
        summary = run_flows(build_flows(campaign), store, tmp_path / "jobs")
    (message,) = summary.failed.values()
    assert "ReplayMismatchError" in message and "ENCUT = 520" in message and "600" in message


def test_replay_checks_kpoints_and_poscar_against_the_reference(tmp_path: Path) -> None:
    """Besides the listed INCAR keys, the k-point mesh must be the reference's and the structure
    the recorded run's own starting POSCAR (sites in any order)."""
    from pymatgen.core import Structure
    from pymatgen.io.vasp import Poscar

    from superionic.testing import ReplayMismatchError
    from superionic.testing.vasp import check_inputs

    ref, jobs = replay_setup(tmp_path)
    job = jobs["relax"]
    here = tmp_path / "job"
    here.mkdir()
    (here / "INCAR").write_text("ENCUT = 520\nISIF = 3\nIBRION = 2\nEDIFFG = -0.02\n")
    shutil.copy(job.reference / "inputs" / "KPOINTS", here / "KPOINTS")
    structure = Poscar.from_file(ref / "inputs" / "POSCAR").structure
    oxygens_reversed = structure.sites[:9] + structure.sites[:8:-1]  # Li3 Al3 Si3, then O12 backwards
    Poscar(Structure.from_sites(oxygens_reversed)).write_file(here / "POSCAR")
    check_inputs(job, here)  # what the reference says
    (here / "KPOINTS").write_text("study A mesh of the 2x1x1 argyrodite\n0\nGamma\n1 2 2\n")
    with pytest.raises(
        ReplayMismatchError, match="KPOINTS Gamma 1 2 2, but the reference requires Gamma 4 4 2"
    ):
        check_inputs(job, here)
    shutil.copy(job.reference / "inputs" / "KPOINTS", here / "KPOINTS")
    structure.scale_lattice(1.05 * structure.volume)
    Poscar(structure).write_file(here / "POSCAR")
    with pytest.raises(ReplayMismatchError, match="POSCAR differs: lattice"):
        check_inputs(job, here)


def test_replay_refuses_a_preset_that_drifts_from_the_protocol(
    tmp_path: Path, run_campaign: RunCampaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of study A's preset with ENCUT 500 runs, but its relax fails against the reference
    inputs written from the protocol (ENCUT 520): the reference is not built from the preset."""
    from superionic.paths import configs_dir

    configs = tmp_path / "configs"
    shutil.copytree(configs_dir(), configs)
    preset = (configs / "engines" / "argyrodite_bh4.yaml").read_text()
    assert preset.count("ENCUT: 520, ISIF: 3") == 1
    drifted = preset.replace("name: argyrodite_bh4", "name: drifted").replace(
        "ENCUT: 520, ISIF: 3", "ENCUT: 500, ISIF: 3"
    )
    (configs / "engines" / "drifted.yaml").write_text(drifted)
    monkeypatch.setenv("SUPERIONIC_CONFIGS", str(configs))
    _, jobs = replay_setup(tmp_path, preset="drifted")
    with vasp_replay(jobs) as records:
        result = run_campaign()
    assert result.returncode == 1 and not records
    assert "ReplayMismatchError" in result.stderr and "ENCUT = 500" in result.stderr
    assert "requires 520" in result.stderr and "study_a_relax_LiAlSiO4" in result.stderr


def test_dry_run_writes_every_relax_input_without_vasp(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: dry\nengine: vasp\npreset: argyrodite_bh4\nsystems:\n  - prototype: argyrodite_bh4\n"
        "    params: {bh4_vacancies: 0.25, vacancy_site: [4a, 4d]}\n    supercell: [2, 1, 1]\n"
        "stages:\n  - stage: order\n    n_structures: 2\n  - stage: relax\n"
    )
    result = runner.invoke(app, ["run", str(tmp_path / "c.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    incars = sorted((tmp_path / ".superionic" / "dry-run").rglob("INCAR"))
    assert len(incars) == 4  # 2 systems x 2 orderings
    for path in incars:
        assert Incar.from_file(path)["ENCUT"] == 520
        assert tuple(Kpoints.from_file(path.parent / "KPOINTS").kpts[0]) == (1, 2, 2)
    assert not (tmp_path / ".superionic" / "outputs.jsonl").exists()  # nothing ran


def test_replayed_vasp_md_goes_through_the_flow(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """Si MD (atomate2 MDMaker, 3 steps of NVT at 300 K, real VASP outputs) through the md stage:
    the INCAR the job wrote carries the stage's settings, the trajectory in the blob store is
    vasprun's, and the 3-frame run is too short for a diffusivity - said so, not faked."""
    import gzip

    from conftest import require_fixtures
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    ref = require_fixtures("vasp/Si_molecular_dynamics/molecular_dynamics")
    jobs = {"md": ReplayJob(ref, REFERENCE_INPUTS / "md_nvt_300K_2fs_3steps")}
    (tmp_path / "Si.vasp").write_text(gzip.open(ref / "inputs" / "POSCAR.gz", "rt").read())
    (tmp_path / "c.yaml").write_text(
        "name: vmd\nengine: vasp\nsystems:\n  - name: Si\n    structure: Si.vasp\nstages:\n"
        "  - stage: md\n    temperatures_K: [300]\n    species: Si\n    timestep_fs: 2\n"
        "    production_steps: 3\n"
    )
    with vasp_replay(jobs):
        result = run_campaign()
    assert "done Si #0 md 300 K" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1 and "need at least 4 frames for a diffusivity, got 3" in result.stderr
    (incar_path,) = list((tmp_path / ".superionic" / "jobs").glob("*/INCAR.gz"))  # the md job's folder
    incar = Incar.from_file(incar_path)
    assert (incar["IBRION"], incar["MDALGO"], incar["NSW"], incar["POTIM"]) == (0, 2, 3, 2)
    assert incar["TEBEG"] == incar["TEEND"] == 300

    campaign = load_campaign(tmp_path / "c.yaml", check_engines=False)
    store = open_campaign_store(campaign, create=False)
    assert store is not None
    store.connect()
    md_uuid = next(p.uuid for p in planned_jobs(build_flows(campaign)) if p.stage == "md")
    doc = store.job_store.get_output(md_uuid, load=True)
    traj = doc["vasp_objects"]["trajectory"]
    from superionic.stages.md import trajectory_arrays

    # a binary trajectory (the replayed run wrote no XDATCAR: frames from vasprun's ionic steps,
    # every NBLOCK = 1 step of the run, POTIM 2 fs apart), not a JSON blob; the task document
    # keeps no per-step list
    from superionic.trajectory_store import is_reference, open_trajectory

    assert is_reference(traj) and traj["time_step_fs"] == 2.0
    assert all(calc["output"]["ionic_steps"] is None for calc in doc["calcs_reversed"])
    frames, _lattices, symbols = trajectory_arrays(traj, store.job_store)
    assert symbols == ["Si", "Si"]
    vasprun = Vasprun(str(ref / "outputs" / "vasprun.xml.gz"), parse_dos=False, parse_eigen=False)
    assert len(frames) == len(vasprun.ionic_steps) == 3
    assert frames[-1] == pytest.approx(vasprun.ionic_steps[-1]["structure"].frac_coords, abs=1e-6)
    with open_trajectory(traj, store.job_store) as reader:
        energies = reader.energies()
    assert energies == pytest.approx([step["e_fr_energy"] for step in vasprun.ionic_steps])


def test_study_b_npt_langevin_md_inputs(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "inputs",
            "antiperovskite_amide",
            "--engine",
            "vasp",
            "--preset",
            "antiperovskite_amide",
            "--stage",
            "md",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    incar = Incar.from_file(tmp_path / "INCAR")
    assert (incar["IBRION"], incar["MDALGO"], incar["ISIF"], incar["POTIM"]) == (0, 3, 3, 0.5)
    assert incar["LANGEVIN_GAMMA"] == [10.0] * 4  # Na, B, H, N: one friction per species
    assert (incar["LANGEVIN_GAMMA_L"], incar["PMASS"]) == (10.0, 1000.0)
    assert tuple(Kpoints.from_file(tmp_path / "KPOINTS").kpts[0]) == (1, 1, 1)


def test_custodian_corrects_a_failed_vasp_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VASP run that dies with ZBRENT goes through custodian's VaspErrorHandler (the production
    RelaxMaker, a stand-in executable): the INCAR is corrected (EDIFF 1e-6, NELMIN 8), the
    rerun's outputs are parsed into the relax result and the corrections are kept in the job's
    document in the store."""
    import gzip
    import json

    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.dispatch.local import run_flows
    from superionic.flows import build_flows
    from superionic.spec import load_campaign
    from superionic.testing import potcar_spec_only

    ref, _jobs = replay_setup(tmp_path)
    monkeypatch.setenv("SUPERIONIC_VASP_CMD", f"{sys.executable} {Path(__file__).with_name('fake_vasp.py')}")
    monkeypatch.setenv("FAKE_VASP_REF", str(ref))
    campaign = load_campaign(tmp_path / "c.yaml")
    store = open_campaign_store(campaign)
    assert store is not None
    with potcar_spec_only():
        summary = run_flows(build_flows(campaign), store, tmp_path / "jobs")
    assert summary.ok, summary.failed
    (job_dir,) = list((tmp_path / "jobs").iterdir())
    log_path = next(job_dir.glob("custodian.json*"))
    log = json.loads(gzip.open(log_path, "rt").read() if log_path.suffix == ".gz" else log_path.read_text())
    corrections = [c for run in log for c in run.get("corrections", [])]
    assert len(corrections) == 1 and corrections[0]["errors"] == ["zbrent"]
    actions = corrections[0]["actions"]
    assert {"dict": "INCAR", "action": {"_set": {"NELMIN": 8}}} in actions
    assert {"dict": "INCAR", "action": {"_set": {"EDIFF": 1e-6}}} in actions
    incar = Incar.from_file(next(p for p in job_dir.glob("INCAR*") if "orig" not in p.name))
    assert incar["NELMIN"] == 8 and incar["EDIFF"] == 1e-6 and incar["ENCUT"] == 520
    store.connect()
    (doc,) = list(store.job_store.query({}))
    vasprun = Vasprun(str(ref / "outputs" / "vasprun.xml.relax2.gz"), parse_dos=False, parse_eigen=False)
    assert doc["output"]["output"]["energy"] == pytest.approx(vasprun.final_energy, abs=1e-6)
    # the corrections live in the job's document too (atomate2's TaskDoc.custodian), not only on the
    # node's scratch: a cluster user reads them with `superionic status`/the store, not by ssh
    (kept,) = [c for run in doc["output"]["custodian"] for c in run["corrections"]]
    assert kept["errors"] == ["zbrent"] and kept["actions"] == actions


def _replay_si_multi_md(
    tmp_path: Path, run_campaign: RunCampaign, name: str, md_settings: str
) -> tuple[Path, CliRun]:
    """Run an md campaign on Si whose runs replay the Si multi-MD fixture (md_production_1..3)."""
    import gzip

    from conftest import require_fixtures

    base = require_fixtures("vasp/Si_multi_md")
    reference = REFERENCE_INPUTS / "md_nvt_300K_1fs_3steps"
    jobs = {f"md_production_{k}": ReplayJob(base / f"molecular_dynamics_{k}", reference) for k in (1, 2, 3)}
    (tmp_path / "Si.vasp").write_text(
        gzip.open(base / "molecular_dynamics_1" / "inputs" / "POSCAR.gz", "rt").read()
    )
    (tmp_path / "c.yaml").write_text(
        f"name: {name}\nengine: vasp\nsystems:\n  - name: Si\n    structure: Si.vasp\nstages:\n"
        "  - stage: md\n    temperatures_K: [300]\n    species: Si\n    timestep_fs: 1\n"
        "    fit_start: 0.0\n    fit_end: 1.0\n" + md_settings
    )
    with vasp_replay(jobs):
        r = run_campaign(env={"SUPERIONIC_VASP_CMD": "srun vasp_std"})
    return base, r


def test_chained_vasp_md_runs_continue_and_are_joined(tmp_path: Path, run_campaign: RunCampaign) -> None:
    """production_chunks: 3 -> three chained VASP MD runs (each restarting from the previous
    run's outputs), replayed from atomate2's Si multi-MD fixture; the diffusion job joins them."""
    base, r = _replay_si_multi_md(
        tmp_path, run_campaign, "chain", "    production_steps: 9\n    production_chunks: 3\n"
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for k in (1, 2, 3):
        assert f"done Si #0 md 300 K part {k}/3" in r.stdout
    row = next(csv.DictReader(open(tmp_path / "report" / "chain" / "diffusion.csv")))
    n_frames = sum(
        len(
            Vasprun(
                str(base / f"molecular_dynamics_{k}" / "outputs" / "vasprun.xml.gz"),
                parse_dos=False,
                parse_eigen=False,
            ).ionic_steps
        )
        for k in (1, 2, 3)
    )
    # chunks are joined dropping each later chunk's first frame (it repeats the previous last one)
    assert float(row["total_time_ps"]) == pytest.approx((n_frames - 2 - 1) * 1e-3, rel=1e-6)


def test_vasp_md_extended_until_rsd_target_continues_the_run(
    tmp_path: Path, run_campaign: RunCampaign
) -> None:
    """target_rsd on VASP: a 2-part production, then one more run (max_chunks 2) that restarts
    from the previous run's CONTCAR (positions and velocities); replayed from the Si multi-MD
    fixture, all three runs joined for the diffusivity."""
    import gzip

    from pymatgen.io.vasp import Poscar

    base, r = _replay_si_multi_md(
        tmp_path,
        run_campaign,
        "ext",
        "    production_steps: 6\n    production_chunks: 2\n    target_rsd: 0.05\n    max_chunks: 2\n",
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "done Si #0 md 300 K chunk 2" in r.stdout, r.stdout
    # the extension run's POSCAR is the second run's CONTCAR, velocities included
    contcar = Poscar.from_str(
        gzip.open(base / "molecular_dynamics_2" / "outputs" / "CONTCAR.gz", "rt").read()
    )
    written = [
        Poscar.from_file(f) for f in (tmp_path / ".superionic" / "jobs").glob("*/inputs.written/POSCAR")
    ]
    assert len(written) == 3
    # each of the three runs (two parts and the extension) would start SUPERIONIC_VASP_CMD
    import json

    runs = [
        json.loads(f.read_text())
        for f in (tmp_path / ".superionic" / "jobs").glob("*/inputs.written/custodian.json")
    ]
    assert sorted(r["vasp_cmd"] for r in runs) == ["srun vasp_std"] * 3
    assert all("FrozenJobErrorHandler" in r["handlers"] for r in runs)
    continued = [
        p
        for p in written
        if np.allclose(p.structure.frac_coords, contcar.structure.frac_coords, atol=1e-6)
        and p.velocities is not None
        and np.allclose(p.velocities, contcar.velocities, atol=1e-8)
    ]
    assert len(continued) == 1
    row = next(csv.DictReader(open(tmp_path / "report" / "ext" / "diffusion.csv")))
    assert int(row["n_chunks"]) == 2
    n_frames = 9  # 3 runs x 3 ionic steps
    assert float(row["total_time_ps"]) == pytest.approx((n_frames - 2 - 1) * 1e-3, rel=1e-6)
