"""The five study campaigns: every scale validates, the smoke scale runs end to end into
reproduction.csv, and the paper-scale VASP inputs carry protocols.md's numbers (written here, not
read from the presets)."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymatgen.core import Composition, Structure
from pymatgen.io.vasp import Incar, Kpoints, Poscar
from ruamel.yaml import YAML

from conftest import RunCampaign, superionic
from superionic.engines.vasp import vasp_available
from superionic.flows import build_flows
from superionic.report.reproduction import Pooled, pool, reproduction_rows
from superionic.spec.loader import load_campaign
from superionic.stages.md import freeze_species
from superionic.structures.polyanions import expand_polyanions

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
        assert "engine=vasp" in r.stdout
        assert ("note:" in r.stdout + r.stderr) != vasp_available()[0]  # a note only where VASP is missing


def _is_positive(text: str) -> bool:
    try:
        return float(text.split("+-")[0]) > 0
    except ValueError:
        return False


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
    judged = {"agrees", "differs", "not resolved at this scale"}
    plotted = [
        r for r in rows if r["verdict"] in judged and _is_positive(r["ours"]) and _is_positive(r["published"])
    ]
    assert (report / "reproduction.png").is_file() == bool(plotted), plotted
    assert "## Reproduction of study_" in (report / "summary.md").read_text()
    arrhenius = _rows(report / "arrhenius.csv")
    for row in rows:
        if row["verdict"] == "not computed at this scale":
            assert row["why"], row
        q = next(q for q in published["quantities"] if q["name"] == row["quantity"])
        if q["observable"] in ("ea_sigmaT_eV", "sigma_300K_mS_cm") and len(q["systems"]) == 1 and row["ours"]:
            column = {"ea_sigmaT_eV": "ea_sigmaT_ev", "sigma_300K_mS_cm": "sigma_300K_mS_cm"}[q["observable"]]
            system = q["systems"][0] if isinstance(q["systems"][0], str) else q["systems"][0]["system"]
            mine = [float(a[column]) for a in arrhenius if fnmatch(a["system"], system)]  # D: a glob
            assert mine, (system, [a["system"] for a in arrhenius])
            assert float(row["ours"]) == pytest.approx(sum(mine) / len(mine), rel=1e-9)
    health = _rows(report / "diffusion.csv")
    assert all(h["formula"] and int(h["n_atoms"]) > 0 for h in health)
    if study == "e":  # one conventional cell, x = 0.7 rounded to 0.75 (the file says so)
        by_system = {h["system"]: h["formula"] for h in health}
        assert by_system["Li5.3PS4.3Cl1.7"] == "Li21P4S17Cl7"
        assert by_system["Li5.3PS4.3ClBr0.7"] == "Li21P4S17Br3Cl4"
        assert all(h["broken_P-S"] != "" and 0 <= float(h["broken_P-S"]) <= 1 for h in health)
        assert all(h["energy_drift_meV_atom_ps"] != "" for h in health)
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
    # 0.24 +- 0.012 vs 0.14: 0.10 off, beyond the tolerance plus 2 SE (0.05 + 0.024)
    assert _judge(q, [_arr("X", 1, 0.23, 0.01), _arr("X", 2, 0.25, 0.01)])["verdict"] == "differs"
    # 0.21 +- 0.012: 0.07 off, inside 0.05 + 2 SE = 0.074: not resolved, not "differs"
    assert _judge(q, [_arr("X", 1, 0.20, 0.01), _arr("X", 2, 0.22, 0.01)])["verdict"] == (
        "not resolved at this scale"
    )
    # 0.16 +- 0.06: inside the tolerance, but 2 SE (0.12) is wider than it: not "agrees"
    assert _judge(q, [_arr("X", 1, 0.16, 0.06)])["verdict"] == "not resolved at this scale"
    # one replica and no fit error: no error estimate, so no verdict on the number
    no_err = _judge(q, [{"system": "X", "ordering": 1, "ea_D_ev": 0.15, "ea_D_err_ev": ""}])
    assert no_err["verdict"] == "not resolved at this scale" and "no error estimate" in no_err["why"]
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


def _sigma(system: str, value: float, err: float) -> dict[str, Any]:
    return {"system": system, "ordering": 1, "sigma_300K_mS_cm": value, "sigma_300K_err_mS_cm": err}


def test_factor_verdicts_use_the_whole_ratio_interval() -> None:
    q = {
        "name": "s",
        "observable": "sigma_300K_mS_cm",
        "systems": ["X"],
        "value": 4.86,
        "judge": {"factor": 3},
    }
    assert _judge(q, [_sigma("X", 5.0, 0.5)])["verdict"] == "agrees"  # 4.0-6.0 over 4.86: 0.82-1.23
    assert _judge(q, [_sigma("X", 50.0, 5.0)])["verdict"] == "differs"  # 40-60 over 4.86: 8.2-12.3
    assert _judge(q, [_sigma("X", 10.0, 4.9)])["verdict"] == "not resolved at this scale"  # 0.04-4.1
    assert _judge(q, [_sigma("X", 1.5, 0.7)])["verdict"] == "not resolved at this scale"  # 0.02-0.6


def _tau(unit: str, value: float, err: float, ordering: int = 1) -> dict[str, Any]:
    return {
        "system": "X",
        "ordering": ordering,
        "unit": unit,
        "temperature_K": 700.0,
        "rotation_time_ps": value,
        "rotation_time_err_ps": err,
    }


def test_rotation_beyond_the_run_is_a_lower_bound() -> None:
    """NH2 replicas: one did not decay (inf), one 3 ps; BH4 5 and 6 ps. Faster BH4 (shorter tau
    first, increasing) holds: the undecayed replica makes NH2's tau a lower bound, not 3 ps."""
    entries = [{"system": "X", "unit_name": u, "temperature_K": 700, "label": u} for u in ("BH4", "NH2")]
    q = {"name": "t", "observable": "rotation_time_ps", "systems": entries, "judge": {"order": "increasing"}}
    rot = [_tau("NH2", float("inf"), float("nan"), 1), _tau("NH2", 3.0, 0.3, 2)]
    rot += [_tau("BH4", 5.0, 0.3, 1), _tau("BH4", 6.0, 0.3, 2)]
    (row,) = reproduction_rows({"study": "T", "quantities": [q]}, {"rotation": rot}, "quick", "mlip", "m")
    assert row["verdict"] == "trend holds", row


