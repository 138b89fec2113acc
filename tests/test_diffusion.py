"""Transport analysis: FFT MSD vs brute force, random walks with known D, Arrhenius."""

from __future__ import annotations

import numpy as np
import pytest

from superionic.analysis.diffusion import (
    DiffusionInputError,
    arrhenius_fit,
    diffusion_from_frac_coords,
    msd_fft,
    nernst_einstein_mS_cm,
    unwrap_displacements,
)


def brute_msd(x: np.ndarray) -> np.ndarray:
    n = len(x)
    return np.array(
        [np.mean([np.sum((x[t + m] - x[t]) ** 2, axis=-1) for t in range(n - m)], axis=0) for m in range(n)]
    )


def test_msd_fft_equals_brute_force() -> None:
    x = np.cumsum(np.random.default_rng(0).normal(size=(60, 4, 3)), axis=0)
    np.testing.assert_allclose(msd_fft(x), brute_msd(x), atol=1e-9)


def test_unwrap_recovers_displacement_across_boundaries() -> None:
    lattice = np.diag([5.0, 6.0, 7.0])
    cart = np.cumsum(np.full((20, 1, 3), 0.9), axis=0)  # 18 A along each axis
    frac = (cart @ np.linalg.inv(lattice)) % 1.0
    disp = unwrap_displacements(frac, lattice)
    np.testing.assert_allclose(disp[-1, 0], cart[-1, 0] - cart[0, 0], atol=1e-9)


def random_walk(
    d_cm2_s: float, n_frames: int, n_atoms: int, dt_fs: float, seed: int, box: float = 15.0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    d_a2_fs = d_cm2_s / 0.1
    steps = rng.normal(0.0, np.sqrt(2 * d_a2_fs * dt_fs), (n_frames, n_atoms, 3))
    steps[0] = 0
    pos = rng.random((n_atoms, 3)) * box + np.cumsum(steps, axis=0)
    # a framework that drifts as a whole: must be removed
    framework = np.tile(rng.random((8, 3)) * box, (n_frames, 1, 1))
    drift = np.cumsum(rng.normal(0, 0.01, (n_frames, 1, 3)), axis=0)
    allpos = np.concatenate([pos + drift, framework + drift], axis=1)
    lattice = np.eye(3) * box
    return (allpos / box) % 1.0, lattice, ["Li"] * n_atoms + ["S"] * 8


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_walk_diffusivity_within_its_error_bar(seed: int) -> None:
    true_d = 2.0e-5
    frac, lattice, species = random_walk(true_d, 3000, 64, 2.0, seed)
    r = diffusion_from_frac_coords(frac, lattice, species, "Li", 2.0, 800.0)
    assert abs(r.diffusivity_cm2_s - true_d) <= r.diffusivity_err_cm2_s
    assert r.diffusivity_err_cm2_s / r.diffusivity_cm2_s == pytest.approx(r.rsd)
    # independent walkers: collective D equals tracer D on average, Haven ratio ~ 1
    assert 0.3 < r.haven_ratio < 3
    assert sum(r.diffusivity_components_cm2_s) / 3 == pytest.approx(r.diffusivity_cm2_s, rel=1e-9)
    # Nernst-Einstein by hand: n q^2 D / kT
    n = 64 / (15.0e-10) ** 3
    sigma = n * (1.602176634e-19) ** 2 * r.diffusivity_cm2_s * 1e-4 / (1.380649e-23 * 800) * 10
    assert r.conductivity_mS_cm == pytest.approx(sigma, rel=1e-9)


def test_nernst_einstein_reference_value() -> None:
    # D = 1e-6 cm^2/s, 1 ion per 100 A^3 (n = 1e28 m^-3), 300 K:
    # sigma = 1e28 * (1.602e-19)^2 * 1e-10 / (1.381e-23 * 300) = 6.197 S/m = 61.97 mS/cm
    assert nernst_einstein_mS_cm(1e-6, 1, 100.0, 300.0) == pytest.approx(61.97, rel=1e-3)


def test_arrhenius_recovers_activation_energy() -> None:
    ea, d0 = 0.25, 1e-3
    t = np.array([500.0, 600.0, 800.0, 1000.0])
    d = d0 * np.exp(-ea / (8.617333262e-5 * t))
    fit = arrhenius_fit(list(t), list(d), list(0.05 * d))
    assert fit.activation_energy_eV == pytest.approx(ea, rel=1e-9)
    assert fit.extrapolated_value == pytest.approx(d0 * np.exp(-ea / (8.617333262e-5 * 300)), rel=1e-9)
    assert fit.activation_energy_err_eV > 0


def test_two_point_arrhenius_error_propagation() -> None:
    fit = arrhenius_fit([600.0, 900.0], [1e-6, 1e-5], [1e-7, 1e-6])
    # analytic: Ea = kB ln(10) / (1/600 - 1/900); sigma_Ea = kB sqrt(0.1^2 + 0.1^2) / (1/600 - 1/900)
    dx = 1 / 600 - 1 / 900
    assert fit.activation_energy_eV == pytest.approx(8.617333262e-5 * np.log(10) / dx, rel=1e-9)
    assert fit.activation_energy_err_eV == pytest.approx(8.617333262e-5 * np.sqrt(0.02) / dx, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mobile_species": "Na"}, "species 'Na' is not in the trajectory"),
        ({"time_step_fs": 0.0}, "time step must be positive"),
        ({"frames": 1}, "at least 2 frames"),
    ],
)
def test_bad_inputs(kwargs: dict, message: str) -> None:
    frac, lattice, species = random_walk(1e-5, 50, 4, 2.0, 0)
    frames = kwargs.pop("frames", 50)
    args = {"mobile_species": "Li", "time_step_fs": 2.0, **kwargs}
    with pytest.raises(DiffusionInputError, match=message):
        diffusion_from_frac_coords(frac[:frames], lattice, species, temperature_K=600.0, **args)


