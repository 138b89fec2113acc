"""The five study campaigns: every scale validates, the smoke scale runs end to end into
reproduction.csv, and the paper-scale VASP inputs carry protocols.md's numbers (written here, not
read from the presets)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import RunCampaign, superionic
from superionic.report.reproduction import Pooled, pool, reproduction_rows

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
STUDIES = {
    "a": "study_a_bh4_argyrodites.yaml",
    "b": "study_b_amide_antiperovskite.yaml",
    "c": "study_c_halide_glass.yaml",
    "d": "study_d_oxychloride.yaml",
    "e": "study_e_argyrodite_disorder.yaml",
}
VERDICTS = {
    "agrees",
    "differs",
    "trend holds",
    "trend reversed",
    "not resolved at this scale",
    "different observable",
    "not computed at this scale",
    "computed (no published value)",
}


def _copy_study(study: str, dest: Path) -> Path:
    """The study file (and the structures it reads) in ``dest``, so its store is there too."""
    shutil.copy(WORKFLOWS / STUDIES[study], dest / STUDIES[study])
    shutil.copytree(WORKFLOWS / "structures", dest / "structures")
    return dest / STUDIES[study]


@pytest.mark.parametrize("scale", ["paper", "quick", "smoke"])
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_study_validates_at_every_scale(study: str, scale: str, tmp_path: Path) -> None:
    """VASP missing here is a note, never an error; the scale is in the campaign name."""
    r = superionic("validate", str(WORKFLOWS / STUDIES[study]), "--scale", scale, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"-{scale}" in r.stdout.split()[0] and f"scale={scale}" in r.stdout
    if scale == "paper":
        assert "engine=vasp" in r.stdout and "note:" in r.stdout + r.stderr


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_smoke_scale_runs_the_whole_study(study: str, tmp_path: Path, run_campaign: RunCampaign) -> None:
    """CHGNet, tiny cells, a few steps: every stage of the study runs and reproduction.csv has one
    row per published quantity, each with a verdict, the scale and the engine; Ea and sigma rows
    equal the report's own Arrhenius table; what a smoke run cannot compute says why."""
    file = _copy_study(study, tmp_path)
    r = run_campaign(file.name, "--scale", "smoke")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    name = {"a": "study-a", "b": "study-b", "c": "study-c", "d": "study-d-oxychloride", "e": "study-e"}[study]
    report = tmp_path / "report" / f"{name}-smoke"
    rows = _rows(report / "reproduction.csv")
    published = YAML(typ="safe").load((ROOT / "configs" / "experiments" / f"study_{study}.yaml").read_text())
    assert [r["quantity"] for r in rows] == [q["name"] for q in published["quantities"]]
    assert {r["verdict"] for r in rows} <= VERDICTS
    assert {r["scale"] for r in rows} == {"smoke"} and {r["engine"] for r in rows} == {"mlip"}
    assert all("superionic" in r["versions"] and "chgnet" in r["versions"] for r in rows)
    assert (report / "reproduction.png").is_file() or all(r["ours"] == "" for r in rows)
    assert "## Reproduction of study_" in (report / "summary.md").read_text()
    arrhenius = _rows(report / "arrhenius.csv")
    for row in rows:
        if row["verdict"] == "not computed at this scale":
            assert row["why"], row
        q = next(q for q in published["quantities"] if q["name"] == row["quantity"])
        if q["observable"] in ("ea_sigmaT_eV", "sigma_300K_mS_cm") and len(q["systems"]) == 1 and row["ours"]:
            column = {"ea_sigmaT_eV": "ea_sigmaT_ev", "sigma_300K_mS_cm": "sigma_300K_mS_cm"}[q["observable"]]
            system = q["systems"][0] if isinstance(q["systems"][0], str) else q["systems"][0]["system"]
            mine = [float(a[column]) for a in arrhenius if a["system"] == system]
            assert float(row["ours"]) == pytest.approx(sum(mine) / len(mine), rel=1e-9)
    health = _rows(report / "diffusion.csv")
    assert all(h["formula"] and int(h["n_atoms"]) > 0 for h in health)
    if study == "e":  # one conventional cell, x = 0.7 rounded to 0.75 (the file says so)
        by_system = {h["system"]: h["formula"] for h in health}
        assert by_system["Li5.3PS4.3Cl1.7"] == "Li21P4S17Cl7"
        assert by_system["Li5.3PS4.3ClBr0.7"] == "Li21P4S17Br3Cl4"
        assert {h["broken_P-S"] for h in health} and all(0 <= float(h["broken_P-S"]) <= 1 for h in health)
    if study == "a":  # no NMR below the paper scale, and the row says which engine it needs
        nmr = next(r for r in rows if r["quantity"].startswith("6Li"))
        assert nmr["verdict"] == "not computed at this scale" and "VASP LCHIMAG" in nmr["why"]
    if study == "b":  # the frozen-species runs exist and their rotation rows were judged
        rot = _rows(report / "rotation.csv")
        assert {"Na2(NH2)(BH4) (frozen BH4)", "Na2(NH2)(BH4) (frozen NH2)"} <= {x["system"] for x in rot}
        frozen = next(r for r in rows if r["quantity"] == "Freezing BH4 slows NH2 rotation")
        assert frozen["verdict"] != "not computed at this scale", frozen