def test_similar_within_a_factor_needs_resolving_errors() -> None:
    q = {"name": "s", "observable": "ea_D_eV", "systems": ["A", "B"], "judge": {"similar_within_factor": 1.5}}
    assert (
        _judge(q, [_arr("A", 1, 0.10, 0.2), _arr("B", 1, 0.15, 0.2)])["verdict"]
        == "not resolved at this scale"
    )
    assert _judge(q, [_arr("A", 1, 0.20, 0.005), _arr("B", 1, 0.22, 0.005)])["verdict"] == "trend holds"
    assert _judge(q, [_arr("A", 1, 0.10, 0.005), _arr("B", 1, 0.30, 0.005)])["verdict"] == "differs"


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


def test_scale_override_of_an_anchored_mapping_changes_one_system(tmp_path: Path) -> None:
    """`params: *p` shares one YAML node between systems: a scale's change to one must not leak."""
    from superionic.spec import load_campaign

    text = (
        "name: s\nengine: mlip\nsystems:\n  - name: A\n    prototype: argyrodite\n"
        "    params: &p {halide: Cl, x: 0.0}\n  - name: B\n    prototype: argyrodite\n    params: *p\n"
        "stages:\n  - stage: order\ndefault_scale: quick\nscales:\n  paper: {}\n"
        "  quick:\n    systems: {A: {params: {halide: Br}}}\n"
    )
    c = load_campaign(_campaign(tmp_path, text))
    assert [s.spec.params["halide"] for s in c.systems] == ["Br", "Cl"]


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


# ---- paper scale: every VASP job's inputs, against protocols.md's numbers (written here) -------


