"""Campaign validation: good files expand, bad files give one clear line each, exit 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from superionic.cli import app
from superionic.errors import SpecError
from superionic.spec import load_campaign

GOOD = """\
name: t1
engine: mlip
systems:
  - prototype: argyrodite
    params: {halide: [Cl, Br]}
stages:
  - stage: order
    n_structures: 2
  - stage: relax
  - stage: md
    temperatures_K: [600, 900]
    production_steps: 100
"""

runner = CliRunner()


def write(dir_: Path, text: str, name: str = "c.yaml") -> Path:
    path = dir_ / name
    path.write_text(textwrap.dedent(text))
    return path


def test_good_campaign_expands_sweep(campaign_dir: Path) -> None:
    c = load_campaign(write(campaign_dir, GOOD))
    assert [s.name for s in c.systems] == ["argyrodite-halide=Cl", "argyrodite-halide=Br"]
    assert c.systems[0].structure.composition.reduced_formula == "Li6PS5Cl"
    assert c.systems[1].structure.composition["Br"] == pytest.approx(4)
    # lattice follows the halide (Br argyrodite is larger)
    assert c.systems[1].structure.lattice.a > c.systems[0].structure.lattice.a
    assert c.store_path == campaign_dir.resolve() / ".superionic"


def test_validate_prints_job_graph_and_counts(campaign_dir: Path) -> None:
    result = runner.invoke(app, ["validate", str(write(campaign_dir, GOOD))])
    assert result.exit_code == 0, result.output
    # 2 systems x (1 order + 2 orderings x (1 relax + 2 md + 2 diffusion + 1 arrhenius))
    assert "total 26" in result.output
    assert "order 2, relax 4, md 8, diffusion 8, arrhenius 4" in result.output
    assert not (campaign_dir / ".superionic").exists()


BAD = {
    "malformed_yaml": (
        "name: x\nsystems: [\n  - prototype: argyrodite\nstages: {",
        ["malformed YAML"],
    ),
    "unknown_prototype": (
        GOOD.replace("prototype: argyrodite", "prototype: perovskiteX"),
        ["systems[0].prototype", "unknown prototype", "perovskiteX", "argyrodite"],
    ),
    "not_charge_balanced": (
        GOOD.replace("params: {halide: [Cl, Br]}", "params: {halide: Cl}\n    sites: {Li_48h: {Li: 0.6}}"),
        ["not charge balanced", "+4.800"],
    ),
    "occupancy_above_one": (
        GOOD.replace(
            "params: {halide: [Cl, Br]}",
            "params: {halide: Cl}\n    sites: {S_4d: {S: 0.7, Cl: 0.5}}",
        ),
        ["systems[0].sites.S_4d", "above 1", "1.2"],
    ),
    "negative_temperature": (
        GOOD.replace("[600, 900]", "[600, -300]"),
        ["stages[2].temperatures_K[1]", "greater than 0", "-300"],
    ),
    "missing_structure_file": (
        GOOD.replace("prototype: argyrodite\n    params: {halide: [Cl, Br]}", "structure: nowhere.cif"),
        ["systems[0].structure", "not found", "nowhere.cif"],
    ),
    "unknown_key": (
        GOOD.replace("n_structures: 2", "n_structures: 2\n    n_strcutures: 3"),
        ["stages[0].n_strcutures", "unknown key", "n_structures"],
    ),
    "unknown_stage": (
        GOOD.replace("stage: relax", "stage: relaxx"),
        ["stages[1]", "relaxx", "order, relax, finetune, hull, nmr, md, quench"],
    ),
    "bad_parameter_value": (
        GOOD.replace("[Cl, Br]", "[Cl, F]"),
        ["systems[0].params.halide", "'F'", "['Cl', 'Br', 'I']"],
    ),
    "npt_langevin": (
        GOOD.replace(
            "production_steps: 100", "production_steps: 100\n    ensemble: npt\n    thermostat: langevin"
        ),
        ["stages[2].thermostat", "MTK Nose-Hoover chain", "nose-hoover with ensemble npt"],
    ),
    "unknown_preset": (
        GOOD.replace("engine: mlip", "engine: mlip\npreset: nosuch"),
        ["preset", "unknown preset", "nosuch", "default"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_campaign_exits_2_and_names_file_field_value(campaign_dir: Path, case: str) -> None:
    text, expected = BAD[case]
    path = write(campaign_dir, text, f"{case}.yaml")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines, result.output
    assert all(str(path) in line for line in lines)  # every line names the file
    joined = "\n".join(lines)
    for fragment in expected:
        assert fragment in joined, f"{fragment!r} not in {joined!r}"
    # nothing written: no store, no report
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert not (campaign_dir / ".superionic").exists()
    assert not (campaign_dir / "report").exists()


def test_errors_carry_line_numbers(campaign_dir: Path) -> None:
    path = write(campaign_dir, GOOD.replace("[600, 900]", "[600, -300]"))
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    problem = info.value.problems[0]
    assert problem.line == 11  # the temperatures_K line
    assert f"{path}:11:" in str(info.value)


def test_disordered_system_without_order_stage_is_refused(campaign_dir: Path) -> None:
    text = GOOD.replace("  - stage: order\n    n_structures: 2\n", "")
    with pytest.raises(SpecError, match="no 'order' stage"):
        load_campaign(write(campaign_dir, text))


def test_missing_campaign_file() -> None:
    result = runner.invoke(app, ["validate", "does/not/exist.yaml"])
    assert result.exit_code == 2
    assert "does/not/exist.yaml: (file): campaign file not found" in result.output


@pytest.mark.parametrize("command", ["validate", "run", "status", "report"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