def test_arrhenius_needs_two_temperatures() -> None:
    with pytest.raises(DiffusionInputError, match="at least two distinct temperatures"):
        arrhenius_fit([600.0], [1e-6])


def _na3ps4() -> tuple:
    from pymatgen.core import Structure

    from conftest import require_fixtures

    folder = require_fixtures("md/Na3PS4_800K")
    ref = Structure.from_file(folder / "cNa3PS4.cif")
    frac = np.load(folder / "cNa3PS4_trajectories.npy")
    return ref, frac


def test_same_fit_as_pymatgen_diffusion_on_real_aimd() -> None:
    """Real Na3PS4 AIMD (800 K): with pymatgen's window (1 ps .. end) and 1/t weights we agree to 1e-6."""
    from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer
    from pymatgen.core import Structure

    ref, frac = _na3ps4()
    frame_fs = 2.0 * 50  # time step 2 fs, every 50th step stored
    pmg = DiffusionAnalyzer.from_structures(
        [Structure(ref.lattice, ref.species, f) for f in frac], "Na", 800, 2, 50, smoothed="max"
    )
    n = len(frac)
    ours = diffusion_from_frac_coords(
        frac,
        ref.lattice.matrix,
        [s.specie.symbol for s in ref],
        "Na",
        frame_fs,
        800.0,
        fit_start=10.5 / (n - 1),
        fit_end=1.0,
        weighting="inverse_lag",
    )
    assert ours.diffusivity_cm2_s == pytest.approx(pmg.diffusivity, rel=1e-6)
    assert ours.conductivity_mS_cm == pytest.approx(pmg.conductivity, rel=1e-6)
    # only a handful of hops in 20 ps: the error bar says the number is not converged
    assert ours.n_jumps < 20 and ours.rsd > 0.8


