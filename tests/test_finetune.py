"""Fine-tuning CHGNet on real VASP frames (issue 17): units, splits, the model folder, bad input.

Real data: the Si MPMorph fixture (`../shared/fixtures/vasp/Si_mp_morph`, 16-atom Si cells, VASP
PBE). Its relax/static runs (ENCUT 520, 3x3x3 k) and its MD runs (POTCAR cut-off, Gamma) sit on
different energy scales, so the training set is the MD runs, as the finetune command insists.
"""

from __future__ import annotations

import csv
import gzip
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jobflow import OnMissing
from typer.testing import CliRunner

from conftest import require_fixtures
from superionic.cli import app
from superionic.engines.finetune import (
    MODEL_FILE,
    VASP_KBAR_TO_CHGNET_GPA,
    read_frames,
    read_model_folder,
)

runner = CliRunner()
MORPH = "vasp/Si_mp_morph"
TRAIN = (
    "MP_Morph_VASP_MD_Maker_production_run",
    "Vasp_Slow_Quench_MD_Maker_350K",
    "Vasp_Slow_Quench_MD_Maker_400K",
    "Vasp_Slow_Quench_MD_Maker_500K",
)
#: held out: the 450 K quench (measured with 1 thread, every 4th frame: force MAE 422 meV/A
#: pretrained; fine-tuned 469 after 2 epochs, 408 after 4, 400 after 6: the first epochs move
#: the model towards the new energy scale and cost force accuracy before it gains)
TEST = ("Vasp_Slow_Quench_MD_Maker_450K",)


def test_vasprun_and_outcar_give_the_same_frames_in_chgnet_units() -> None:
    """pymatgen (vasprun.xml, kBar x -0.1) and ASE (OUTCAR, eV/A^3 -> GPa) are independent routes."""
    run = require_fixtures(MORPH) / "MP_GGA_relax_2" / "outputs"
    from_xml = read_frames([run / "vasprun.xml.gz"])
    from_outcar = read_frames([run / "OUTCAR.gz"])
    assert len(from_xml) == len(from_outcar) == 3
    for a, b in zip(from_xml, from_outcar, strict=True):
        assert a.energy_eV == pytest.approx(b.energy_eV, abs=1e-4)
        assert a.forces_eV_per_A == pytest.approx(b.forces_eV_per_A, abs=1e-4)
        assert a.stress_GPa == pytest.approx(b.stress_GPa, abs=2e-4)
    # the printed stress of the last step (OUTCAR "in kB" line) -> GPa, tension positive
    text = gzip.open(run / "OUTCAR.gz", "rt").read()
    kbar = [float(x) for x in re.findall(r"in kB\s+(.*)", text)[-1].split()[:3]]
    assert np.diag(from_xml[-1].stress_GPa) == pytest.approx(
        np.array(kbar) * VASP_KBAR_TO_CHGNET_GPA, abs=1e-4
    )
    # a folder holding both: the vasprun is read, the OUTCAR (the same frames) left out
    assert len(read_frames([run])) == 3


def test_pretrained_chgnet_agrees_with_the_converted_stress_sign() -> None:
    """CHGNet predicts stresses on MD frames; the converted DFT stress is close, its negative is not."""
    import torch
    from chgnet.model import CHGNet

    torch.set_num_threads(1)
    frames = read_frames([require_fixtures(MORPH) / TEST[0]], every=20)
    model = CHGNet.load(verbose=False)
    pred = model.predict_structure([f.structure for f in frames], task="efs", batch_size=8)
    ours = np.mean([np.abs(p["s"] - f.stress_GPa).mean() for p, f in zip(pred, frames, strict=True)])
    flipped = np.mean([np.abs(p["s"] + f.stress_GPa).mean() for p, f in zip(pred, frames, strict=True)])
    assert ours < 0.5 * flipped, (ours, flipped)


