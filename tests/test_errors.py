"""Bad input on the command line: one clear line naming the option or file, exit 2, no traceback."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from conftest import require_fixtures
from superionic.cli import app
from superionic.errors import Problem, SpecError
from superionic.spec import load_campaign

runner = CliRunner()

CAMPAIGN = """\
name: t1
engine: mlip
preset: default
systems:
  - prototype: argyrodite
    params: {halide: Cl}
stages:
  - stage: order
    n_structures: 1
  - stage: relax
  - stage: md
    temperatures_K: [600, 900]
    production_steps: 100
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _errors(result: Result, exit_code: int = 2) -> list[str]:
    """The ``error:`` lines of a run that must have failed cleanly (no exception escaped)."""
    assert result.exit_code == exit_code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines, result.output
    assert not any("<input>" in line for line in lines), lines
    return lines


# 1. --supercell must hold three positive integers (as a campaign's `supercell:` key must)


@pytest.mark.parametrize(
    "args",
    [
        ["order", "argyrodite", "--supercell", "0", "0", "0"],
        ["order", "argyrodite", "--supercell", "2", "1", "-1"],
        ["inputs", "argyrodite", "--supercell", "1", "-1", "1"],
    ],
    ids=["order-zero", "order-negative", "inputs-negative"],
)
def test_supercell_must_be_positive(tmp_path: Path, args: list[str]) -> None:
    (line,) = _errors(runner.invoke(app, [*args, "--out", str(tmp_path / "out")]))
    bad = tuple(int(x) for x in args[-3:])
    assert line.startswith("error: --supercell:"), line
    assert str(bad) in line and "greater than 0" in line, line
    assert not (tmp_path / "out").exists()


# 2. a store folder that cannot be written


def test_run_names_a_store_folder_that_cannot_be_created(tmp_path: Path) -> None:
    # As root chmod does not stop writes, so the store's parent is a regular file instead.
    (tmp_path / "blocker").write_text("not a folder")
    path = _write(tmp_path / "c.yaml", CAMPAIGN + "store: {path: blocker/store}\n")
    (line,) = _errors(runner.invoke(app, ["run", str(path)]))
    assert f"{path}: store.path:" in line, line
    assert str(tmp_path / "blocker" / "store") in line and "cannot write" in line, line
    assert not (tmp_path / "report").exists()


def test_run_names_a_store_folder_without_write_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores permission bits: a read-only campaign folder is simulated by mkdir refusing.
    store = tmp_path / ".superionic"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self == store:
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    path = _write(tmp_path / "c.yaml", CAMPAIGN)
    (line,) = _errors(runner.invoke(app, ["run", str(path)]))
    assert f"{path}: store:" in line and str(store) in line and "Permission denied" in line, line


def test_run_names_an_existing_read_only_store_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the store folder exists but cannot be written (root ignores mode bits: file creation refused)
    import tempfile

    store = tmp_path / ".superionic"
    store.mkdir()
    real = tempfile.TemporaryFile

    def refuse(*args: object, **kwargs: object) -> object:
        if Path(str(kwargs.get("dir", ""))) == store:
            raise PermissionError(13, "Permission denied", str(store))
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    path = _write(tmp_path / "c.yaml", CAMPAIGN)
    (line,) = _errors(runner.invoke(app, ["run", str(path)]))
    assert f"{path}: store:" in line and str(store) in line and "Permission denied" in line, line
    assert list(store.iterdir()) == []  # nothing written


# 3. a problem of the campaign-wide preset or engine is printed once, at its own line


def test_unknown_preset_is_reported_once_at_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", CAMPAIGN.replace("preset: default", "preset: dmeo"))
    (line,) = _errors(runner.invoke(app, ["validate", str(path)]))
    assert line.startswith(f"error: {path}:3: preset: unknown preset (got 'dmeo')"), line
    assert "demo" in line