def test_defaults_agree_with_pymatgen_on_a_diffusive_walk() -> None:
    """Our default window (10-70 %, uniform) and pymatgen's default ("max") agree within 10 %."""
    from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer
    from pymatgen.core import Lattice, Structure

    frac, lattice, species = random_walk(5e-5, 400, 48, 100.0, seed=4)
    ours = diffusion_from_frac_coords(frac, lattice, species, "Li", 100.0, 800.0)
    lat = Lattice(lattice)
    structures = [Structure(lat, species, f) for f in frac]
    pmg = DiffusionAnalyzer.from_structures(structures, "Li", 800, 2, 50, smoothed="max")
    assert ours.diffusivity_cm2_s == pytest.approx(pmg.diffusivity, rel=0.10)
    assert abs(ours.diffusivity_cm2_s - 5e-5) <= ours.diffusivity_err_cm2_s


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--species", "Na"], "species 'Na' is not in the trajectory"),
        (["--species", "Li", "--timestep-fs", "0"], "--timestep-fs must be positive"),
    ],
)
def test_analyze_cli_errors_name_the_trajectory(tmp_path, args: list[str], message: str) -> None:
    from ase import Atoms
    from ase.io import write
    from typer.testing import CliRunner

    from superionic.cli import app

    frac, lattice, species = random_walk(1e-5, 20, 4, 2.0, 0)
    path = tmp_path / "walk.extxyz"
    write(path, [Atoms(species, scaled_positions=f, cell=lattice, pbc=True) for f in frac])
    base = ["analyze", "diffusion", str(path), "--timestep-fs", "2", "--temperature-K", "600"]
    result = CliRunner().invoke(app, base + args)
    assert result.exit_code == 2
    assert f"error: {path}: {message}" in result.output
    ok = CliRunner().invoke(app, [*base, "--species", "Li", "--out", str(tmp_path / "d.json")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "d.json").is_file()


SI_RUN = "vasp/Si_mp_morph/MP_Morph_VASP_MD_Maker_production_run/outputs"


def _unwrapped(frac: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Cartesian displacements from frame 0 by minimum-image steps (written out independently)."""
    steps = np.diff(frac, axis=0)
    steps -= np.rint(steps)
    return np.concatenate([np.zeros((1, *frac.shape[1:])), np.cumsum(steps @ lattice, axis=0)])


def _lag_msd(x: np.ndarray) -> np.ndarray:
    """MSD over all time origins, one lag at a time: x (frames, ..., 3) -> (frames, ...)."""
    return np.array([np.mean(np.sum((x[m:] - x[: len(x) - m]) ** 2, axis=-1), axis=0) for m in range(len(x))])


def test_one_element_trajectory_gives_d_without_drift_removal(tmp_path) -> None:
    """Si MD (every atom Si): no framework, so no drift removal, said so; no NaN anywhere."""
    import json
    import re
    import warnings

    from ase.io import read
    from typer.testing import CliRunner

    from conftest import require_fixtures
    from superionic.cli import app

    path = require_fixtures(SI_RUN) / "vasprun.xml.gz"
    out = tmp_path / "si.json"
    args = ["analyze", "diffusion", str(path), "--species", "Si", "--timestep-fs", "2"]
    result = CliRunner().invoke(app, [*args, "--temperature-K", "600", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not re.search(r"\bnan\b", result.output, re.IGNORECASE)
    assert f"warning: {path}: every atom is Si: no framework to reference, drift not removed" in result.output

    def no_bare_constants(c: str) -> None:
        pytest.fail(f"bare {c} in the JSON")

    doc = json.loads(out.read_text(), parse_constant=no_bare_constants)
    assert doc["drift_removed"] is False
    assert doc["haven_ratio"] is None and "centre of mass" in doc["notes"]["haven_ratio"]
    assert doc["charge_diffusivity_cm2_s"] is None  # the centre of mass, not a charge diffusivity
    # independent route: ASE's vasprun parser, minimum-image unwrapping, MSD lag by lag, polyfit
    frames = read(str(path), index=":", format="vasp-xml")
    frac = np.array([a.get_scaled_positions() for a in frames])
    msd = _lag_msd(_unwrapped(frac, np.asarray(frames[0].cell))).mean(axis=1)
    t_fs = np.arange(len(frac)) * 2.0
    lo, hi = doc["fit_window_ps"]
    sel = (t_fs >= lo * 1000 - 1e-6) & (t_fs <= hi * 1000 + 1e-6)
    assert doc["diffusivity_cm2_s"] == pytest.approx(
        np.polyfit(t_fs[sel], msd[sel], 1)[0] / 6 * 0.1, rel=1e-6
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the empty framework used to give "Mean of empty slice"
        r = diffusion_from_frac_coords(frac, np.asarray(frames[0].cell), ["Si"] * 16, "Si", 2.0, 600.0)
    assert np.isfinite(r.diffusivity_cm2_s)


def test_npt_conductivity_uses_the_mean_volume_of_the_analysed_frames() -> None:
    frac, lattice, species = random_walk(2e-5, 400, 32, 2.0, seed=5)
    scale = 1 + 0.04 * np.sin(np.linspace(0, 3 * np.pi, len(frac)))  # the cell breathes by +-4 %
    lattices = lattice[None] * scale[:, None, None]
    vols = np.array([abs(np.linalg.det(m)) for m in lattices])
    r = diffusion_from_frac_coords(frac, lattices, species, "Li", 2.0, 800.0)
    assert r.volume_A3 == pytest.approx(vols.mean(), rel=1e-12)
    assert abs(r.volume_A3 / vols[0] - 1) > 0.02  # not the first frame's volume
    assert r.volume_note.startswith("mean over analysed frames (400 frames")
    n = 32 / (vols.mean() * 1e-30)
    sigma = n * (1.602176634e-19) ** 2 * r.diffusivity_cm2_s * 1e-4 / (1.380649e-23 * 800) * 10
    assert r.conductivity_mS_cm == pytest.approx(sigma, rel=1e-9)
    later = diffusion_from_frac_coords(frac[150:], lattices[150:], species, "Li", 2.0, 800.0)
    assert later.volume_A3 == pytest.approx(vols[150:].mean(), rel=1e-12)
    assert r.as_dict()["volume_note"] == r.volume_note


def test_converged_walk_has_collective_block_errors() -> None:
    """Independent walkers: Haven ratio 1 within its error; D_sigma block errors recomputed by hand."""
    frac, lattice, species = random_walk(5e-5, 800, 64, 2.0, seed=7)
    r = diffusion_from_frac_coords(frac, lattice, species, "Li", 2.0, 800.0)
    assert r.converged and r.convergence_note == f"{r.n_jumps:.0f} jumps, RSD {r.rsd:.2f}"
    assert r.n_jumps > 100
    assert r.sigma_method == "Nernst-Einstein from tracer D"
    disp = _unwrapped(frac, lattice)
    disp = disp - disp[:, 64:].mean(axis=1, keepdims=True)  # framework drift
    charge = disp[:, :64].sum(axis=1)
    block, (j0, j1) = 200, (19, 139)  # 4 blocks; fit lags 10-70 % of a block
    lags = np.arange(j0, j1 + 1) * 2.0
    blocks = [
        np.polyfit(lags, _lag_msd(charge[b * block : (b + 1) * block])[j0 : j1 + 1] / 64, 1)[0] / 6 * 0.1
        for b in range(4)
    ]
    np.testing.assert_allclose(r.block_charge_diffusivities_cm2_s, blocks, rtol=1e-6)
    se = np.std(blocks, ddof=1) / 2
    assert r.charge_diffusivity_err_cm2_s == pytest.approx(se, rel=1e-6)
    h = r.diffusivity_cm2_s / r.charge_diffusivity_cm2_s
    assert r.haven_ratio == pytest.approx(h, rel=1e-12)
    assert r.haven_ratio_err == pytest.approx(h * np.hypot(r.rsd, se / r.charge_diffusivity_cm2_s), rel=1e-6)
    assert abs(r.haven_ratio - 1) < 2 * r.haven_ratio_err


def test_few_jumps_reported_not_converged(tmp_path) -> None:
    """Real Na3PS4 AIMD (20 ps, a handful of hops): flagged in the JSON and on the console."""
    import json

    from typer.testing import CliRunner

    from conftest import require_fixtures
    from superionic.cli import app

    folder = require_fixtures("md/Na3PS4_800K")
    out = tmp_path / "na.json"
    args = ["analyze", "diffusion", str(folder / "cNa3PS4_trajectories.npy"), "--structure"]
    args += [str(folder / "cNa3PS4.cif"), "--species", "Na", "--timestep-fs", "2", "--step-skip", "50"]
    result = CliRunner().invoke(app, [*args, "--temperature-K", "800", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    n = round(doc["n_jumps"])
    assert n < 10 and doc["converged"] is False
    assert doc["convergence_note"].startswith(f"not converged ({n} jumps): fewer than 10 jumps")
    assert f"not converged ({n} jumps)" in " ".join(result.output.split())
    assert "(Nernst-Einstein from tracer D)" in result.output
    assert doc["charge_diffusivity_err_cm2_s"] > 0
    # D_sigma < 0 over the window here: no Haven ratio, and the console says why instead of "nan"
    assert doc["charge_diffusivity_cm2_s"] < 0 and doc["haven_ratio"] is None
    assert "Haven ratio n/a (undefined: D* = " in " ".join(result.output.split())


def test_diffusion_csv_leaves_undefined_cells_blank_with_the_reason(tmp_path) -> None:
    import csv
    import re
    from types import SimpleNamespace

    from superionic.report.writer import _write_csv, diffusion_rows

    frac, lattice, species = random_walk(2e-5, 200, 8, 2.0, seed=6)
    li_only = diffusion_from_frac_coords(frac[:, :8], lattice, species[:8], "Li", 2.0, 1000.0).as_dict()
    legacy = {k: v for k, v in li_only.items() if k not in ("notes", "converged", "convergence_note")}
    legacy["haven_ratio"] = float("nan")  # as results stored before null + reason
    items = [
        (SimpleNamespace(system="Li6PS5Cl"), {"output": li_only, "metadata": {"ordering": 0}}),
        (SimpleNamespace(system="older"), {"output": legacy, "metadata": {"ordering": 0}}),
    ]
    _write_csv(tmp_path / "diffusion.csv", diffusion_rows(items))
    text = (tmp_path / "diffusion.csv").read_text()
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    rows = list(csv.DictReader(text.splitlines()))
    n = round(li_only["n_jumps"])
    for row in rows:
        assert row["haven_ratio"] == "" and "haven_ratio" in row["note"]
        assert row["converged"] == f"not converged ({n} jumps)"
        assert row["sigma_method"] == "Nernst-Einstein from tracer D"
        assert float(row["diffusivity_cm2_s"]) == pytest.approx(li_only["diffusivity_cm2_s"])
    assert "centre of mass" in rows[0]["note"]


def test_motionless_run_gives_null_with_reasons_not_nan() -> None:
    """Nothing moves: D = 0, no jumps, so the He et al. error and the Haven ratio are undefined."""
    import json

    frac = np.tile(np.random.default_rng(3).random((1, 6, 3)), (40, 1, 1))
    r = diffusion_from_frac_coords(frac, np.eye(3) * 9.0, ["Li"] * 4 + ["S"] * 2, "Li", 2.0, 600.0)
    assert r.diffusivity_cm2_s == 0.0 and r.n_jumps == 0.0
    d = json.loads(json.dumps(r.as_dict(), allow_nan=False))  # no NaN/Infinity left
    assert (
        d["rsd"] is None and d["notes"]["rsd"] == "no displacement at all: the He et al. error is undefined"
    )
    assert d["haven_ratio"] is None and d["notes"]["haven_ratio"].startswith("undefined: D* = 0")
    assert d["converged"] is False and d["convergence_note"].startswith("not converged (0 jumps)")