@dataclass
class VaspJob:
    """One VASP job of a paper-scale graph with the inputs it writes for a stand-in structure."""

    name: str
    system: str
    stage: str
    segment: str
    incar: dict[str, Any]
    kpoints: tuple[int, int, int]
    species: list[str]
    structure: Structure


def _stand_in(system: Any) -> Structure:
    """An ordered stand-in of a (disordered) system cell: each site's majority species, ligands added.

    The graph's relax and MD jobs get their structures from the order stage at run time; the
    inputs that depend on the structure (k-mesh from the lattice, one LANGEVIN_GAMMA and QUAD_EFG
    per species) need only its lattice and its elements, which the stand-in shares.
    """
    s = system.structure
    species = [max(site.species.items(), key=lambda kv: kv[1])[0].symbol for site in s]
    ordered = Structure(s.lattice, species, s.frac_coords)
    missing = {el.symbol for el in s.composition.elements} - set(species)
    for el in missing:  # minority elements on mixed sites (e.g. Ta on the ccp NaTaCl6 cell)
        i = next(i for i, site in enumerate(s) if el in {x.symbol for x in site.species})
        ordered.replace(i, el)
    return expand_polyanions(ordered, system.polyanions, seed=0) if system.polyanions else ordered


@cache
def _paper_vasp_jobs(study: str, out: Path) -> tuple[VaspJob, ...]:
    """Write the inputs of every VASP job of ``study`` at the paper scale under ``out``.

    Jobs whose input-set generator (settings, TEBEG/TEEND, NSW...) and structure equal an earlier
    job's (the orderings of one system) share that job's written folder.
    """
    campaign = _paper_campaign(study)
    stand_ins = {s.name: _stand_in(s) for s in campaign.systems}
    jobs, frozen_by, written, given = [], {}, {}, {}
    for flow in build_flows(campaign):
        for job, _ in flow.iterflow():
            md = job.metadata
            if (
                md.get("stage") == "md" and " freeze " in job.name
            ):  # freeze_species(structure, species, engine)
                frozen_by[md.get("system")] = job.function_args[1]
            maker = getattr(job.function, "__self__", None)
            generator = getattr(maker, "input_set_generator", None)
            if generator is None:
                continue
            arg = job.function_args[0] if job.function_args else None
            if isinstance(arg, Structure):  # a competing phase or an NMR reference: its own cell
                structure = given[job.name.split(" relax")[0]] = arg
            else:  # a reference's NMR run takes its relaxed cell; a system's jobs the stand-in
                structure = given.get(job.name.split(" nmr")[0]) or stand_ins[md["system"].split(" (")[0]]
            if md.get("system") in frozen_by:
                structure = freeze_species.original(structure, frozen_by[md["system"]], "vasp")
            key = (
                json.dumps(generator.as_dict(), sort_keys=True, default=str),
                md.get("system"),
                structure.formula,
                structure.lattice.abc,
            )
            if key not in written:
                folder = out / f"{len(written):04d}"
                generator.get_input_set(structure, potcar_spec=True).write_input(folder)
                poscar = Poscar.from_file(folder / "POSCAR")
                kpts = tuple(int(k) for k in Kpoints.from_file(folder / "KPOINTS").kpts[0])
                written[key] = (
                    dict(Incar.from_file(folder / "INCAR")),
                    kpts,
                    poscar.site_symbols,
                    poscar.structure,
                )
            jobs.append(
                VaspJob(
                    job.name, md.get("system", ""), md.get("stage", ""), md.get("segment", ""), *written[key]
                )
            )
    return tuple(jobs)


@cache
def _paper_campaign(study: str) -> Any:
    campaign = load_campaign(WORKFLOWS / STUDIES[study], check_engines=False, scale="paper")
    assert campaign.scale == "paper" and campaign.spec.engine == "vasp"
    return campaign


def _select(jobs: tuple[VaspJob, ...], stage: str, segment: str = "") -> list[VaspJob]:
    return [j for j in jobs if j.stage == stage and (j.segment or "").startswith(segment)]


def _temperature(job: VaspJob) -> float:
    return float(job.name.split(" md ")[1].split(" K")[0])


