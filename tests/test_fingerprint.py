"""Fingerprints: same campaign -> same job uuids; a changed setting re-keys only downstream."""

from __future__ import annotations

from pathlib import Path

from superionic.flows import build_flows, planned_jobs
from superionic.spec import load_campaign

TEXT = """\
name: fp
systems:
  - prototype: argyrodite
stages:
  - stage: order
  - stage: relax
  - stage: md
    temperatures_K: [600, 900]
    production_steps: 100
"""


def plan(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return {p.name: p.uuid for p in planned_jobs(build_flows(load_campaign(path, check_engines="note")))}


def test_rebuilding_gives_identical_uuids(tmp_path: Path) -> None:
    assert plan(tmp_path, TEXT) == plan(tmp_path, TEXT)


def test_changed_md_setting_rekeys_md_and_downstream_only(tmp_path: Path) -> None:
    a = plan(tmp_path, TEXT)
    b = plan(tmp_path, TEXT.replace("production_steps: 100", "production_steps: 200"))
    same = {k for k in a if a[k] == b[k]}
    assert same == {"argyrodite order", "argyrodite #0 relax"}


def test_changed_order_seed_rekeys_everything(tmp_path: Path) -> None:
    a = plan(tmp_path, TEXT)
    b = plan(tmp_path, TEXT.replace("- stage: order", "- stage: order\n    seed: 5"))
    assert all(a[k] != b[k] for k in a)


def test_how_md_frames_are_stored_is_not_part_of_the_identity(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Binary trajectories came with a `make` override and a `binary_trajectory` field: a store
    made before them recomputes nothing (the same uuid with either setting, and the override
    fingerprinted as atomate2's ForceFieldMDMaker.make it wraps), while a physics setting still
    re-keys (test above)."""
    from superionic.engines import mlip

    a = plan(tmp_path, TEXT)
    made = mlip.md_maker

    def pymatgen_frames(*args, **kwargs):  # type: ignore[no-untyped-def]
        maker = made(*args, **kwargs)
        maker.binary_trajectory = False
        return maker

    monkeypatch.setattr(mlip, "md_maker", pymatgen_frames)
    b = plan(tmp_path, TEXT)
    job = next(
        j for j, _ in build_flows(load_campaign(tmp_path / "c.yaml"))[0].iterflow() if " md " in j.name
    )
    assert job.function.__self__.binary_trajectory is False  # the patch took
    assert b == a
    monkeypatch.undo()
    from superionic.fingerprint import _identity

    job = next(
        j for j, _ in build_flows(load_campaign(tmp_path / "c.yaml"))[0].iterflow() if " md " in j.name
    )
    function = _identity(job.as_dict()["function"])
    assert (function["@module"], function["@callable"]) == (
        "atomate2.forcefields.md",
        "ForceFieldMDMaker.make",
    )
    assert "binary_trajectory" not in function["@bound"]


def test_md_job_identities_are_those_of_the_stores_made_before_binary_trajectories(tmp_path: Path) -> None:
    """Pinned: the uuids below were computed with the code of commit b9db548 (before binary
    trajectories, the MLIP make override and the VASP MD output tags). Today's code gives the same,
    so stores made then recompute nothing. (A dependency upgrade that changes a Maker's
    serialisation re-keys every store too; this test is where that shows.) The campaign is an
    antiperovskite: the argyrodite prototypes' geometry was corrected after b9db548 (their 16e/48h
    enantiomorph), which re-keys argyrodite stores on purpose: their structures were wrong."""
    text = TEXT.replace("prototype: argyrodite", "prototype: antiperovskite_amide")
    mlip = plan(tmp_path, text)
    assert mlip["antiperovskite_amide #0 md 600 K"] == "7e2c9388-998f-5b3f-6cca-7278a89b5b68"
    assert mlip["antiperovskite_amide #0 arrhenius"] == "49057e8c-fc8a-fb19-a967-cdca0f9c2968"
    vasp = plan(
        tmp_path,
        "name: fpv\nengine: vasp\nsystems:\n  - prototype: antiperovskite_amide\nstages:\n"
        "  - stage: order\n  - stage: relax\n  - stage: md\n    temperatures_K: [600]\n"
        "    production_steps: 100\n",
    )
    assert vasp["antiperovskite_amide #0 md 600 K"] == "a0df38ee-c12d-4f8f-4bbe-199e8063701c"
    # re-keyed: VASP frames are now every NBLOCK = 10 steps (XDATCAR), so the VASP analysis jobs
    # (diffusion; also rotation, snapshots, converge when a campaign has them) are built with 10x
    # the frame spacing (at b9db548 this one was e580159c-3756-aad5-56f1-741cec43dc7f).
    # It re-runs on an old store in seconds and reads the spacing its trajectory records (POTIM,
    # every step), see test_an_old_vasp_trajectory_is_analysed_with_the_spacing_it_records.
    assert vasp["antiperovskite_amide #0 diffusion 600 K"] == "c056e227-4570-e72d-a4dd-715d62da23d6"