# ---- the verdicts, on numbers worked out by hand -------------------------------------------


def _arr(system: str, ordering: int, ea: float, err: float) -> dict[str, Any]:
    return {"system": system, "ordering": ordering, "ea_D_ev": ea, "ea_D_err_ev": err}


def test_pooling_two_replicas() -> None:
    """mean 0.21; fit error sqrt(0.01^2 + 0.01^2) / 2 = 0.00707; spread 0.01414 (ddof 1);
    combined SE sqrt(0.00707^2 + 0.01414^2 / 2) = 0.01225."""
    p = pool([_arr("X", 1, 0.20, 0.01), _arr("X", 2, 0.22, 0.01)], "ea_D_ev", "ea_D_err_ev")
    assert p is not None
    assert (p.value, p.err, p.spread, p.n) == pytest.approx((0.21, 0.0070711, 0.0141421, 2), rel=1e-4)
    assert p.se == pytest.approx(0.0122474, rel=1e-4)


def _judge(q: dict[str, Any], arrhenius: list[dict[str, Any]]) -> dict[str, Any]:
    (row,) = reproduction_rows(
        {"study": "T", "quantities": [q]}, {"arrhenius": arrhenius}, "quick", "mlip", "m"
    )
    return row


def test_value_verdicts() -> None:
    q = {"name": "Ea", "observable": "ea_D_eV", "systems": ["X"], "value": 0.14, "judge": {"tolerance": 0.05}}
    # 0.21 +- 0.012 vs 0.14: 0.07 off, beyond the tolerance and 2 SE (0.024)
    assert _judge(q, [_arr("X", 1, 0.20, 0.01), _arr("X", 2, 0.22, 0.01)])["verdict"] == "differs"
    # 0.17 +- 0.012: within the tolerance
    assert _judge(q, [_arr("X", 1, 0.16, 0.01), _arr("X", 2, 0.18, 0.01)])["verdict"] == "agrees"
    # 0.21 +- 0.05 (2 SE 0.1 > 0.07 off, and above the tolerance): cannot tell yet
    assert _judge(q, [_arr("X", 1, 0.21, 0.1)])["verdict"] == "not resolved at this scale"
    # an error bar wider than the value itself: not resolved even if the mean lands on it
    assert _judge(q, [_arr("X", 1, 0.14, 1.0)])["verdict"] == "not resolved at this scale"
    missing = _judge({**q, "systems": ["Y"], "needs": "VASP"}, [_arr("X", 1, 0.2, 0.01)])
    assert missing["verdict"] == "not computed at this scale" and "needs VASP" in missing["why"]


def test_trend_verdicts() -> None:
    q = {"name": "t", "observable": "ea_D_eV", "systems": ["A", "B"], "judge": {"order": "increasing"}}
    assert _judge(q, [_arr("A", 1, 0.10, 0.01), _arr("B", 1, 0.20, 0.01)])["verdict"] == "trend holds"
    assert _judge(q, [_arr("A", 1, 0.20, 0.01), _arr("B", 1, 0.10, 0.01)])["verdict"] == "trend reversed"
    # 0.02 apart with 2 SE = 2 sqrt(2) 0.01 = 0.028: not resolved
    assert _judge(q, [_arr("A", 1, 0.10, 0.01), _arr("B", 1, 0.12, 0.01)])["verdict"] == (
        "not resolved at this scale"
    )
    other = {**q, "judge": {"different_observable": "NMR T1"}, "value": 0.45}
    row = _judge(other, [_arr("A", 1, 0.10, 0.01), _arr("B", 1, 0.12, 0.01)])
    assert row["verdict"] == "different observable" and row["why"] == "NMR T1"


