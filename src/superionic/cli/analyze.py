"""The ``analyze`` command group: analyse existing outputs (trajectories, NMR runs) without a campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from superionic.cli.common import _user_errors, console
from superionic.errors import SuperionicError

analyze_app = typer.Typer(
    help=(
        "Analyse existing outputs without a campaign: diffusion, arrhenius, rotation (MD "
        "trajectories), nmr (VASP/CP2K output), structure (local structure), density (ion density)."
    ),
    no_args_is_help=True,
)


@analyze_app.command("diffusion")
@_user_errors
def analyze_diffusion_cmd(
    traj: Annotated[
        Path,
        typer.Argument(
            help="vasprun.xml, XDATCAR, .extxyz, ASE .traj, Trajectory .json, .npy; any name containing "
            "XDATCAR or vasprun, gzipped or not (see --format)"
        ),
    ],
    species: Annotated[str, typer.Option(help="Mobile element, e.g. Li or Na.")],
    timestep_fs: Annotated[float, typer.Option("--timestep-fs", help="MD time step in fs.")],
    temperature_K: Annotated[float, typer.Option("--temperature-K", help="Temperature of the run in K.")],
    step_skip: Annotated[int, typer.Option(help="MD steps between stored frames.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Write the full result as JSON here.")] = None,
    skip_ps: Annotated[
        float, typer.Option("--skip-ps", help="Equilibration to drop from the start (ps).")
    ] = 0.0,
    fit_start: Annotated[float, typer.Option(help="Fit window start, fraction of the run.")] = 0.1,
    fit_end: Annotated[float, typer.Option(help="Fit window end, fraction of the run.")] = 0.7,
    charge: Annotated[float, typer.Option(help="Charge of the mobile ion (e).")] = 1.0,
    jump_distance_A: Annotated[
        float | None, typer.Option("--jump-distance-A", help="Hop length for counting jumps.")
    ] = None,
    structure: Annotated[
        Path | None, typer.Option(help="Structure file giving lattice/species for .npy.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Force the trajectory format: vasprun, xdatcar, extxyz, traj, json or npy "
            "(default: from the file name - XDATCAR or vasprun anywhere in it, or the extension - "
            "else from the file's first bytes).",
        ),
    ] = None,
) -> None:
    r"""Tracer and charge diffusivity, Nernst-Einstein conductivity and Haven ratio of one run.

    Errors: D and sigma from He et al. (npj Comput. Mater. 2018), RSD = 3.43/sqrt(N_jumps) + 0.04;
    D_sigma (collective) and the Haven ratio from time blocks.
    Fewer than 10 jumps, or an error above the value, is reported as "not converged (N jumps)".
    Example::

        superionic analyze diffusion vasprun.xml --species Li --timestep-fs 2 --step-skip 1 \
            --temperature-K 800 --out li_800K.json
    """
    from superionic.analysis.diffusion import DiffusionInputError, diffusion_from_frac_coords
    from superionic.analysis.trajectory_io import FORMATS, read_trajectory

    if timestep_fs <= 0:
        raise DiffusionInputError(f"--timestep-fs must be positive, got {timestep_fs}")
    if step_skip < 1:
        raise DiffusionInputError(f"--step-skip must be >= 1, got {step_skip}")
    if skip_ps < 0:
        raise DiffusionInputError(f"--skip-ps must be >= 0, got {skip_ps:g}")
    if fmt is not None and fmt.lower() not in FORMATS:
        raise SuperionicError.single(
            "--format", "unknown trajectory format", fmt, ", ".join(FORMATS), file=str(traj)
        )
    data = read_trajectory(traj, structure, fmt.lower() if fmt else None)
    for warning in data.warnings:
        typer.echo(f"warning: {warning}", err=True)
    frame_fs = timestep_fs * step_skip
    skip = round(skip_ps * 1000 / frame_fs)
    if data.n_frames - skip < 4:
        run_ps = (data.n_frames - 1) * frame_fs / 1000
        raise DiffusionInputError(
            f"--skip-ps {skip_ps:g} leaves {max(data.n_frames - skip, 0)} of {data.n_frames} frames: the run "
            f"is {run_ps:.4g} ps ({data.n_frames} frames, {frame_fs:g} fs apart) and a diffusivity needs "
            f"at least 4 frames; give --skip-ps below {max(data.n_frames - 4, 0) * frame_fs / 1000:.4g}"
        )
    frac = data.frac_coords[skip:]
    lat = data.lattices if data.lattices.ndim == 2 else data.lattices[skip:]
    result = diffusion_from_frac_coords(
        frac,
        lat,
        data.species,
        species,
        frame_fs,
        temperature_K,
        charge=charge,
        jump_distance_A=jump_distance_A,
        fit_start=fit_start,
        fit_end=fit_end,
    )
    doc = {
        "file": str(traj),
        "dropped_frames": data.dropped_frames,
        "skipped_frames": skip,
        **result.as_dict(),
    }
    if "drift" in result.notes:
        typer.echo(f"warning: {traj}: {result.notes['drift']}", err=True)
    if out is not None:
        from superionic.report.analyze_files import write_json

        write_json(out, doc, allow_nan=False)
    console.print(
        _diffusion_summary(doc) + (f" -> {out}" if out else ""), soft_wrap=True, markup=False, highlight=False
    )


def _diffusion_summary(doc: dict[str, Any]) -> str:
    """One line for `analyze diffusion`: values +- errors (n/a with the reason) and convergence."""

    def num(key: str, err_key: str, fmt: str, unit: str = "") -> str:
        value, err = doc.get(key), doc.get(err_key)
        if value is None:
            return f"n/a ({doc['notes'].get(key, 'undefined')})"
        return format(value, fmt) + (f" +- {err:.2g}" if err is not None else " +- n/a") + unit

    status = "converged" if doc["converged"] else doc["convergence_note"].split(":")[0]
    return (
        f"{doc['species']} at {doc['temperature_K']:g} K ({doc['total_time_ps']:.2f} ps, "
        f"{doc['n_mobile']} ions, {doc['n_jumps']:.0f} jumps): "
        f"D = {num('diffusivity_cm2_s', 'diffusivity_err_cm2_s', '.3e', ' cm2/s')}; "
        f"sigma = {num('conductivity_mS_cm', 'conductivity_err_mS_cm', '.3g', ' mS/cm')} "
        f"({doc['sigma_method']}) at V = {doc['volume_A3']:.1f} A3 ({doc['volume_note']}); "
        f"D_sigma = {num('charge_diffusivity_cm2_s', 'charge_diffusivity_err_cm2_s', '.3e', ' cm2/s')}; "
        f"Haven ratio {num('haven_ratio', 'haven_ratio_err', '.2f')}; {status}"
    )


@analyze_app.command("arrhenius")
@_user_errors
def analyze_arrhenius_cmd(
    files: Annotated[list[Path], typer.Argument(help="JSON files from `superionic analyze diffusion`.")],
    out: Annotated[Path | None, typer.Option(help="Write the fits as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write an Arrhenius plot (PNG) here.")] = None,
    extrapolate_K: Annotated[float, typer.Option("--extrapolate-K", help="Report values at this T.")] = 300.0,
) -> None:
    """Fit D(T) and sigma*T(T) to Arrhenius laws: Ea +- error and the value at 300 K +- error."""
    from superionic.analysis.diffusion import DiffusionInputError, arrhenius_fits
    from superionic.report.analyze_files import read_diffusion_results, write_json

    results = read_diffusion_results(files)
    t = [float(r["temperature_K"]) for r in results]
    if len(set(t)) < 2:
        runs = ", ".join(f"{f} at {temp:g} K" for f, temp in zip(files, t, strict=True))
        raise DiffusionInputError(f"an Arrhenius fit needs at least two distinct temperatures; got {runs}")
    fit_d, fit_s = arrhenius_fits(results, extrapolate_K)
    doc = {
        "diffusivity": fit_d.as_dict(),
        "conductivity_T": fit_s.as_dict(),
        f"conductivity_{extrapolate_K:g}K_mS_cm": fit_s.extrapolated_value / extrapolate_K,
        f"conductivity_{extrapolate_K:g}K_err_mS_cm": fit_s.extrapolated_err / extrapolate_K,
    }
    if out is not None:
        write_json(out, doc)
    if plot is not None:
        from superionic.report.writer import plot_arrhenius_points

        plot_arrhenius_points(
            t,
            [r["diffusivity_cm2_s"] for r in results],
            [r["diffusivity_err_cm2_s"] for r in results],
            fit_d.as_dict(),
            "analysis",
            plot,
        )
    console.print(
        f"Ea(D) = {fit_d.activation_energy_eV:.3f} +- {fit_d.activation_energy_err_eV:.3f} eV; "
        f"Ea(sigma T) = {fit_s.activation_energy_eV:.3f} +- {fit_s.activation_energy_err_eV:.3f} eV; "
        f"sigma({extrapolate_K:g} K) = {fit_s.extrapolated_value / extrapolate_K:.3g} "
        f"+- {fit_s.extrapolated_err / extrapolate_K:.2g} mS/cm"
    )


@analyze_app.command("rotation")
@_user_errors
def analyze_rotation_cmd(
    traj: Annotated[Path, typer.Argument(help="Trajectory (same formats as `analyze diffusion`).")],
    unit: Annotated[str, typer.Option(help="Polyanion: BH4, NH2, PS4, TaCl6, ZrCl6, AlH4.")],
    timestep_fs: Annotated[float, typer.Option("--timestep-fs", help="MD time step in fs.")],
    step_skip: Annotated[int, typer.Option(help="MD steps between stored frames.")] = 1,
    cation: Annotated[
        str | None, typer.Option(help="Also correlate this cation's jumps with rotations.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON here.")] = None,
    structure: Annotated[Path | None, typer.Option(help="Structure file for .npy trajectories.")] = None,
) -> None:
    """Orientation autocorrelation C(t) = <u(t).u(0)> of a polyanion and its rotation time."""
    from superionic.analysis.diffusion import DiffusionInputError
    from superionic.analysis.rotation import UNITS, jump_rotation_correlation, orientation_acf
    from superionic.analysis.trajectory_io import read_trajectory
    from superionic.report.analyze_files import write_json

    if unit not in UNITS:
        raise DiffusionInputError(f"--unit {unit!r} is not known; known units: {', '.join(UNITS)}")
    centre, ligand, n_lig = UNITS[unit]
    data = read_trajectory(traj, structure)
    res = orientation_acf(
        data.frac_coords, data.lattices, data.species, centre, ligand, n_lig, timestep_fs * step_skip
    )
    doc: dict[str, Any] = {"file": str(traj), "unit": unit, **res.as_dict()}
    if cation:
        doc["jump_rotation"] = jump_rotation_correlation(
            data.frac_coords, data.lattices, data.species, cation, centre, ligand, n_lig
        )
    if out is not None:
        write_json(out, doc)
    from superionic.report.writer import rotation_time_text

    run_ps = res.lag_times_ps[-1] if res.lag_times_ps else None
    tau = rotation_time_text(res.rotation_time_ps, res.extrapolated, run_ps)
    if res.extrapolated and res.rotation_time_ps != float("inf"):
        # "540 (extrapolated: ...)" -> "540 +- 30 ps (extrapolated: ...)"
        value, note = tau.split(" ", 1)
        tau = f"{value} +- {res.rotation_time_err_ps:.2g} ps {note}"
    elif res.rotation_time_ps != float("inf"):
        tau += f" +- {res.rotation_time_err_ps:.2g} ps"
    console.print(f"{unit}: {res.n_units} units; rotation time {tau}" + (f" -> {out}" if out else ""))


@analyze_app.command("nmr")
@_user_errors
def analyze_nmr_cmd(
    path: Annotated[
        Path, typer.Argument(help="VASP OUTCAR (or .gz, or its folder) of an LCHIMAG or LEFG run.")
    ],
    isotope: Annotated[
        list[str] | None, typer.Option("--isotope", help="Isotope for an element, e.g. Li-6 (repeatable).")
    ] = None,
    structure: Annotated[
        Path | None, typer.Option(help="Structure of the run (default: POSCAR/CONTCAR beside the OUTCAR).")
    ] = None,
    out: Annotated[Path, typer.Option(help="CSV, one row per site.")] = Path("nmr.csv"),
) -> None:
    """Shielding (sigma_iso) and/or EFG (C_Q, eta_Q) per site from a VASP NMR OUTCAR.

    CS rows: site, species, isotope, sigma_iso_ppm, sigma_aniso_ppm, sigma_eta. EFG rows add
    cq_mhz (signed, e Q Vzz / h, Q from configs/nmr/quadrupole_moments.yaml) and eta_q, next to
    the values VASP printed itself (vasp_cq_mhz, vasp_eta). Example::

        superionic analyze nmr efg/OUTCAR --isotope Li-6 --out efg.csv
    """
    from pymatgen.core import Structure

    from superionic.analysis.nmr import OUTCAR_KIND, describe_output, parse_isotopes

    isotopes = parse_isotopes(isotope or [], "--isotope")  # Li-6, Li6 or 6Li -> Li-6; unknown ones refused
    valid_path = (
        "a VASP OUTCAR (or .gz, or its folder) of an LCHIMAG/LEFG run, "
        "or a CP2K *-SHIFT-1.data (or its folder)"
    )
    shift_files = (
        sorted(path.glob("*-SHIFT-1.data"))
        if path.is_dir()
        else ([path] if path.name.endswith("-SHIFT-1.data") else [])
    )
    if shift_files:  # a CP2K NMR run: the SHIFT file carries the species itself
        from superionic.report.analyze_files import write_cp2k_shift_csv

        n_sites = write_cp2k_shift_csv(shift_files[0], isotopes, out)
        console.print(f"{n_sites} sites (cp2k shielding, {shift_files[0].name}) -> {out}")
        return
    outcar = path
    if path.is_dir():
        outcar = next((path / n for n in ("OUTCAR", "OUTCAR.gz") if (path / n).is_file()), path / "OUTCAR")
        if not outcar.is_file():
            raise SuperionicError.single(
                "PATH", "no VASP OUTCAR or CP2K *-SHIFT-1.data in this folder", None, valid_path, str(path)
            )
    if not outcar.is_file():
        raise SuperionicError.single("PATH", "file not found", None, valid_path, str(path))
    kind = describe_output(outcar)
    if kind != OUTCAR_KIND:  # before looking for its POSCAR: an XDATCAR would ask for one
        raise SuperionicError.single(
            "PATH",
            f"not a VASP OUTCAR or CP2K NMR output: it looks like {kind}",
            None,
            valid_path,
            str(outcar),
        )
    folder = outcar.parent
    if structure is None:
        structure = next(
            (folder / n for n in ("POSCAR", "POSCAR.gz", "CONTCAR", "CONTCAR.gz") if (folder / n).is_file()),
            None,
        )
    if structure is None:
        raise SuperionicError.single(
            "--structure", "no POSCAR/CONTCAR beside the OUTCAR", str(folder), "--structure FILE"
        )
    try:
        species = [site.specie.symbol for site in Structure.from_file(str(structure))]
    except Exception as exc:  # pymatgen raises many types for unreadable files
        raise SuperionicError.single(
            "--structure", f"cannot read the structure ({exc})", str(structure), "a POSCAR, CONTCAR or CIF"
        ) from None
    from superionic.report.analyze_files import vasp_nmr_rows, write_site_csv

    rows, found = vasp_nmr_rows(outcar, species, isotopes)
    if not found:
        raise SuperionicError.single(
            "PATH",
            "neither chemical shielding nor EFG output in this OUTCAR",
            None,
            "an OUTCAR of a run with LCHIMAG = True or LEFG = True",
            str(outcar),
        )
    write_site_csv(out, rows)
    console.print(f"{len(rows)} sites ({' + '.join(found)}) -> {out}")


@analyze_app.command("structure")
@_user_errors
def analyze_structure_cmd(
    path: Annotated[
        Path, typer.Argument(help="CIF/POSCAR, or a trajectory (XDATCAR, vasprun.xml, extxyz, ASE .traj).")
    ],
    center: Annotated[str, typer.Option(help="Polyhedron centre, e.g. Ta or Zr.")],
    ligand: Annotated[list[str], typer.Option(help="Ligand element (repeatable), e.g. Cl, O.")],
    cutoff_A: Annotated[float, typer.Option("--cutoff-A", help="Centre-ligand bond cutoff (A).")] = 3.0,
    shape: Annotated[str | None, typer.Option(help="octahedron or tetrahedron (default: from CN).")] = None,
    every: Annotated[int, typer.Option(help="For a trajectory: analyse every N-th frame.")] = 1,
    out: Annotated[Path, typer.Option(help="Output folder for tables and plots.")] = Path("structure"),
) -> None:
    """RDF, coordination, bond angles, CSM and polyhedral connectivity of one structure or a trajectory.

    Writes OUT/summary.csv (CN and mean bond length per ligand, CSM mean/std, corner/edge/face
    fractions and bridging species), OUT/rdf.csv and OUT/rdf.png (centre-centre and centre-ligand,
    averaged over frames), OUT/angles.csv. Example::

        superionic analyze structure XDATCAR --center Ta --ligand Cl --every 1000 --out NaTaCl6/
    """
    from superionic.report.analyze_files import read_frames, write_local_structure

    if not path.exists():
        raise SuperionicError.single("PATH", "file not found", str(path), "a structure or trajectory file")
    frames = read_frames(path, every)
    rows = write_local_structure(out, frames, center, ligand, cutoff_A, shape)
    cns = ", ".join(f"{k}={rows[-1][k]:.2f}" for k in rows[-1] if k.startswith("cn_"))
    console.print(f"{len(frames)} frame(s): CN {cns} (last frame) -> {out}/")


@analyze_app.command("density")
@_user_errors
def analyze_density_cmd(
    traj: Annotated[Path, typer.Argument(help="Trajectory (same formats as `analyze diffusion`).")],
    species: Annotated[str, typer.Option(help="Element whose density to map, e.g. Li.")],
    out: Annotated[Path, typer.Option(help="CHGCAR-like output file (open with VESTA).")] = Path(
        "CHGCAR_density"
    ),
    spacing_A: Annotated[float, typer.Option("--spacing-A", help="Grid spacing in A.")] = 0.2,
    structure: Annotated[Path | None, typer.Option(help="Structure file for .npy trajectories.")] = None,
) -> None:
    """Probability density of an ion over the whole run, as a CHGCAR-like grid."""
    from pymatgen.core import Lattice, Structure

    from superionic.analysis.density import probability_density, write_density_chgcar
    from superionic.analysis.trajectory_io import read_trajectory

    data = read_trajectory(traj, structure)
    lat = data.lattices if data.lattices.ndim == 2 else data.lattices[0]
    dens = probability_density(data.frac_coords, data.species, species, lattice=lat, spacing_A=spacing_A)
    first = Structure(Lattice(lat), data.species, data.frac_coords[0] % 1.0)
    write_density_chgcar(dens, first, out)
    console.print(f"{species} density on a {'x'.join(map(str, dens.shape))} grid -> {out}")