@pytest.fixture
def paper_inputs(tmp_path: Path) -> Callable[[str], tuple[VaspJob, ...]]:
    """Write a study's paper-scale VASP inputs under this test's folder (function scope, so the
    five studies' tests spread over the test processes)."""
    return lambda study: _paper_vasp_jobs(study, tmp_path / study)


def test_study_a_paper_vasp_inputs(paper_inputs: Callable[[str], tuple[VaspJob, ...]]) -> None:
    jobs = paper_inputs("a")
    systems = ["Li5PS4(BH4)2", "Li4.75PS4(BH4)1.75 4a-vac", "Li4.75PS4(BH4)1.75 4d-vac"]
    relax = [j for j in _select(jobs, "relax") if j.system in systems]
    assert [sum(j.system == s for j in relax) for s in systems] == [25, 25, 25]  # 25 lowest-Ewald
    for j in relax:  # PAW-PBE, ENCUT 520, ISIF 3, 1x2x2 on the 2x1x1 cell
        assert (j.incar["ENCUT"], j.incar["ISIF"], j.kpoints) == (520, 3, (1, 2, 2)), j.name
        assert j.structure.lattice.a == pytest.approx(2 * j.structure.lattice.b)
    cs = [j for j in _select(jobs, "nmr_cs") if j.system in systems]
    assert (
        all(j.incar["LCHIMAG"] is True for j in cs)
        and min(sum(j.system == s for j in cs) for s in systems) >= 10
    )
    ramps = _select(jobs, "md", "ramp")
    assert ramps and {j.system for j in ramps} == {"Li5PS4(BH4)2", "Li4.75PS4(BH4)1.75 4a-vac"}
    for j in ramps:  # NVT, 2 fs, 100 K -> T linearly over 100 ps
        assert (j.incar["IBRION"], j.incar["ISIF"], j.incar["POTIM"]) == (0, 2, 2.0)
        assert (j.incar["TEBEG"], j.incar["TEEND"], j.incar["NSW"]) == (100, _temperature(j), 100_000 / 2)
        assert j.incar["MDALGO"] == 2 and j.kpoints == (1, 1, 1)
    for j in _select(jobs, "md", "production"):
        assert j.incar["TEBEG"] == j.incar["TEEND"] == _temperature(j) and j.incar["POTIM"] == 2.0