def test_finetune_on_some_si_md_runs_lowers_the_force_error_on_the_others(tmp_path: Path) -> None:
    root = require_fixtures(MORPH)
    out = tmp_path / "si-ft"
    args = ["finetune", *[str(root / r) for r in TRAIN + TEST], "--out", str(out), "--every", "4"]
    args += ["--epochs", "4", "--threads", "1", "--val-fraction", "0.2"]
    for name in TEST:
        args += ["--test", str(root / name / "outputs")]
    # a test set of another structure, never trained on (as a hull's phases are): crystalline Si
    args += ["--test-set", f"crystal={root / 'MP_GGA_relax_1'}"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = read_model_folder(out)
    assert meta["splits"]["test"]["runs"] == [str(root / n / "outputs") for n in TEST]
    assert not set(meta["splits"]["train"]["runs"]) & set(meta["splits"]["test"]["runs"])
    before, after = meta["before"]["force_meV_per_A"], meta["after"]["force_meV_per_A"]
    print(f"force MAE on held-out Si MD frames: {before:.0f} -> {after:.0f} meV/A")
    assert after < before
    assert meta["improved"] is True and meta["engine"] == "vasp" and meta["elements"] == ["Si"]
    assert f"{before:.0f} -> {after:.0f} meV/A" in result.output
    worse = [k for k in ("energy_meV_per_atom", "stress_GPa") if meta["after"][k] > meta["before"][k]]
    assert ("worse after fine-tuning on the test frames" in result.output) == bool(worse), worse
    assert (out / "parity.png").stat().st_size > 10_000

    # the model is known by its weights' hash, not its folder
    from superionic.engines.mlip import force_field_kwargs, relax_maker
    from superionic.fingerprint import _identity

    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    kw = force_field_kwargs(str(moved))
    assert kw["calculator_kwargs"]["weights_sha256"] == meta["weights_sha256"]
    a = relax_maker({"force_field": str(out)}).make.__self__  # noqa: F841 - the maker builds
    ident = [
        _identity(relax_maker({"force_field": str(p)}).make(_si()).as_dict()["function"])
        for p in (out, moved)
    ]
    assert ident[0] == ident[1]
    # a fine-tuned model relaxes a cell through atomate2's maker (the calculator loads offline)
    from superionic.engines.finetune import finetuned_calculator

    calc = finetuned_calculator(str(moved), meta["weights_sha256"])
    atoms = _si().to_ase_atoms()
    atoms.calc = calc
    assert np.isfinite(atoms.get_potential_energy())
    _test_set_errors_are_the_models_own_through_ase(meta, calc, root / "MP_GGA_relax_1", result.output)
    # --force-field: every MLIP stage (and the hull's phases, with relax) runs on the model folder
    _force_field_option_puts_the_model_on_every_mlip_stage(tmp_path, out, meta["weights_sha256"])
    # changed weights: refused, not silently used
    (moved / MODEL_FILE).write_bytes((moved / MODEL_FILE).read_bytes() + b"\0")
    result = runner.invoke(app, ["validate", str(_campaign(tmp_path, moved))])
    assert result.exit_code == 2 and "changed after fine-tuning" in result.output


def _test_set_errors_are_the_models_own_through_ase(meta: dict, calc: Any, run: Path, output: str) -> None:
    """The fine-tuned model's errors on the extra test set, recomputed through its ASE calculator."""
    from ase.stress import voigt_6_to_full_3x3_stress
    from ase.units import GPa

    from superionic.report.tables import finetune_rows

    every = read_frames([run], every=4)  # --every applies to the test sets too
    all_frames = read_frames([run])
    assert [f.energy_eV for f in every] == [f.energy_eV for f in all_frames[::4]]
    scored = meta["test_sets"]["crystal"]
    assert scored["frames"] == len(every) >= 2
    per_frame = []  # mean |dF| (eV/A), signed dE (eV/atom), mean |dsigma| (GPa), per frame
    for frame in all_frames:
        atoms = frame.structure.to_ase_atoms()
        atoms.calc = calc
        # ASE's Voigt stress in eV/A^3 with CHGNet's sign (tension positive), in GPa as a 3x3
        full = voigt_6_to_full_3x3_stress(atoms.get_stress()) / GPa
        per_frame.append(
            (
                np.abs(atoms.get_forces() - frame.forces_eV_per_A).mean(),
                (atoms.get_potential_energy() - frame.energy_eV) / len(atoms),
                np.abs(full - frame.stress_GPa).mean(),
            )
        )
    table = np.array(per_frame)
    frames, (df, signed, ds) = every, table[::4].T  # same atoms per frame: the mean of means
    after = scored["after"]
    assert after["force_meV_per_A"] == pytest.approx(1000 * df.mean(), rel=2e-3, abs=0.05)
    # the campaign's phases job, on the same model, with this run as a phase's relaxation (all frames)
    from superionic.stages.finetune import score_phases

    job = score_phases.original({"model": {"folder": meta["folder"]}, "weights_sha256": "w"}, {"c": str(run)})
    assert job["scored_model"] == "w" and job["phases"]["c"]["frames"] == len(all_frames)
    phase = job["phases"]["c"]["after"]
    assert phase["force_meV_per_A"] == pytest.approx(1000 * table[:, 0].mean(), rel=2e-3, abs=0.05)
    assert phase["energy_offset_meV_per_atom"] == pytest.approx(1000 * table[:, 1].mean(), abs=0.05)
    assert phase["stress_GPa"] == pytest.approx(table[:, 2].mean(), rel=2e-3, abs=1e-4)
    # before: pretrained CHGNet (its own calculator) plus the reference shift the training recorded
    from chgnet.model.dynamics import CHGNetCalculator

    pretrained = CHGNetCalculator(use_device="cpu")
    shift = meta["reference_shift_eV_per_atom"]["Si"]
    assert list(meta["reference_shift_eV_per_atom"]) == ["Si"] and abs(shift) > 0.01
    df0, signed0 = [], []
    for frame in frames:  # every 4th
        atoms = frame.structure.to_ase_atoms()
        atoms.calc = pretrained
        df0.append(np.abs(atoms.get_forces() - frame.forces_eV_per_A).mean())
        signed0.append(atoms.get_potential_energy() / len(atoms) + shift - frame.energy_eV / len(atoms))
    before = scored["before"]
    assert before["force_meV_per_A"] == pytest.approx(1000 * np.mean(df0), rel=2e-3, abs=0.05)
    assert before["energy_offset_meV_per_atom"] == pytest.approx(1000 * np.mean(signed0), abs=0.05)
    assert after["energy_offset_meV_per_atom"] == pytest.approx(1000 * signed.mean(), abs=0.05)
    spread = 1000 * np.mean(np.abs(signed - signed.mean()))
    assert after["energy_meV_per_atom"] == pytest.approx(spread, abs=0.05)
    assert after["stress_GPa"] == pytest.approx(ds.mean(), rel=2e-3, abs=1e-4)
    assert f"test set crystal ({len(frames)} frames, never trained on)" in output
    # the report: one row for the held-out single points, one per phase the phases job scored
    out = {**meta, "use": "finetuned", "split_by": "run"}
    out["splits"] = {k: v["frames"] for k, v in meta["splits"].items()}
    scores = {"scored_model": meta["weights_sha256"], "phases": meta["test_sets"]}
    si = type("P", (), {"system": "Si"})()
    rows = finetune_rows([(si, {"output": scores}), (si, {"output": out})])
    assert [r["test_set"] for r in rows] == ["held-out single points", "phase crystal (never trained on)"]
    assert rows[1]["force_mae_after_meV_A"] == after["force_meV_per_A"]
    assert rows[1]["test_frames"] == len(frames) and rows[1]["frames_train_val_test"] is None
    assert rows[0]["test_frames"] == meta["splits"]["test"]["frames"]
    assert rows[1]["energy_offset_before_meV_atom"] == scored["before"]["energy_offset_meV_per_atom"]


def _force_field_option_puts_the_model_on_every_mlip_stage(tmp_path: Path, model: Path, sha: str) -> None:
    from pymatgen.core import Lattice, Structure

    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    campaign = tmp_path / "ff.yaml"
    lih = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5] * 3])
    lih.to(filename=str(tmp_path / "LiH.cif"))
    campaign.write_text(
        "name: ffc\nengine: mlip\nsystems:\n  - name: LiH\n    structure: LiH.cif\nstages:\n"
        "  - stage: relax\n  - stage: hull\n  - stage: md\n    temperatures_K: [600]\n"
        "    production_steps: 10\n"
    )

    def jobs(**kw: str) -> tuple[dict[str, Any], str]:
        c = load_campaign(campaign, check_engines="note", **kw)
        return {p.name: p for p in planned_jobs(build_flows(c))}, c.spec.name

    plain, name = jobs()
    tuned, tuned_name = jobs(force_field=str(model))
    assert name == "ffc" and tuned_name == f"ffc-ff-{sha[:12]}"  # the weights' hash, not the folder
    assert set(plain) == set(tuned)
    # every MLIP job is another job (the model's hash is in its identity), the phases' relaxes too
    for job in ("LiH #0 relax", "LiH #0 md 600 K", "phase LiH relax", "phase Li relax"):
        assert plain[job].uuid != tuned[job].uuid, job
    # reproduction.csv names the model the MD ran on, not the default
    from superionic.report.writer import _mlip_label

    assert _mlip_label(str(model)).startswith(f"CHGNet fine-tuned on vasp data (weights {sha[:12]}")
    assert _mlip_label("SevenNet").startswith("SevenNet-0")
    assert _mlip_label(None).startswith("CHGNet (pretrained")
    seven, _ = jobs(force_field="SevenNet")
    assert seven["LiH #0 relax"].uuid not in (plain["LiH #0 relax"].uuid, tuned["LiH #0 relax"].uuid)
    # the command line: a folder that is not a model, and a campaign without an MLIP stage
    (tmp_path / "empty").mkdir(exist_ok=True)
    result = runner.invoke(app, ["validate", str(campaign), "--force-field", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "--force-field" in result.output and "Traceback" not in result.output
    vasp = tmp_path / "ffv.yaml"
    vasp.write_text(campaign.read_text().replace("engine: mlip", "engine: vasp"))
    result = runner.invoke(app, ["validate", str(vasp), "--force-field", "SevenNet"])
    assert result.exit_code == 2 and "no stage of this campaign runs on the mlip engine" in result.output
    result = runner.invoke(app, ["validate", str(campaign), "--force-field", str(model)])
    assert result.exit_code == 0 and f"ffc-ff-{sha[:12]}" in result.output, result.output
    # an unknown force field name, and this campaign's own model named on the command line
    for bad in ("Foo", "finetuned"):
        result = runner.invoke(app, ["validate", str(campaign), "--force-field", bad])
        assert result.exit_code == 2 and "--force-field" in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def _si():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(5.43), ["Si"] * 8, _diamond())


def _diamond() -> list[list[float]]:
    base = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    return base + [[x + 0.25, y + 0.25, z + 0.25] for x, y, z in base]


def _campaign(tmp_path: Path, model: Path) -> Path:
    path = tmp_path / "ft.yaml"
    (tmp_path / "Si.vasp").write_text(_si().to(fmt="poscar"))
    path.write_text(
        "name: ftc\nengine: mlip\nsystems:\n  - name: Si\n    structure: Si.vasp\nstages:\n"
        f"  - stage: relax\n    force_field: {model}\n"
    )
    return path


def test_bad_inputs_get_one_clear_error_each(tmp_path: Path) -> None:
    root = require_fixtures("vasp")
    out = str(tmp_path / "m")
    # frames without forces: a vasprun whose ionic steps carry none
    xml = gzip.open(root / "Si_mp_morph/MP_GGA_static/outputs/vasprun.xml.gz", "rt").read()
    stripped = re.sub(r'<varray name="forces" >.*?</varray>', "", xml, flags=re.S)
    assert stripped != xml
    (tmp_path / "noforces").mkdir()
    (tmp_path / "noforces" / "vasprun.xml").write_text(stripped)
    result = runner.invoke(app, ["finetune", str(tmp_path / "noforces"), "--out", out])
    assert result.exit_code == 2 and "frames without forces" in result.output
    # cells with different species sets (Si and LiAlSiO4)
    mixed = [str(root / "Si_mp_morph" / TEST[0]), str(root / "nmr_LiAlSiO4/structure_optimization")]
    result = runner.invoke(app, ["finetune", *mixed, "--out", out])
    assert (
        result.exit_code == 2
        and "different species sets" in result.output
        and "Li-O-Al-Si" not in result.output
    )
    # runs of different settings (ENCUT 520 / 3x3x3 relax, and Gamma-point MD)
    result = runner.invoke(app, ["finetune", str(root / "Si_mp_morph"), "--out", out])
    assert result.exit_code == 2 and "mixes DFT settings" in result.output
    # too few runs for a split by run
    result = runner.invoke(app, ["finetune", str(root / "Si_mp_morph" / TEST[0]), "--out", out])
    assert result.exit_code == 2 and "too few runs" in result.output
    # a --test-set that is not NAME=PATH, holds no DFT run, is training data, or is named twice
    one = str(root / "Si_mp_morph" / TEST[0])
    for bad, why in (
        (["crystal"], "is not NAME=PATH"),
        ([f"x={tmp_path / 'nothing'}"], "no such file or folder"),
        ([f"x={one}"], "its runs are also training data (under DATA)"),
        ([f"x={root / 'Si_mp_morph/MP_GGA_static'}"] * 2, "names a test set twice"),
    ):
        args = [a for b in bad for a in ("--test-set", b)]
        result = runner.invoke(app, ["finetune", one, "--out", out, *args])
        assert result.exit_code == 2 and "--test-set" in result.output and why in result.output, result.output
        assert "Traceback" not in result.output
    # a force_field folder that is not a model
    (tmp_path / "notamodel").mkdir()
    result = runner.invoke(app, ["validate", str(_campaign(tmp_path, tmp_path / "notamodel"))])
    assert result.exit_code == 2 and "not a model folder" in result.output, result.output
    assert not Path(out).exists()  # nothing half-written


def test_a_hull_campaigns_phases_are_the_models_test_sets(tmp_path: Path) -> None:
    """With a hull stage, the training job reads each competing phase's DFT relaxation (its folder,
    by reference to that job) as a test set; without one, the training job is the same job."""
    from pymatgen.core import Lattice, Structure

    from superionic.flows import build_flows
    from superionic.spec import load_campaign

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(tmp_path / "LiH.cif"))
    body = (
        "engine: cp2k\npreset: cp2k_smoke\nsystems:\n  - name: LiH\n    structure: LiH.cif\nstages:\n"
        "  - stage: relax\n  - stage: finetune\n    n_rattled: 2\n"
    )

    def jobs(name: str, extra: str = "") -> dict[str, Any]:
        (tmp_path / f"{name}.yaml").write_text(f"name: hft\n{body}{extra}")
        campaign = load_campaign(tmp_path / f"{name}.yaml", check_engines="note")
        return {j.name: j for flow in build_flows(campaign) for j, _ in flow.iterflow()}

    plain, hull = jobs("plain"), jobs("hull", "  - stage: hull\n")
    score = hull["LiH finetune phases"]
    model, phase_dirs = score.function_args
    assert model.uuid == hull["LiH finetune"].uuid  # it scores the training job's model
    assert sorted(phase_dirs) == ["H", "Li", "LiH"]  # phases_for({Li, H})
    for name, ref in phase_dirs.items():
        made = hull[f"phase {name} relax"]  # the job whose folder holds the relaxation's frames
        assert ref.uuid == made.uuid and [list(a) for a in ref.attributes] == [["a", "dir_name"]], name
    # it runs with whatever relaxed (a phase that failed is left out); the training never waits
    # for the phases, and is the very job of the campaign without a hull
    assert score.config.on_missing_references == OnMissing.NONE
    train = hull["LiH finetune"]
    assert not {r.uuid for r in train.input_references} & {j.uuid for n, j in hull.items() if "phase" in n}
    assert train.uuid == plain["LiH finetune"].uuid and "LiH finetune phases" not in plain


