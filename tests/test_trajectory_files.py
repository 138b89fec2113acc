"""Reading trajectory files as they come off clusters: renamed, compressed, cut off, malformed.

The XDATCARs are written by pymatgen's own writer from the real Na3PS4 AIMD fixture (the shared
fixtures hold no XDATCAR); the vasprun.xml is the real Si MPMorph production run, copied under
the names users give such files.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from superionic.analysis.diffusion import DiffusionInputError
from superionic.analysis.trajectory_io import FORMATS, detect_format, read_trajectory
from superionic.cli import app

SI_RUN = "vasp/Si_mp_morph/MP_Morph_VASP_MD_Maker_production_run/outputs/vasprun.xml.gz"


def _flat(text: str) -> str:
    """Collapse whitespace (rich and click wrap long lines)."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def na3ps4() -> tuple:
    """Real Na3PS4 AIMD at 800 K: reference structure and the first 20 frames (100 fs apart)."""
    from pymatgen.core import Structure

    from conftest import require_fixtures

    folder = require_fixtures("md/Na3PS4_800K")
    ref = Structure.from_file(folder / "cNa3PS4.cif")
    return ref, np.load(folder / "cNa3PS4_trajectories.npy")[:20]


def write_xdatcar(path: Path, ref: object, frac: np.ndarray) -> Path:
    """Write frames as an XDATCAR with pymatgen's writer (gzipped when the name ends in .gz)."""
    from pymatgen.core.trajectory import Trajectory

    traj = Trajectory(
        species=ref.species,  # type: ignore[attr-defined]
        coords=frac,
        lattice=ref.lattice.matrix,  # type: ignore[attr-defined]
        constant_lattice=True,
    )
    traj.write_Xdatcar(str(path), system="Na3PS4")
    return path


@pytest.fixture(scope="module")
def xdatcar_text(na3ps4: tuple, tmp_path_factory: pytest.TempPathFactory) -> str:
    ref, frac = na3ps4
    return write_xdatcar(tmp_path_factory.mktemp("x") / "XDATCAR", ref, frac).read_text()


@pytest.fixture(scope="module")
def si_reference() -> tuple:
    """The Si vasprun read by ASE (an independent parser): frac coords and cell."""
    from ase.io import read

    from conftest import require_fixtures

    path = require_fixtures(SI_RUN.rsplit("/", 1)[0]) / "vasprun.xml.gz"
    frames = read(str(path), index=":", format="vasp-xml")
    return path, np.array([a.get_scaled_positions() for a in frames]), np.asarray(frames[0].cell)


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("Li6PS5Cl_XDATCAR.gz", True),
        ("Na3PS4_XDATCAR", False),
        ("run1.xdatcar", False),
        ("md_output.dat", False),  # nothing in the name: recognised from the first bytes
        ("frames.out", True),  # gzipped, nothing in the name
    ],
)
def test_xdatcar_recognised_under_any_name(tmp_path, na3ps4, xdatcar_text, name: str, compress: bool) -> None:
    ref, frac = na3ps4
    path = tmp_path / name
    path.write_bytes(gzip.compress(xdatcar_text.encode()) if compress else xdatcar_text.encode())
    assert detect_format(path) == "xdatcar"
    data = read_trajectory(path)
    assert data.species == [s.specie.symbol for s in ref]
    np.testing.assert_allclose(data.lattices, ref.lattice.matrix, atol=1e-8)
    np.testing.assert_allclose(data.frac_coords, frac, atol=1e-6)  # the writer keeps 6 decimals
    assert data.dropped_frames == 0 and data.warnings == []


@pytest.mark.parametrize("name", ["600K_vasprun.xml.gz", "vasprun.xml.600K.gz", "run.out"])
def test_vasprun_recognised_under_any_name(tmp_path, si_reference, name: str) -> None:
    source, frac, cell = si_reference
    path = tmp_path / name
    shutil.copyfile(source, path)  # still gzipped: "run.out" is recognised from the bytes
    assert detect_format(path) == "vasprun"
    data = read_trajectory(path)
    assert data.n_frames == len(frac) == 100
    np.testing.assert_allclose(data.frac_coords % 1.0, frac, atol=1e-8)
    np.testing.assert_allclose(data.lattices, cell, atol=1e-8)


