"""Quench stage: replayed VASP melt-quench segments through the flow; MLIP melt-quench of NaTaCl6."""

from __future__ import annotations

import csv
import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Structure
from typer.testing import CliRunner

from conftest import require_fixtures
from superionic.cli import app

EXE = str(Path(sys.executable).parent / "superionic")


def test_replayed_vasp_quench_goes_through_the_flow(tmp_path: Path) -> None:
    """Si16 (atomate2 MPMorph fixture): heat, hold and cool replayed from the slow-quench runs at
    500, 450 and 400 K; the analysis sees the last run's final structure."""
    base = require_fixtures("vasp/Si_mp_morph")
    refs = tmp_path / "refs"
    refs.mkdir()
    for seg, folder in (("heat", "500K"), ("hold", "450K"), ("cool", "400K")):
        (refs / f"quench_{seg}").symlink_to(base / f"Vasp_Slow_Quench_MD_Maker_{folder}")
    start = base / "Vasp_Slow_Quench_MD_Maker_500K" / "inputs" / "POSCAR.gz"
    (tmp_path / "Si.vasp").write_text(gzip.open(start, "rt").read())
    (tmp_path / "c.yaml").write_text(
        "name: siq\nengine: vasp\nsystems:\n  - name: Si16\n    structure: Si.vasp\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [2000]\n    heat_ps: 0.2\n    hold_ps: 0.2\n"
        "    quench_ps: 0.2\n    center: Si\n    ligands: [Si]\n    cutoff_A: 2.7\n"
    )
    env = {**os.environ, "SUPERIONIC_VASP_REPLAY": str(refs)}
    r = subprocess.run(
        [EXE, "run", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
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


def test_replayed_vasp_mpmorph_density_step_sets_the_quench_volume(tmp_path: Path) -> None:
    """density: mpmorph on VASP: atomate2's EquilibriumVolumeMaker runs NVT at -20/0/+20 % linear
    strain (replayed from the Si MPMorph fixture's three EOS runs), fits P(V), and the quench
    starts at the fitted volume: the same volume atomate2 chose for its own production run."""
    from pymatgen.io.vasp import Poscar

    base = require_fixtures("vasp/Si_mp_morph")
    refs = tmp_path / "refs"
    refs.mkdir()
    eos = "MP_Morph_VASP_Equilibrium_Volume_Maker_Convergence_MPMorph_VASP_MD_Maker"
    for k in (1, 2, 3):
        (refs / f"quench_density_{k}").symlink_to(base / f"{eos}_{k}")
    for seg, folder in (("heat", "500K"), ("hold", "450K"), ("cool", "400K")):
        (refs / f"quench_{seg}").symlink_to(base / f"Vasp_Slow_Quench_MD_Maker_{folder}")
    start = Poscar.from_str(gzip.open(base / f"{eos}_2" / "inputs" / "POSCAR.gz", "rt").read()).structure
    start.to(filename=str(tmp_path / "Si.vasp"), fmt="poscar")
    (tmp_path / "c.yaml").write_text(
        "name: sim\nengine: vasp\nsystems:\n  - name: Si\n    structure: Si.vasp\nstages:\n"
        "  - stage: quench\n    melt_temperatures_K: [500]\n    heat_ps: 0.2\n    hold_ps: 0.2\n"
        "    quench_ps: 0.2\n    density: mpmorph\n    density_ps: 0.1\n"
    )
    env = {**os.environ, "SUPERIONIC_VASP_REPLAY": str(refs)}
    r = subprocess.run(
        [EXE, "run", "c.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    written = {}
    for folder in (tmp_path / ".superionic" / "jobs").iterdir():
        if (folder / "inputs.written" / "POSCAR").is_file():
            incar = (folder / "inputs.written" / "INCAR").read_text()
            written[folder] = (Poscar.from_file(folder / "inputs.written" / "POSCAR").structure, incar)
    assert len(written) == 6  # three EOS runs, heat, hold, cool
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
def test_mlip_melt_quench_of_natacl6_disorders_with_melt_temperature(tmp_path: Path) -> None:
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
    r = subprocess.run([EXE, "run", "c.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {
        row["structure"]: row for row in csv.DictReader(open(tmp_path / "report" / "q" / "structure.csv"))
    }
    crystal, q1200, q2000 = (rows[k] for k in ("crystal", "quench 1200 K #0", "quench 2000 K #0"))
    assert float(crystal["csm_mean"]) == pytest.approx(0.0, abs=1e-6)
    assert 0 < float(q1200["csm_mean"]) < float(q2000["csm_mean"])
    assert float(q2000["crystallinity"]) < float(q1200["crystallinity"]) < 1.0
    assert np.isfinite(float(q2000["cn_Cl"]))