def test_console_script_exits_2_on_a_bad_campaign(tmp_path: Path) -> None:
    """The installed ``superionic`` command as its own process (the tests above call the CLI in
    this process): the same one line on stderr, exit status 2, no traceback, nothing written."""
    path = _write(tmp_path / "c.yaml", CAMPAIGN.replace("preset: default", "preset: dmeo"))
    exe = Path(sys.executable).parent / "superionic"
    r = subprocess.run(
        [str(exe), "run", str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {path}:3: preset: unknown preset (got 'dmeo')"), line
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / ".superionic").exists()


def test_unknown_stage_presets_are_reported_at_each_stage_line(tmp_path: Path) -> None:
    text = CAMPAIGN.replace("  - stage: relax\n", "  - stage: relax\n    preset: dmeo\n")
    text = text.replace("production_steps: 100", "production_steps: 100\n    preset: dmeo")
    path = _write(tmp_path / "c.yaml", text)
    lines = _errors(runner.invoke(app, ["validate", str(path)]))
    assert [line.split(": ")[2] for line in lines] == ["stages[1].preset", "stages[2].preset"]
    assert [int(line.split(":")[2]) for line in lines] == [11, 15]


def test_missing_vasp_is_reported_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERIONIC_VASP_CMD", "no_such_vasp_executable_h4")
    path = _write(tmp_path / "c.yaml", CAMPAIGN.replace("engine: mlip", "engine: vasp"))
    (line,) = _errors(runner.invoke(app, ["run", str(path)]))
    assert line.startswith(f"error: {path}:2: engine:") and "no_such_vasp_executable_h4" in line, line


# 4. NMR isotopes: spellings, and unknown ones refused with the element's valid isotopes


@pytest.mark.parametrize("spelling", ["Li-6", "Li6", "6Li", "li6"])
def test_analyze_nmr_isotope_spellings(tmp_path: Path, spelling: str) -> None:
    base = require_fixtures("vasp/nmr_LiAlSiO4/efg/outputs")
    out = tmp_path / "efg.csv"
    r = runner.invoke(app, ["analyze", "nmr", str(base), "--isotope", spelling, "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = [row for row in csv.DictReader(open(out)) if row["species"] == "Li"]
    assert rows and {row["isotope"] for row in rows} == {"Li-6"}
    # VASP printed C_Q with its own Q(6Li) = -0.808 mb (QUAD_EFG), to 3 decimals
    for row in rows:
        assert float(row["vasp_q_mb"]) == -0.808
        assert float(row["cq_mhz"]) == pytest.approx(float(row["vasp_cq_mhz"]), abs=6e-4)


@pytest.mark.parametrize(
    ("isotope", "fragments"),
    [
        ("Li-99", ["unknown isotope of Li", "'Li-99'", "Li-6, Li-7"]),
        ("Xq-3", ["not an element", "'Xq-3'"]),
        ("lithium", ["expected an isotope such as Li-6, Li6 or 6Li", "'lithium'"]),
    ],
)
def test_analyze_nmr_refuses_unknown_isotopes(tmp_path: Path, isotope: str, fragments: list[str]) -> None:
    base = require_fixtures("vasp/nmr_LiAlSiO4/efg/outputs")
    out = tmp_path / "efg.csv"
    args = ["analyze", "nmr", str(base), "--isotope", isotope, "--out", str(out)]
    (line,) = _errors(runner.invoke(app, args))
    assert line.startswith("error: --isotope:"), line
    for fragment in fragments:
        assert fragment in line, line
    assert not out.exists()


def test_analyze_nmr_refuses_two_isotopes_of_one_element(tmp_path: Path) -> None:
    base = require_fixtures("vasp/nmr_LiAlSiO4/efg/outputs")
    isotopes = ["--isotope", "Li-6", "--isotope", "7Li"]
    args = ["analyze", "nmr", str(base), *isotopes, "--out", str(tmp_path / "x")]
    (line,) = _errors(runner.invoke(app, args))
    assert "Li-6" in line and "Li-7" in line and "one isotope per element" in line, line


# 5. a file that is not an OUTCAR says what it looks like


def test_analyze_nmr_on_a_vasprun(tmp_path: Path) -> None:
    vasprun = require_fixtures("vasp/nmr_LiAlSiO4/efg/outputs/vasprun.xml.gz")
    (line,) = _errors(runner.invoke(app, ["analyze", "nmr", str(vasprun), "--out", str(tmp_path / "x")]))
    assert line.startswith(f"error: {vasprun}: PATH: not a VASP OUTCAR or CP2K NMR output"), line
    assert "looks like a vasprun.xml" in line and "in this OUTCAR" not in line, line


def test_analyze_nmr_on_an_xdatcar(tmp_path: Path) -> None:
    from ase.build import bulk
    from ase.io import write

    xdatcar = tmp_path / "XDATCAR"
    write(xdatcar, [bulk("Si"), bulk("Si")], format="vasp-xdatcar")
    (line,) = _errors(runner.invoke(app, ["analyze", "nmr", str(xdatcar), "--out", str(tmp_path / "x")]))
    assert "not a VASP OUTCAR or CP2K NMR output" in line and "looks like an XDATCAR" in line, line
    assert "POSCAR" not in line, line


def test_analyze_nmr_on_a_folder_without_outputs(tmp_path: Path) -> None:
    (line,) = _errors(runner.invoke(app, ["analyze", "nmr", str(tmp_path), "--out", str(tmp_path / "x")]))
    assert f"{tmp_path}: PATH:" in line and "no VASP OUTCAR or CP2K *-SHIFT-1.data" in line, line


# 6. examples that fit the option, the real option instead of <input>, plain numbers, lines


def test_oxidation_error_shows_an_oxidation_example(tmp_path: Path) -> None:
    args = ["order", "argyrodite", "--oxidation", "Li+1", "--out", str(tmp_path / "o")]
    (line,) = _errors(runner.invoke(app, args))
    assert line == "error: --oxidation: expected KEY=VALUE (got 'Li+1'); valid: e.g. --oxidation Li=1"


def test_problem_without_a_file_names_only_its_field() -> None:
    assert Problem("--n", "too small", 0, ">= 1").format(None) == "--n: too small (got 0); valid: >= 1"
    assert Problem("x", "bad", line=3).format("c.yaml") == "c.yaml:3: x: bad"


def test_arrhenius_on_one_temperature_prints_plain_numbers(tmp_path: Path) -> None:
    doc = {
        "temperature_K": 800.0,
        "diffusivity_cm2_s": 1e-5,
        "diffusivity_err_cm2_s": 1e-6,
        "conductivity_mS_cm": 100.0,
        "conductivity_err_mS_cm": 10.0,
    }
    files = [tmp_path / "a.json", tmp_path / "b.json"]
    for f in files:
        f.write_text(json.dumps(doc))
    (line,) = _errors(runner.invoke(app, ["analyze", "arrhenius", *map(str, files)]))
    assert "np.float64" not in line and "at least two distinct temperatures" in line, line
    assert "800 K" in line and "a.json" in line and "b.json" in line, line


def test_arrhenius_names_a_json_that_is_not_a_diffusion_result(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"temperature_K": 800.0, "diffusivity_cm2_s": 1e-5}))
    (line,) = _errors(runner.invoke(app, ["analyze", "arrhenius", str(good), str(good)]))
    assert f"{good}: missing" in line and "diffusivity_err_cm2_s" in line, line
    bad = tmp_path / "bad.json"
    bad.write_text("5")
    (line,) = _errors(runner.invoke(app, ["analyze", "arrhenius", str(bad), str(good)]))
    assert f"{bad}:" in line and "not a diffusion JSON" in line, line


def test_duplicate_system_names_carry_a_line(tmp_path: Path) -> None:
    text = CAMPAIGN.replace(
        "    params: {halide: Cl}\n",
        "    params: {halide: Cl}\n    name: A\n  - prototype: argyrodite\n    name: A\n",
    )
    path = _write(tmp_path / "c.yaml", text)
    with pytest.raises(SpecError) as info:
        load_campaign(path)
    (problem,) = info.value.problems
    assert (problem.where, problem.line, problem.value) == ("systems[1].name", 9, "A")
    assert "systems[0] (line 5)" in problem.message


# 7. an element without an oxidation state points to the system's own oxidation_states key

SE_SITES = "    sites: {S_4d: {S: 0.75, Se: 0.25}}\n"


def test_site_override_uses_the_systems_oxidation_states(tmp_path: Path) -> None:
    override = "    params: {halide: Cl}\n    oxidation_states: {Se: -2}\n" + SE_SITES
    path = _write(tmp_path / "c.yaml", CAMPAIGN.replace("    params: {halide: Cl}\n", override))
    campaign = load_campaign(path, check_engines=False)
    (system,) = campaign.systems
    assert system.structure.composition["Se"] == pytest.approx(1.0)  # 4 sites x 0.25
    assert system.oxidation_states["Se"] == -2


def test_site_override_without_an_oxidation_state_names_the_systems_key(tmp_path: Path) -> None:
    override = "    params: {halide: Cl}\n    oxidation_states: {Br: -1}\n" + SE_SITES
    path = _write(tmp_path / "c.yaml", CAMPAIGN.replace("    params: {halide: Cl}\n", override))
    (line,) = _errors(runner.invoke(app, ["validate", str(path)]))
    assert line.startswith(f"error: {path}:7: systems[0].oxidation_states: no oxidation state for Se"), line
    assert "prototype's" not in line and "systems[0].oxidation_states" in line.split("valid:")[1], line


def test_site_override_with_a_non_element_is_named(tmp_path: Path) -> None:
    override = "    params: {halide: Cl}\n    sites: {S_4d: {S: 0.75, Xx: 0.25}}\n"
    path = _write(tmp_path / "c.yaml", CAMPAIGN.replace("    params: {halide: Cl}\n", override))
    (line,) = _errors(runner.invoke(app, ["validate", str(path)]))
    assert line.startswith(f"error: {path}:7: systems[0].sites.S_4d.Xx: not a chemical element"), line


def test_analyze_nmr_with_another_structure_says_the_site_counts_differ(tmp_path: Path) -> None:
    from ase.build import bulk
    from ase.io import write

    base = require_fixtures("vasp/nmr_LiAlSiO4/efg/outputs")
    poscar = tmp_path / "POSCAR"
    write(poscar, bulk("Si"), format="vasp")
    args = ["analyze", "nmr", str(base), "--structure", str(poscar), "--out", str(tmp_path / "x")]
    (line,) = _errors(runner.invoke(app, args))
    assert "21 sites carry EFG tensors but the structure has 2" in line, line