def test_cli_format_option(tmp_path, xdatcar_text) -> None:
    """A misleading name is read with --format; an unknown --format lists the valid ones."""
    runner = CliRunner()
    path = tmp_path / "frames.json"  # an XDATCAR under a .json name
    path.write_text(xdatcar_text)
    base = ["analyze", "diffusion", str(path), "--species", "Na", "--timestep-fs", "2"]
    base += ["--step-skip", "50", "--temperature-K", "800"]
    wrong = runner.invoke(app, base)
    assert wrong.exit_code == 2
    assert "give --format, one of: vasprun, xdatcar, extxyz, traj, json, npy" in _flat(wrong.output)
    ok = runner.invoke(app, [*base, "--format", "xdatcar"])
    assert ok.exit_code == 0, ok.output
    assert "Na at 800 K (1.90 ps, 48 ions" in _flat(ok.output)
    bad = runner.invoke(app, [*base, "--format", "poscar"])
    assert bad.exit_code == 2
    assert bad.output.strip() == (
        f"error: {path}: --format: unknown trajectory format (got 'poscar'); valid: {', '.join(FORMATS)}"
    )
    helptext = _flat(runner.invoke(app, ["analyze", "diffusion", "--help"]).output.replace("│", " "))
    assert "--format" in helptext and "vasprun, xdatcar, extxyz, traj, json or npy" in helptext


