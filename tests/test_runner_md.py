"""Local runner semantics (jobflow Responses), MLIP MD reproducibility, checkpoints and resume."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ase import units
from jobflow import Flow, JobConfig, JobStore, OnMissing, Response, job
from pymatgen.core import Lattice, Structure
from pymatgen.core.trajectory import Trajectory

from superionic.dispatch.local import CampaignStore, run_flows
from superionic.dispatch.stores import BlobDirStore, JournalStore

# --------------------------------------------------------------------------------------------
# runner: jobflow Response semantics (module-level jobs: recorded flows are rebuilt by import)

_FLAKY = {"fail": True}


@job
def number(x: int) -> int:
    return x


@job
def add_one(x: int | None) -> int:
    return -1 if x is None else x + 1


@job
def stop_children(x: int) -> Response:
    return Response(output=x, stop_children=True)


@job
def stop_jobflow(x: int) -> Response:
    return Response(output=x, stop_jobflow=True, detour=number(100))


@job
def flaky(x: int) -> int:
    if _FLAKY["fail"]:
        raise RuntimeError("killed")
    return 10 * x


@job
def grow(x: int) -> Response:
    step = flaky(x)
    return Response(replace=Flow([step], output=step.output))


@job
def boom() -> int:
    raise RuntimeError("no convergence")


def open_store(root: Path) -> CampaignStore:
    return CampaignStore(
        JobStore(
            JournalStore(root / "out.jsonl", key="uuid"),
            additional_stores={"data": BlobDirStore(root / "blobs")},
        ),
        JournalStore(root / "state.jsonl", key="uuid"),
        root=root,
    )


def test_stop_children_blocks_descendants_now_and_on_rerun(tmp_path: Path) -> None:
    a = stop_children(1)
    b = add_one(a.output)
    c = add_one(b.output)
    other = number(5)
    flow = Flow([a, b, c, other])
    events: list[tuple[str, str, str]] = []
    summary = run_flows([flow], open_store(tmp_path), tmp_path / "jobs", on_event=lambda *e: events.append(e))
    assert set(summary.done) == {a.uuid, other.uuid}
    assert summary.blocked == [b.uuid, c.uuid] and not summary.failed
    store = open_store(tmp_path)
    store.connect()
    states = store.states()
    reason = "parent 'stop_children' asked to stop its children (stop_children)"
    assert states[b.uuid]["state"] == states[c.uuid]["state"] == "blocked"
    assert states[b.uuid]["error"] == reason and states[c.uuid]["error"] == reason
    assert not store.has_output(b.uuid) and not store.has_output(c.uuid)
    assert ("block", b, reason) in events
    assert store.job_store.get_output(a.uuid) == 1 and store.job_store.get_output(other.uuid) == 5
    # a second run skips the finished parent but still honours its Response
    again = run_flows([flow], store, tmp_path / "jobs")
    assert again.done == [] and set(again.skipped) == {a.uuid, other.uuid}
    assert again.blocked == [b.uuid, c.uuid] and not store.has_output(b.uuid)


def test_stop_jobflow_stops_its_workflow_only(tmp_path: Path) -> None:
    a = number(1)
    s = stop_jobflow(a.output)
    b = add_one(s.output)
    elsewhere = number(7)
    store = open_store(tmp_path)
    summary = run_flows([Flow([a, s, b]), Flow([elsewhere])], store, tmp_path / "jobs")
    assert summary.done == [a.uuid, s.uuid, elsewhere.uuid]
    assert summary.blocked == [b.uuid]
    assert store.states()[b.uuid]["error"] == "job 'stop_jobflow' asked to stop the workflow (stop_jobflow)"
    # its detour does not run either (run_locally returns before any replace/detour/addition)
    assert store.job_store.docs_store.count({"output": 100}) == 0
    assert store.job_store.get_output(elsewhere.uuid) == 7


def test_killed_replacement_is_resumed_by_the_next_run(tmp_path: Path) -> None:
    """A job replaced by a flow that did not finish: the rerun skips the job, runs the replacement."""
    g = grow(4)
    child = add_one(g.output)
    flow = Flow([g, child])
    _FLAKY["fail"] = True
    first = run_flows([flow], open_store(tmp_path), tmp_path / "jobs")
    assert "RuntimeError: killed" in first.failed.values()
    assert not open_store(tmp_path).has_output(child.uuid)
    _FLAKY["fail"] = False
    try:
        store = open_store(tmp_path)
        second = run_flows([flow], store, tmp_path / "jobs")
    finally:
        _FLAKY["fail"] = True
    assert second.ok, (second.failed, second.blocked)
    assert g.uuid in second.skipped and child.uuid in second.done
    assert store.job_store.get_output(child.uuid) == 41  # 10 * 4 from the replacement, + 1
    assert store.states()[g.uuid]["state"] == "done"


def test_missing_inputs_allowed_by_job_config_do_not_block(tmp_path: Path) -> None:
    """jobflow runs a failed job's child when the child accepts missing references."""
    bad = boom()
    tolerant = add_one(bad.output)
    tolerant.config = JobConfig(on_missing_references=OnMissing.NONE)
    strict = add_one(bad.output)
    store = open_store(tmp_path)
    summary = run_flows([Flow([bad, tolerant, strict])], store, tmp_path / "jobs")
    assert list(summary.failed) == [bad.uuid] and summary.blocked == [strict.uuid]
    assert store.job_store.get_output(tolerant.uuid) == -1