def test_study_b_paper_vasp_inputs(paper_inputs: Callable[[str], tuple[VaspJob, ...]]) -> None:
    jobs = paper_inputs("b")
    relax = _select(jobs, "relax")
    assert relax
    for j in relax:  # PAW-PBE, ENCUT 550, EDIFF 1e-5, EDIFFG -0.01, ions and cell
        assert (j.incar["ENCUT"], j.incar["EDIFF"], j.incar["EDIFFG"], j.incar["ISIF"]) == (
            550,
            1e-5,
            -0.01,
            3,
        )
    pbcm = next(j for j in relax if j.system == "Na2(NH2)(BH4) Pbcm")
    assert pbcm.kpoints == (4, 4, 3)
    assert pbcm.structure.lattice.abc == pytest.approx((6.5384, 6.4960, 9.8512), abs=1e-3)
    (efg,) = _select(jobs, "nmr_efg")  # ENCUT 800, EDIFF 1e-8, 6x6x4 on the Pbcm cell, LEFG
    assert (efg.incar["LEFG"], efg.incar["ENCUT"], efg.incar["EDIFF"], efg.kpoints) == (
        True,
        800,
        1e-8,
        (6, 6, 4),
    )
    counts = efg.structure.composition.get_el_amt_dict()
    per_species = dict(
        zip(efg.species, _runs(efg.incar["QUAD_EFG"], [int(counts[s]) for s in efg.species]), strict=True)
    )
    assert per_species["B"] == pytest.approx(40.59) and per_species["N"] == pytest.approx(20.44)
    assert per_species["Na"] == pytest.approx(104, abs=0.5)
    md = _select(jobs, "md")
    assert {_temperature(j) for j in md} == {250, 300, 363, 500, 700}
    for (
        j
    ) in md:  # NpT Parrinello-Rahman + Langevin, 10 /ps atoms and lattice, 1000 amu, 0.5 fs, Gamma, ENCUT 500
        assert (j.incar["MDALGO"], j.incar["ISIF"], j.incar["POTIM"], j.incar["ENCUT"]) == (3, 3, 0.5, 500), (
            j.name
        )
        assert j.incar["LANGEVIN_GAMMA"] == [10.0] * len(j.species)
        assert (j.incar["LANGEVIN_GAMMA_L"], j.incar["PMASS"], j.kpoints) == (10.0, 1000.0, (1, 1, 1))
        # a long run writes no wavefunction or density and a terse OUTCAR; XDATCAR at the file's
        # trajectory_interval (1: the rotation ACFs want every step)
        incar = j.incar
        assert (incar["LWAVE"], incar["LCHARG"], incar["NWRITE"], incar["NBLOCK"]) == (False, False, 1, 1)
    one_run = [j for j in md if j.system == "Na2(NH2)(BH4)" and _temperature(j) == 500]
    ramp = [j.incar["NSW"] for j in one_run if j.segment == "ramp"]
    production = sum(j.incar["NSW"] for j in one_run if j.segment.startswith("production"))
    assert ramp == [3_000 / 0.5] and production >= 50_000 / 0.5  # 3 ps equilibration, >= 50 ps
    frozen = {j.system: j for j in md if "frozen" in j.system and j.segment == "ramp"}
    assert set(frozen) == {f"Na2(NH2)(BH4) (frozen {u})" for u in ("Na", "NH2", "BH4")}
    flags = frozen["Na2(NH2)(BH4) (frozen BH4)"].structure.site_properties["selective_dynamics"]
    sites = frozen["Na2(NH2)(BH4) (frozen BH4)"].structure
    held = {sites[i].specie.symbol for i, f in enumerate(flags) if not any(f)}
    moving = {sites[i].specie.symbol for i, f in enumerate(flags) if all(f)}
    assert held == {"B", "H"} and moving == {"Na", "N", "H"}  # BH4's H held, NH2's H free


def _runs(values: list[float], counts: list[int]) -> list[float]:
    """The first value of each species' run in a per-atom INCAR list (QUAD_EFG: one per atom)."""
    out, i = [], 0
    for n in counts:
        out.append(values[i])
        assert set(values[i : i + n]) == {values[i]}
        i += n
    return out


def test_study_c_paper_vasp_inputs(paper_inputs: Callable[[str], tuple[VaspJob, ...]]) -> None:
    jobs = paper_inputs("c")
    md = _select(jobs, "md")
    assert {_temperature(j) for j in md} == {400, 600, 800, 1000}
    for j in md:  # non-spin-polarised, Gamma point, 2 fs, NVT Nose-Hoover
        assert (j.incar["ISPIN"], j.kpoints, j.incar["POTIM"], j.incar["MDALGO"], j.incar["ISIF"]) == (
            1,
            (1, 1, 1),
            2.0,
            2,
            2,
        )
    for j in _select(jobs, "md", "ramp"):  # 100 K -> target over 2 ps
        assert (j.incar["TEBEG"], j.incar["TEEND"], j.incar["NSW"]) == (100, _temperature(j), 2_000 / 2)
    campaign = _paper_campaign("c")
    atoms = {s.name: s.structure.composition.num_atoms for s in campaign.systems}  # occupancies summed
    assert atoms == pytest.approx(
        {"HCF-Sm Na0.75Sm1.75Cl6": 68, "HCF-La Na0.75La1.75Cl6": 68, "NaTaCl6": 128}
    )
    quench = _select(jobs, "quench")
    for melt in (1200, 2000):  # 100 K -> melt over 2 ps, hold 20 ps, -> 100 K over 2 ps
        segs = {j.segment: j.incar for j in quench if f"quench {melt} K" in j.name}
        assert (segs["heat"]["TEBEG"], segs["heat"]["TEEND"], segs["heat"]["NSW"]) == (100, melt, 1_000)
        assert (segs["hold"]["TEBEG"], segs["hold"]["TEEND"], segs["hold"]["NSW"]) == (melt, melt, 10_000)
        assert (segs["cool"]["TEBEG"], segs["cool"]["TEEND"], segs["cool"]["NSW"]) == (melt, 100, 1_000)
        assert {s["ISPIN"] for s in segs.values()} == {1} and {s["POTIM"] for s in segs.values()} == {2.0}