def test_unrecognisable_file_says_what_would_do(tmp_path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("nothing here\nat all\n")
    with pytest.raises(DiffusionInputError, match="cannot tell the trajectory format") as err:
        read_trajectory(path)
    assert "--format" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("cut", ["between_lines", "mid_line"])
def test_xdatcar_cut_off_mid_frame_keeps_complete_frames(tmp_path, na3ps4, xdatcar_text, cut: str) -> None:
    """A run killed at walltime: the last frame is partial; every complete frame is used."""
    _ref, frac = na3ps4
    lines = xdatcar_text.splitlines(keepends=True)
    n_atoms = frac.shape[1]
    start_last = 7 + 19 * (n_atoms + 1)  # line index of the 20th "Direct configuration="
    if cut == "between_lines":
        text = "".join(lines[: start_last + 1 + 40])
    else:  # inside the third number of the last atom line: three tokens, no newline
        text = "".join(lines).rstrip("\n")[:-3]
    path = tmp_path / "XDATCAR"
    path.write_text(text)
    data = read_trajectory(path)
    assert data.n_frames == 19 and data.dropped_frames == 1
    np.testing.assert_allclose(data.frac_coords, frac[:19], atol=1e-6)
    assert "dropped 1 incomplete frame" in data.warnings[0]

    out = tmp_path / "d.json"
    args = ["analyze", "diffusion", str(path), "--species", "Na", "--timestep-fs", "2", "--step-skip", "50"]
    result = CliRunner().invoke(app, [*args, "--temperature-K", "800", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"warning: {path}: the file ends inside a frame" in result.output
    doc = json.loads(out.read_text())
    assert doc["dropped_frames"] == 1
    assert doc["total_time_ps"] == pytest.approx(18 * 0.1)


def test_xdatcar_without_final_newline_keeps_its_last_frame(tmp_path, na3ps4, xdatcar_text) -> None:
    """A complete file that only lacks its final newline is not a cut frame."""
    _ref, frac = na3ps4
    path = tmp_path / "XDATCAR"
    path.write_text(xdatcar_text.rstrip("\n"))
    data = read_trajectory(path)
    assert data.n_frames == len(frac) and data.dropped_frames == 0 and not data.warnings
    np.testing.assert_allclose(data.frac_coords[-1], frac[-1], atol=1e-6)


def test_xdatcar_counts_disagreeing_with_species_is_refused(tmp_path, xdatcar_text) -> None:
    lines = xdatcar_text.splitlines(keepends=True)
    assert lines[5].split() == ["Na", "P", "S"] and lines[6].split() == ["48", "16", "64"]
    path = tmp_path / "Na3PS4_XDATCAR"
    path.write_text("".join([*lines[:6], "48 16\n", *lines[7:]]))
    args = ["analyze", "diffusion", str(path), "--species", "Na", "--timestep-fs", "2"]
    result = CliRunner().invoke(app, [*args, "--temperature-K", "800"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {path}: line 7: counts line '48 16' does not match the species line (line 6) "
        "'Na P S': need 3 positive atom counts, one per element"
    )
    # three counts that do not add up to the atoms of a frame
    path.write_text("".join([*lines[:6], "48 16 60\n", *lines[7:]]))
    with pytest.raises(
        DiffusionInputError, match=r"line 133: expected 'Direct configuration=' .*\(line 7: '48 16 60'\)"
    ):
        read_trajectory(path)


def test_skip_longer_than_the_run_says_so(tmp_path, xdatcar_text) -> None:
    path = tmp_path / "XDATCAR"
    path.write_text(xdatcar_text)
    args = ["analyze", "diffusion", str(path), "--species", "Na", "--timestep-fs", "2", "--step-skip", "50"]
    result = CliRunner().invoke(app, [*args, "--temperature-K", "800", "--skip-ps", "5"])
    assert result.exit_code == 2
    assert _flat(result.output) == (
        f"error: {path}: --skip-ps 5 leaves 0 of 20 frames: the run is 1.9 ps (20 frames, 100 fs apart) "
        "and a diffusivity needs at least 4 frames; give --skip-ps below 1.6"
    )


def test_vasprun_cut_off_keeps_complete_ionic_steps(tmp_path, si_reference) -> None:
    source, frac, _cell = si_reference
    text = gzip.decompress(source.read_bytes())
    path = tmp_path / "vasprun.xml"
    path.write_bytes(text[:300_000])  # inside the 50th <calculation>
    assert text[:300_000].count(b"<calculation>") == 50
    data = read_trajectory(path)
    assert data.n_frames == 49 and data.dropped_frames == 1
    np.testing.assert_allclose(data.frac_coords % 1.0, frac[:49], atol=1e-8)
    assert "the XML ends early" in data.warnings[0]


@pytest.mark.parametrize(
    ("name", "kind", "compress"),
    [
        ("walk.extxyz.gz", "extxyz", True),
        ("frames_600K", "extxyz", False),  # from the first bytes
        ("run.traj.600K", "traj", False),
        ("md_output", "traj", False),  # ASE's binary magic
        ("traj_600K.json.gz", "json", True),
        ("blob", "json", True),  # gzipped JSON, nothing in the name
    ],
)
def test_ase_and_json_trajectories_under_any_name(tmp_path, name: str, kind: str, compress: bool) -> None:
    from ase import Atoms
    from ase.io import write
    from monty.serialization import dumpfn
    from pymatgen.core.trajectory import Trajectory

    frac = np.random.default_rng(1).random((6, 5, 3))
    cell = np.diag([8.0, 9.0, 10.0])
    species = ["Li", "Li", "Li", "S", "S"]
    plain = tmp_path / f"source.{kind}"
    if kind == "json":
        dumpfn(Trajectory(species=species, coords=frac, lattice=cell), plain)
    else:
        write(plain, [Atoms(species, scaled_positions=f, cell=cell, pbc=True) for f in frac], format=kind)
    path = tmp_path / name
    path.write_bytes(gzip.compress(plain.read_bytes()) if compress else plain.read_bytes())
    assert detect_format(path) == kind
    data = read_trajectory(path)
    assert data.species == species
    np.testing.assert_allclose(data.frac_coords, frac, atol=1e-8)
    np.testing.assert_allclose(data.lattices, cell, atol=1e-10)


def test_npt_xdatcar_per_frame_cells_and_mean_volume(tmp_path, na3ps4) -> None:
    """A variable-cell XDATCAR (a header per frame): cells read per frame, as pymatgen reads them;
    the conductivity's volume is the mean over the frames analysed after --skip-ps."""
    from pymatgen.core.trajectory import Trajectory
    from pymatgen.io.vasp import Xdatcar

    ref, frac = na3ps4
    scale = 1 + 0.03 * np.sin(np.arange(len(frac)))
    lattices = ref.lattice.matrix[None] * scale[:, None, None]
    path = tmp_path / "XDATCAR_npt"
    Trajectory(species=ref.species, coords=frac, lattice=lattices, constant_lattice=False).write_Xdatcar(
        str(path)
    )
    data = read_trajectory(path)
    expected = np.array([s.lattice.matrix for s in Xdatcar(str(path)).structures])
    assert data.lattices.shape == (20, 3, 3)
    np.testing.assert_allclose(data.lattices, expected, atol=1e-8)
    out = tmp_path / "npt.json"
    args = ["analyze", "diffusion", str(path), "--species", "Na", "--timestep-fs", "2", "--step-skip", "50"]
    result = CliRunner().invoke(app, [*args, "--temperature-K", "800", "--skip-ps", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["skipped_frames"] == 5
    vols = np.abs(np.linalg.det(expected[5:]))
    assert doc["volume_A3"] == pytest.approx(vols.mean(), rel=1e-9)
    assert doc["volume_note"].startswith("mean over analysed frames (15 frames")