# --------------------------------------------------------------------------------------------
# MLIP MD: reproducibility, checkpoints, resume


@pytest.fixture(scope="module")
def chgnet() -> Any:
    """One CHGNet calculator for every MD here (loading the model costs more than a short run)."""
    import torch
    from chgnet.model.dynamics import CHGNetCalculator

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield CHGNetCalculator(stress_unit="eV/A3")
    torch.set_num_threads(threads)


class CountingCalculator:
    """Counts CHGNet force evaluations and raises at a chosen one (a run killed mid-way)."""

    def __init__(self, calc: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.raise_at: int | None = None
        original = type(calc).calculate

        def calculate(inner: Any, *args: Any, **kwargs: Any) -> None:
            self.calls += 1
            if self.raise_at is not None and self.calls >= self.raise_at:
                raise KeyboardInterrupt("killed")
            original(inner, *args, **kwargs)

        calc.reset()
        monkeypatch.setattr(type(calc), "calculate", calculate)
        from superionic.engines.mlip_md import ResumableMDMaker

        monkeypatch.setattr(ResumableMDMaker, "_get_calculator", lambda _self: calc)


def licl() -> Structure:
    """8-atom rock-salt LiCl, slightly rattled so that forces are not zero by symmetry."""
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    frac = np.concatenate([fcc, fcc + 0.5]) % 1.0
    rng = np.random.default_rng(3)
    return Structure(Lattice.cubic(5.14), ["Li"] * 4 + ["Cl"] * 4, frac + rng.normal(0, 0.006, (8, 3)))


SETTINGS = {
    "production_steps": 12,
    "thermostat": "langevin",
    "trajectory_interval": 2,
    "checkpoint_every_steps": 4,
    "seed": 7,
}


def md(settings: dict[str, Any], temperature_K: float = 900.0) -> Any:
    from superionic.engines.mlip import md_maker

    return md_maker({**SETTINGS, **settings}, temperature_K)


def positions(result: Any) -> np.ndarray:
    return np.array([f.cart_coords for f in result.trajectory])


def wrapped_difference(frac_a: np.ndarray, frac_b: np.ndarray) -> float:
    """Largest difference of fractional coordinates, modulo lattice translations."""
    d = frac_a - frac_b
    return float(np.abs(d - np.round(d)).max())


@pytest.fixture(scope="module")
def reference(chgnet: Any, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """An uninterrupted 12-step Langevin run (frames every 2 steps)."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("reference"))
    try:
        from superionic.engines.mlip_md import ResumableMDMaker

        maker = md({})
        maker._calculator = chgnet
        assert isinstance(maker, ResumableMDMaker)
        result = maker.run_ase(licl())
        assert not Path("md_checkpoint.npz").exists()  # a finished run leaves no checkpoint
        return positions(result)
    finally:
        os.chdir(cwd)


def test_same_seed_same_langevin_trajectory(
    reference: np.ndarray, chgnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Langevin noise is seeded: a rerun with the same seed (and threads) repeats every frame."""
    monkeypatch.chdir(tmp_path)
    maker = md({})
    maker._calculator = chgnet
    again = maker.run_ase(licl())
    assert positions(again).shape == (7, 8, 3)
    assert np.array_equal(positions(again), reference)
    assert "md: reproducible: velocity seed 7, Langevin noise seed [7, 1]" in maker.tags


def test_killed_md_resumes_from_its_checkpoint_through_the_runner(
    reference: np.ndarray, chgnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after step 9 -> the rerun starts at step 8 and returns the uninterrupted trajectory."""
    counter = CountingCalculator(chgnet, monkeypatch)
    md_job = md({}).make(licl())
    flow = Flow([md_job])
    counter.raise_at = 11  # call 1: the start configuration, call k + 1: after step k
    with pytest.raises(KeyboardInterrupt):
        run_flows([flow], open_store(tmp_path), tmp_path / "jobs")
    checkpoint = tmp_path / "jobs" / md_job.uuid / "md_checkpoint.npz"
    with np.load(checkpoint) as data:
        saved_frames = data["obs.atom_positions"]
        assert json.loads(str(data["meta"]))["step"] == 8
    assert saved_frames.shape == (5, 8, 3)  # frames at steps 0, 2, ..., 8
    counter.raise_at, counter.calls = None, 0
    store = open_store(tmp_path)
    summary = run_flows([flow], store, tmp_path / "jobs")
    assert summary.done == [md_job.uuid]
    # 4 steps, plus the forces at the restored positions that Langevin's first step needs
    assert counter.calls == 5
    doc = store.job_store.get_output(md_job.uuid, load=True)
    traj = Trajectory.from_dict(doc["objects"]["trajectory"])
    frames = np.array([f.frac_coords for f in traj])  # the store keeps them wrapped into the cell
    assert frames.shape == (7, 8, 3)
    assert wrapped_difference(frames[:5], saved_frames @ licl().lattice.inv_matrix) < 1e-10
    # continuous: the same run as without the kill
    assert wrapped_difference(frames, reference @ licl().lattice.inv_matrix) < 1e-10
    tags = doc["tags"]
    assert any("resumed from step 8" in t for t in tags)
    assert not checkpoint.exists()


def test_checkpoint_from_other_settings_is_ignored(
    chgnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    counter = CountingCalculator(chgnet, monkeypatch)
    counter.raise_at = 6
    with pytest.raises(KeyboardInterrupt):
        md({"thermostat": "nose-hoover"}).run_ase(licl())
    assert (tmp_path / "md_checkpoint.npz").is_file()  # written at step 4
    counter.raise_at, counter.calls = None, 0
    other = md({"thermostat": "nose-hoover"}, temperature_K=1000.0)
    other.run_ase(licl())
    assert counter.calls == 13  # from step 0: the 900 K checkpoint was not used
    assert not any("resumed" in t for t in other.tags)
    assert not (tmp_path / "md_checkpoint.npz").exists()


def test_nose_hoover_resume_restores_the_thermostat(
    chgnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ASE's NPT thermostat (zeta, eta, past positions) and a temperature ramp continue exactly.

    The run is killed during the ramp: resuming at the wrong point of the schedule would change
    the thermostat's target temperature and so the positions.
    """
    settings = {
        "thermostat": "nose-hoover",
        "ramp_steps": 4,
        "production_steps": 2,
        "checkpoint_every_steps": 2,
        "trajectory_interval": 1,
    }
    monkeypatch.chdir(tmp_path)
    maker = md(settings)
    maker._calculator = chgnet
    whole = positions(maker.run_ase(licl()))
    counter = CountingCalculator(chgnet, monkeypatch)
    counter.raise_at = 5  # after step 3: checkpoint at step 2
    with pytest.raises(KeyboardInterrupt):
        md(settings).run_ase(licl())
    counter.raise_at, counter.calls = None, 0
    resumed = md(settings)
    frames = positions(resumed.run_ase(licl()))
    assert counter.calls == 4  # steps 3-6 only
    assert np.array_equal(frames, whole)
    assert any("resumed from step 2" in t for t in resumed.tags)


def test_nose_hoover_keeps_a_hexagonal_crystal(
    chgnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ASE's NPT needs an upper-triangular cell: the atoms must rotate with the cell.

    atomate2 rotates the cell only, which moves every atom of a pymatgen hexagonal cell to other
    fractional coordinates (Li at (1/3, 2/3) lands near (0.58, 0.33)).
    """
    monkeypatch.chdir(tmp_path)
    hexagonal = Structure(
        Lattice.hexagonal(3.9, 6.4),
        ["Li", "Li", "Cl", "Cl"],
        [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.38], [2 / 3, 1 / 3, 0.88]],
    )
    maker = md({"thermostat": "nose-hoover", "production_steps": 1, "trajectory_interval": 1})
    maker._calculator = chgnet
    first = maker.run_ase(hexagonal).trajectory[0]
    assert first.lattice.abc == pytest.approx(hexagonal.lattice.abc, abs=1e-9)
    assert first.lattice.angles == pytest.approx(hexagonal.lattice.angles, abs=1e-9)
    assert np.abs(first.frac_coords - hexagonal.frac_coords).max() < 1e-9


def test_mtk_npt_temperature_ramp_reaches_the_thermostat() -> None:
    """The MTK chain's kT (what it thermostats to) follows set_temperature; atomate2 left it at step 0's."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.nose_hoover_chain import MTKNPT

    from superionic.engines.mlip_md import set_temperature

    atoms = bulk("Cu", cubic=True)
    atoms.calc = EMT()
    dyn = MTKNPT(
        atoms, 2 * units.fs, temperature_K=100, pressure_au=0.0, tdamp=100 * units.fs, pdamp=1000 * units.fs
    )
    set_temperature(dyn, 700.0)
    assert dyn._thermostat._kT == pytest.approx(units.kB * 700.0, rel=1e-12)
    assert dyn._barostat._kT == pytest.approx(units.kB * 700.0, rel=1e-12)


@pytest.mark.parametrize("value", [-5, 2.5, "often", True])
def test_bad_checkpoint_interval_is_one_clear_error(value: object) -> None:
    from superionic.errors import SpecError

    with pytest.raises(SpecError) as err:
        md({"checkpoint_every_steps": value})
    assert str(err.value) == (
        f"checkpoint_every_steps: not a number of MD steps (got {value!r}); "
        "valid: a whole number >= 0 (0: no checkpoints)"
    )


def test_checkpoint_dir_from_environment_is_keyed_by_job_uuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FireWorks reruns start in a new launch folder: SUPERIONIC_CHECKPOINT_DIR/<uuid> is stable."""
    monkeypatch.setenv("SUPERIONIC_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    j = where_checkpoint()
    store = open_store(tmp_path)
    run_flows([Flow([j])], store, tmp_path / "jobs")
    assert store.job_store.get_output(j.uuid) == str(tmp_path / "checkpoints" / j.uuid / "md_checkpoint.npz")


@job
def where_checkpoint() -> str:
    from superionic.engines.mlip_md import checkpoint_path

    return str(checkpoint_path())


CAMPAIGN = """\
name: ck
engine: mlip
systems:
  - prototype: argyrodite
stages:
  - stage: order
  - stage: relax
  - stage: md
    temperatures_K: [600]
    production_steps: 100
    checkpoint_every_steps: {every}
"""


def test_campaign_sets_the_checkpoint_interval(tmp_path: Path) -> None:
    from superionic.flows import build_flows
    from superionic.spec import load_campaign

    path = tmp_path / "ck.yaml"
    path.write_text(CAMPAIGN.format(every=40))
    flows = build_flows(load_campaign(path))
    makers = [j.maker for f in flows for j, _ in f.iterflow() if getattr(j, "maker", None) is not None]
    md_makers = [m for m in makers if hasattr(m, "checkpoint_every_steps")]
    assert [m.checkpoint_every_steps for m in md_makers] == [40]


def test_negative_checkpoint_interval_is_refused_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from superionic.cli import app

    path = tmp_path / "ck.yaml"
    path.write_text(CAMPAIGN.format(every=-1))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "stages[2].checkpoint_every_steps" in errors[0] and "(got -1)" in errors[0]


def test_unseeded_run_says_it_is_not_reproducible(
    chgnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    maker = md({"production_steps": 1})
    maker.mb_velocity_seed = None
    maker._calculator = chgnet
    maker.run_ase(licl())
    assert "md: not reproducible: no seed (unseeded velocities, Langevin noise unseeded)" in maker.tags


def test_nose_hoover_resume_with_frozen_species(
    chgnet: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frozen Cl (FixAtoms from selective_dynamics): ASE's NPT refused to continue such a run."""
    monkeypatch.chdir(tmp_path)
    frozen = licl()
    frozen.add_site_property("selective_dynamics", [[sp.symbol != "Cl"] * 3 for sp in frozen.species])
    settings = {
        "thermostat": "nose-hoover",
        "production_steps": 6,
        "checkpoint_every_steps": 3,
        "trajectory_interval": 1,
    }
    maker = md(settings)
    maker._calculator = chgnet
    whole = positions(maker.run_ase(frozen))
    counter = CountingCalculator(chgnet, monkeypatch)
    counter.raise_at = 6  # after step 4: checkpoint at step 3
    with pytest.raises(KeyboardInterrupt):
        md(settings).run_ase(frozen)
    counter.raise_at = None
    frames = positions(md(settings).run_ase(frozen))
    assert np.array_equal(frames, whole)
    cl = np.array([sp.symbol == "Cl" for sp in frozen.species])
    assert np.abs(frames[:, cl] - frames[0, cl]).max() == 0.0