def test_study_d_paper_vasp_inputs(paper_inputs: Callable[[str], tuple[VaspJob, ...]]) -> None:
    """The paper has no DFT: the campaign's melt-quench and MD sweep on VASP, Gamma point, NVT."""
    jobs = paper_inputs("d")
    assert {j.system.split(" (")[0] for j in _select(jobs, "quench")} == {"Li3ZrCl4O1.5", "Li2ZrCl6"}
    assert {j.segment for j in _select(jobs, "quench")} >= {"heat", "hold", "cool"}
    for j in _select(jobs, "md"):
        assert j.kpoints == (1, 1, 1) and j.incar["IBRION"] == 0 and j.incar["TEBEG"] > 0


def test_study_e_paper_vasp_inputs(paper_inputs: Callable[[str], tuple[VaspJob, ...]]) -> None:
    """x = 0.7 exactly: five formula cells (5x1x1 of the conventional cell, 20 formula units)."""
    jobs = paper_inputs("e")
    campaign = _paper_campaign("e")
    formulas = {s.name: s.structure.composition for s in campaign.systems}
    assert formulas["Li5.3PS4.3Cl1.7"].almost_equals(Composition("Li106P20S86Cl34"))
    assert formulas["Li5.3PS4.3Br1.7"].almost_equals(Composition("Li106P20S86Br34"))
    assert formulas["Li5.3PS4.3ClBr0.7"].almost_equals(Composition("Li106P20S86Cl20Br14"))
    relax = _select(jobs, "relax")
    assert relax and all(j.structure.lattice.a == pytest.approx(5 * j.structure.lattice.b) for j in relax)
    assert {j.kpoints for j in relax} == {(1, 2, 2)}
    for j in _select(jobs, "md"):
        assert j.kpoints == (1, 1, 1) and j.incar["MDALGO"] == 2 and j.incar["POTIM"] == 2.0


def test_unknown_study_stops_validate_not_report(tmp_path: Path) -> None:
    file = _campaign(tmp_path, BASE.replace("name: s\n", "name: s\nreproduces: study_zz\n"))
    r = superionic("validate", str(file), cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        "c.yaml:2: reproduces:" in r.stderr
        and "study_zz.yaml not found" in r.stderr
        and "study_a" in r.stderr
    )


def test_md_health_on_a_hand_made_run() -> None:
    """One PS4 in a 20 A box: S at 2.05 A; in frame 2 one S leaves to 3.5 A -> 1 of 1 P broken.
    A unit already broken in frame 0 (3 S within 2.6 A) counts too. Energy per atom rising
    0.5 meV per frame, 1000 fs apart: a drift of 0.5 meV/atom/ps."""
    from superionic.analysis.md_health import md_health

    lattice = np.eye(3) * 20.0
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3) * 2.05
    cart = np.vstack([[10.0, 10.0, 10.0], 10.0 + tet])
    frames = np.repeat(cart[None] / 20.0, 3, axis=0)
    frames[2, 1] = (np.array([10.0, 10.0, 10.0]) + tet[0] / 2.05 * 3.5) / 20.0
    symbols = ["P", "S", "S", "S", "S"]
    energies = np.array([0.0, 0.5e-3, 1.0e-3]) * 5  # eV for 5 atoms: 0.5 meV/atom per frame
    out = md_health(frames, lattice, symbols, 1000.0, energies)
    assert out["broken_bonds"]["P-S"] == 1.0
    assert out["energy_drift_meV_atom_ps"] == pytest.approx(0.5)
    intact = md_health(frames[:2], lattice, symbols, 1000.0)
    assert intact["broken_bonds"]["P-S"] == 0.0 and intact["energy_drift_meV_atom_ps"] is None
    broken_from_start = md_health(frames[2:], lattice, symbols, 1000.0)
    assert broken_from_start["broken_bonds"]["P-S"] == 1.0