def test_phases_that_did_not_relax_are_left_out_of_the_scoring(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A failed relaxation (no folder), one without frames, an unreadable one and one of another
    engine are left out with a line each; no model (the training failed): nothing is scored."""
    from superionic.stages import finetune as stage

    root = require_fixtures(MORPH)
    frames = read_frames([root / TEST[0]], every=8)
    runs = {"ok": (frames, None), "empty": ([], None), "broken": ([], "no vasprun.xml or OUTCAR")}
    monkeypatch.setattr(stage, "_read_run", lambda folder: runs[Path(folder).name])
    dirs = {"A": "/x/ok", "B": None, "C": "/x/empty", "D": "/x/broken"}
    not_scored: dict[str, str] = {}
    kept = stage._phase_frames(dirs, "vasp", not_scored)
    assert list(kept) == ["A"] and len(kept["A"]) == len(frames)
    assert not_scored["B"] == stage.UNFINISHED and sorted(not_scored) == ["B", "C", "D"]
    said = capsys.readouterr().out
    assert "phase B: its relaxation did not finish; not scored" in said
    assert "phase C: no frames (none printed); not scored" in said
    assert "phase D: no frames (no vasprun.xml or OUTCAR); not scored" in said
    assert stage._phase_frames({"A": "/x/ok"}, "cp2k") == {}
    assert "phase A: relaxed on vasp, the training set is cp2k; not scored" in capsys.readouterr().out
    # no model: the job fails (no output stored), so that it scores once the training has run
    with pytest.raises(RuntimeError, match="its training did not finish"):
        stage.score_phases.original(None, dirs)


def test_worse_after_and_a_single_frame_test_set() -> None:
    """The line naming errors that fine-tuning made worse; a one-frame test set has no energy
    spread to compare (n/a), only its offset."""
    from pymatgen.core import Lattice, Structure

    from superionic.engines.finetune import DFTFrame, Errors, describe_test_set, scored_elsewhere, worse_after

    assert worse_after(Errors(5.0, 100.0, 0.2, 3), Errors(4.0, 90.0, 0.1, 3)) is None
    line = worse_after(Errors(4.7, 115.0, 0.148, 3), Errors(5.7, 101.0, 0.286, 3))
    assert line is not None and "energy 4.7 -> 5.7 meV/atom, stress 0.148 -> 0.286 GPa" in line
    assert "stress" not in (worse_after(Errors(1.0, 1.0, None, 1), Errors(2.0, 1.0, None, 1)) or "")
    si = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    forces = np.array([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]])
    frame = DFTFrame(si, -10.0, forces, None, "vasp", "x", "x")
    one = scored_elsewhere([frame], [{"e": -4.99, "f": np.zeros((2, 3)), "s": np.zeros((3, 3))}])
    assert one["energy_meV_per_atom"] is None and one["stress_GPa"] is None
    assert one["energy_offset_meV_per_atom"] == pytest.approx(10.0)
    assert one["force_meV_per_A"] == pytest.approx(100 / 3)  # |0.1| on 2 of 6 components
    text = describe_test_set("Li2S[mp-1153]", {"frames": 1, "before": None, "after": one})
    assert "force n/a -> 33 meV/A; energy with its offset removed n/a -> n/a meV/atom" in text
    assert "(offset n/a -> 10 meV/atom)" in text


@pytest.mark.cp2k
def test_cp2k_campaign_finetunes_chgnet_and_runs_md_with_it(tmp_path: Path, run_campaign) -> None:
    """Real CP2K: relax LiH (positions: a 2-atom cell relaxes its cell in 17+ slow steps), single
    points on rattled and strained copies, fine-tune CHGNet on them, MLIP MD with the fine-tuned
    model; a second run re-trains nothing."""
    from pymatgen.core import Lattice, Structure

    from conftest import require_executable

    require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.08), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.get_primitive_structure().to(filename=str(tmp_path / "LiH.cif"))
    (tmp_path / "c.yaml").write_text(
        "name: ftcp2k\nengine: cp2k\npreset: cp2k_smoke\nsystems:\n  - name: LiH\n    structure: LiH.cif\n"
        "stages:\n  - stage: relax\n    relax_cell: false\n  - stage: finetune\n    n_rattled: 6\n"
        "    rattle_A: 0.08\n"
        "    strain_range: 0.03\n    epochs: 2\n    use_if_worse: true\n"
        "  - stage: md\n    engine: mlip\n    force_field: finetuned\n    temperatures_K: [600]\n"
        "    production_steps: 40\n    species: Li\n    fit_start: 0.0\n    fit_end: 1.0\n"
    )
    result = run_campaign("c.yaml")
    out = result.stdout + result.stderr
    assert "done LiH finetune" in result.stdout, out[-4000:]
    assert "done LiH #0 md 600 K" in result.stdout, out[-4000:]
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    campaign = load_campaign(tmp_path / "c.yaml", check_engines=False)
    store = open_campaign_store(campaign, create=False)
    store.connect()
    plan = planned_jobs(build_flows(campaign))
    train = next(p for p in plan if p.name == "LiH finetune")
    doc = store.job_store.get_output(train.uuid)
    assert doc["use"] == "finetuned" and doc["engine"] == "cp2k" and doc["splits"]["test"] >= 1
    # the relaxed cell, 6 rattles, 2 strains, and the relaxation's frames but its last (single
    # point 0 is that structure): training only, with the stress CP2K printed at each step
    relax = next(p for p in plan if p.stage == "relax")
    relax_doc = store.job_store.get_output(relax.uuid)
    relax_frames = read_frames([relax_doc["dir_name"].split(":", 1)[-1]])
    assert len(relax_frames) >= 2 and all(f.stress_GPa is not None for f in relax_frames[:-1])
    assert doc["relaxation_frames"] == len(relax_frames) - 1
    assert sum(doc["splits"].values()) == 1 + 6 + 2 + doc["relaxation_frames"]
    assert doc["splits"]["val"] + doc["splits"]["test"] <= 1 + 6 + 2  # never scored
    # the last frame of the relaxation is the relaxed cell whose energy atomate2 parsed from the log
    assert relax_frames[-1].energy_eV == pytest.approx(relax_doc["output"]["energy"], abs=1e-5)
    for key in ("energy_meV_per_atom", "force_meV_per_A"):
        assert np.isfinite(doc["before"][key]) and np.isfinite(doc["after"][key])
    # the model is in the store, and the MD ran on it (the replacing job's metadata names it)
    folder = tmp_path / ".superionic" / "models" / doc["weights_sha256"]
    assert read_model_folder(folder)["weights_sha256"] == doc["weights_sha256"]
    md = next(p for p in plan if p.name == "LiH #0 md 600 K")
    md_doc = store.job_store.query_one({"uuid": md.uuid}, sort={"index": -1})
    assert md_doc["metadata"]["force_field"] == str(folder)
    # the report has the errors and the parity plot
    report = tmp_path / "report" / "ftcp2k"
    row = next(csv.DictReader(open(report / "finetune.csv")))
    assert float(row["force_mae_after_meV_A"]) == pytest.approx(doc["after"]["force_meV_per_A"], rel=1e-3)
    assert row["model_folder"] == str(folder)
    assert int(row["relaxation_frames"]) == doc["relaxation_frames"]
    assert (report / "finetune_parity_LiH.png").is_file()
    assert "Fine-tuned CHGNet" in (report / "summary.md").read_text()
    # again: nothing re-runs, nothing re-trains
    again = run_campaign("c.yaml")
    assert again.returncode == 0 and "0 run, 14 already done" in again.stdout, again.stdout[-2000:]


@pytest.mark.cp2k
def test_cp2k_cell_opt_frames_are_the_logs_later_evaluations_with_their_stress(tmp_path: Path) -> None:
    """Real CP2K: a 2-step CELL_OPT of LiH (the campaign's relax input). Frame k of *-pos/-frc-1.xyz,
    *-1.cell and *-1.stress is the log's (k+1)-th force evaluation: its energy, forces and stress
    (CP2K's GPa, sign flipped) as the log prints them, read by another route."""
    import subprocess

    from pymatgen.core import Lattice, Structure

    from conftest import require_executable
    from superionic.engines import stage_settings
    from superionic.engines.cp2k import Cp2kEngine
    from superionic.engines.cp2k_frames import cp2k_output_frames, read_log

    exe = require_executable("cp2k")
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.0), ["Li", "H"], [[0, 0, 0], [0.5] * 3])
    prim = s.get_primitive_structure()
    prim.perturb(0.05, seed=1)
    settings = {**stage_settings("cp2k_smoke", "cp2k", "relax", {}), "max_iter": 2}
    Cp2kEngine().write_inputs(prim, "relax", settings, tmp_path)
    with open(tmp_path / "cp2k.out", "w") as log:
        subprocess.run([exe, "-i", "cp2k.inp"], cwd=tmp_path, stdout=log, check=True, timeout=600)
    frames = cp2k_output_frames(tmp_path / "cp2k.out")
    evaluations = read_log(tmp_path / "cp2k.out")["evaluations"]
    assert len(frames) >= 2 and len(evaluations) >= len(frames) + 1
    for k, frame in enumerate(frames):
        e = evaluations[k + 1]  # the initial evaluation is not in the trajectory files
        assert frame.energy_eV == pytest.approx(e["energy"], abs=1e-6)
        assert frame.forces_eV_per_A == pytest.approx(e["forces"], abs=1e-4)
        assert frame.stress_GPa == pytest.approx(e["stress"], abs=1e-4)
    assert np.abs(frames[0].stress_GPa).max() > 0.05  # a real stress, not a zero test
    cells = {round(f.structure.volume, 6) for f in frames}
    assert len(cells) == len(frames)  # the cell moves, and each frame has its own


def test_training_targets_are_the_frames_stresses_in_chgnet_units() -> None:
    """CHGNet's StructureData converts what it is given with x -0.1 (it expects VASP kBar): the
    targets it trains on must come out as the frames' GPa (tension positive), not 10x smaller."""
    from chgnet.data.dataset import StructureData

    from superionic.engines.finetune import vasp_kbar

    frames = read_frames([require_fixtures(MORPH) / "MP_GGA_relax_2" / "outputs" / "vasprun.xml.gz"])
    data = StructureData(
        [f.structure for f in frames],
        [f.energy_eV / len(f.structure) for f in frames],
        [f.forces_eV_per_A.tolist() for f in frames],
        stresses=[vasp_kbar(f.stress_GPa).tolist() for f in frames],
        shuffle=False,
    )
    _graph, targets = data[0]
    assert targets["s"].numpy() == pytest.approx(frames[0].stress_GPa, abs=1e-5)
    assert np.abs(frames[0].stress_GPa).max() > 0.1  # a real stress, not a zero test


def test_vasprun_and_outcar_name_the_same_settings() -> None:
    run = require_fixtures(MORPH) / "MP_GGA_relax_2" / "outputs"
    md = require_fixtures(MORPH) / TEST[0] / "outputs"
    keys = {f.settings for f in read_frames([run / "vasprun.xml.gz", run / "OUTCAR.gz"])}
    assert keys == {"ENCUT 520 eV, PREC accu, GGA --, k-mesh"}
    md_keys = {f.settings for f in read_frames([md / "vasprun.xml.gz"])}
    assert md_keys == {"ENCUT 245 eV, PREC norm, GGA --, Gamma"}


def test_cp2k_md_frames_pair_positions_and_forces_by_step(tmp_path: Path) -> None:
    """An MD run that printed forces: frames are paired by CP2K's step number, in CHGNet units."""
    from superionic.engines.cp2k_frames import HA_PER_BOHR_TO_EV_PER_A, HA_TO_EV

    (tmp_path / "cp2k.out").write_text(
        " CP2K| version string: CP2K version 2023.1\n GLOBAL| Run type          MD\n"
        " CELL| Vector a [angstrom]:       4.000     0.000     0.000   |a| =     4.000\n"
        " CELL| Vector b [angstrom]:       0.000     4.000     0.000   |b| =     4.000\n"
        " CELL| Vector c [angstrom]:       0.000     0.000     4.000   |c| =     4.000\n"
    )
    pos, frc = [], []
    for step, (x, f) in enumerate([(0.10, 0.01), (0.12, -0.02), (0.15, 0.03)]):
        pos += ["2", f" i = {step}, time = {step}.0, E = -1.5{step}", f"Li {x} 0 0", "H 2.0 0 0"]
        frc += ["2", f" i = {step}, E = -1.5{step}", f"Li {f} 0 0", f"H {-f} 0 0"]
    (tmp_path / "LiH-pos-1.xyz").write_text("\n".join(pos[: 4 * 3]) + "\n")
    (tmp_path / "LiH-frc-1.xyz").write_text("\n".join(frc[4:]) + "\n")  # step 0's forces not written
    frames = read_frames([tmp_path / "cp2k.out"])
    assert len(frames) == 2 and frames[0].engine == "cp2k"
    assert frames[0].structure.cart_coords[0, 0] == pytest.approx(0.12)
    assert frames[0].forces_eV_per_A[0, 0] == pytest.approx(-0.02 * HA_PER_BOHR_TO_EV_PER_A)
    assert frames[1].energy_eV == pytest.approx(-1.52 * HA_TO_EV)
    assert frames[0].structure.lattice.abc == pytest.approx((4.0, 4.0, 4.0))


def test_split_by_run_never_puts_one_run_in_two_splits() -> None:
    from superionic.engines.finetune import DFTFrame, split_by_group

    s = _si()
    frames = [
        DFTFrame(s, -40.0, np.zeros((8, 3)), None, "vasp", f"run{g}", f"run{g}")
        for g in range(6)
        for _ in range(g + 2)
    ]
    split = split_by_group(frames, test_fraction=0.2, val_fraction=0.1, seed=3)
    groups = {k: {f.group for f in v} for k, v in split.items()}
    assert not (groups["train"] & groups["test"]) and not (groups["val"] & groups["test"])
    assert not (groups["train"] & groups["val"])
    assert sum(len(v) for v in split.values()) == len(frames)
    assert len(split["test"]) >= 0.2 * len(frames)
    assert split_by_group(frames, seed=3) == split  # deterministic


def test_a_campaign_falls_back_to_pretrained_chgnet_when_the_model_is_not_better() -> None:
    from superionic.engines.mlip import with_model

    response = with_model.original(
        "relax_maker", {"use": "pretrained", "model": {"folder": "/nonexistent"}}, {}, [], _si(), "x relax"
    )
    maker = response.replace.function.__self__
    assert str(maker.force_field_name).endswith("CHGNet") and "model_dir" not in maker.calculator_kwargs


def test_out_must_not_be_a_folder_of_data(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "keep.txt").write_text("data")
    result = runner.invoke(app, ["finetune", str(tmp_path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "not a model folder" in result.output
    assert (tmp_path / "runs" / "keep.txt").read_text() == "data"


def test_relaxation_frames_without_stress_are_left_out_when_the_single_points_have_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """CHGNet trains stress on every frame or none: a relaxation without stresses beside single
    points with stresses is left out (said); with stresses, all but its last frame train only;
    another engine's or settings' relaxation is left out."""
    import copy

    from superionic.stages import finetune as stage

    root = require_fixtures(MORPH)
    points = read_frames([root / TEST[0]], every=8)
    relaxation = read_frames([root / TRAIN[1]], every=8)
    assert all(f.stress_GPa is not None for f in points + relaxation) and len(relaxation) >= 3
    bare = [copy.copy(f) for f in relaxation]
    for f in bare:
        f.stress_GPa = None
    other = [copy.copy(f) for f in relaxation]
    for f in other:
        f.settings = "ENCUT 520 eV"
    runs = {"with": relaxation, "bare": bare, "other": other}
    monkeypatch.setattr(stage, "_read_run", lambda folder: (list(runs[Path(folder).name]), None))
    kept = stage._relax_frames(["/x/with", "/x/bare", None, "/x/other"], points)
    said = capsys.readouterr().out
    assert [i for _, i in kept] == [0] * (len(relaxation) - 1)
    assert all(f.train_only for f, _ in kept)
    assert "relaxation of ordering 1: frames without a stress (the single points have one); left out" in said
    n = len(relaxation) - 1  # its last frame is single point 0
    assert f"ordering 3: {n} of {n} frames run with other DFT settings" in said
    # single points without stresses: a relaxation without them trains too
    for p in points:
        p.stress_GPa = None
    assert len(stage._relax_frames(["/x/bare"], points)) == len(relaxation) - 1


def test_cp2k_settings_name_the_functional_and_the_k_mesh() -> None:
    """CP2K logs: the settings key that keeps energy scales apart names the functional and the
    number of k-points (the scheme alone, "General", is the same for every mesh atomate2 writes)."""
    from superionic.engines.cp2k_frames import read_log

    root = require_fixtures("cp2k")
    static = read_log(root / "Si_static_test/outputs/cp2k.out.gz")["settings"]
    assert static == "cutoff_Ha 50.0, k Monkhorst-Pack, k_points 256, xc PBE"  # as the log prints them
    assert read_log(root / "H2O_md/H2O-32.out")["settings"] == "cutoff_Ha 100.0, xc PADE"  # Gamma only