def test_pooled_se_without_replicas_is_the_fit_error() -> None:
    assert Pooled(0.2, 0.03, float("nan"), 1).se == pytest.approx(0.03)


# ---- scales -----------------------------------------------------------------------------------


def _campaign(tmp_path: Path, text: str) -> Path:
    (tmp_path / "c.yaml").write_text(text)
    return tmp_path / "c.yaml"


BASE = (
    "name: s\nengine: mlip\nsystems:\n  - name: Cl\n    prototype: argyrodite\n  - name: Br\n"
    "    prototype: argyrodite\n    params: {halide: Br}\nstages:\n  - stage: order\n"
    "  - stage: md\n    temperatures_K: [600, 800]\n    production_steps: 5000\n"
)


def test_scale_merges_by_system_and_stage(tmp_path: Path) -> None:
    from superionic.spec import load_campaign

    file = _campaign(
        tmp_path,
        BASE + "default_scale: small\nscales:\n  paper: {}\n  small:\n"
        "    systems: {Br: null, Cl: {supercell: [2, 1, 1]}}\n    stages: {md: {production_steps: 10}}\n",
    )
    r = superionic("validate", str(file), cwd=tmp_path)
    assert r.returncode == 2 and "scales.small" in r.stderr and "unknown scale" in r.stderr
    file.write_text(file.read_text().replace("small", "quick"))
    c = load_campaign(file)
    assert c.scale == "quick" and c.spec.name == "s-quick"
    assert [s.name for s in c.systems] == ["Cl"] and c.spec.systems[0].supercell == (2, 1, 1)
    md = c.spec.stages[1]
    assert md.production_steps == 10 and md.temperatures_K == [600, 800]
    paper = load_campaign(file, scale="paper")
    assert (
        paper.spec.name == "s-paper"
        and len(paper.systems) == 2
        and paper.spec.stages[1].production_steps == 5000
    )


def test_scale_errors_name_the_override_line(tmp_path: Path) -> None:
    file = _campaign(
        tmp_path,
        BASE + "scales:\n  paper: {}\n  quick:\n    stages:\n      md: {production_steps: -1}\n"
        "      nmr: {efg: false}\n    systems: {I: {supercell: [1, 1, 1]}}\n",
    )
    r = superionic("validate", str(file), "--scale", "quick", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "c.yaml:19: scales.quick.stages.nmr" in r.stderr and "no stage of this name" in r.stderr
    assert (
        "c.yaml:20: scales.quick.systems.I" in r.stderr
        and "no system of this name" in r.stderr
        and "Cl, Br" in r.stderr
    )
    file.write_text(
        file.read_text()
        .replace("      nmr: {efg: false}\n", "")
        .replace("    systems: {I: {supercell: [1, 1, 1]}}\n", "")
    )
    r = superionic("validate", str(file), "--scale", "quick", cwd=tmp_path)
    assert r.returncode == 2 and "c.yaml:18: stages[1].production_steps" in r.stderr
    r = superionic("validate", str(file), "--scale", "huge", cwd=tmp_path)
    assert r.returncode == 2 and "--scale" in r.stderr and "huge" in r.stderr and "paper, quick" in r.stderr
    r = superionic("validate", str(WORKFLOWS / "demo.yaml"), "--scale", "quick", cwd=tmp_path)
    assert r.returncode == 2 and "has no 'scales:' block" in r.stderr


def test_md_systems_must_exist(tmp_path: Path) -> None:
    file = _campaign(tmp_path, BASE.replace("    production_steps: 5000\n", "    systems: [Cl, I]\n"))
    r = superionic("validate", str(file), cwd=tmp_path)
    assert r.returncode == 2 and "stages[1].systems[1]" in r.stderr and "no system of this name" in r.stderr
