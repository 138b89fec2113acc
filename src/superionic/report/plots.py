"""Report plots (PNG): MSD, Arrhenius, rotation autocorrelation, local structure, NMR spectra."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from superionic.analysis.diffusion import KB_EV
from superionic.report.queries import StageItems
from superionic.report.tables import rotation_extrapolated, write_csv


def plot_msd(items: StageItems, path: Path) -> Path:
    """Tracer MSD against lag time of every diffusion result, the fit windows shaded."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for p, d in sorted(items, key=lambda t: t[1]["output"]["temperature_K"]):
        r = d["output"]
        ax.plot(r["lag_times_ps"], r["msd_A2"], label=f"{p.system} {r['temperature_K']:g} K")
        t0, t1 = r["fit_window_ps"]
        ax.axvspan(t0, t1, alpha=0.05, color="k")
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel(f"{items[0][1]['output']['species']} MSD (Å$^2$)")
    ax.set_title("Tracer MSD (all time origins); shaded: fit window")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_arrhenius_points(
    temperatures_K: list[float],
    diffusivities: list[float],
    errors: list[float],
    fit: dict | None,
    label: str,
    path: Path,
    ax: Any = None,
) -> Path:
    """Plot D (log) against 1000/T with error bars and the fitted line; save when ``ax`` is None.

    The bars are the table's D +- err. On the log axis a lower end D - err <= 0 cannot be drawn:
    that bar runs down to a floor below every plotted value and ends in an open down-arrow
    (legend: "D - err <= 0"). The fit is drawn solid over the fitted temperatures and dashed
    where it is extrapolated (to ``fit["extrapolated_T_K"]``, 300 K by default).

    Parameters
    ----------
    temperatures_K, diffusivities, errors : list of float
        Points and their (symmetric, 1 sigma) errors, as in diffusion.csv.
    fit : dict or None
        :class:`superionic.analysis.diffusion.ArrheniusResult` as a dict.
    label : str
        Legend label of the points.
    path : Path
        PNG written when ``ax`` is None.
    ax : matplotlib Axes, optional
        Draw into this axes (the caller saves).

    Returns
    -------
    Path
        ``path``.
    """
    own = ax is None
    if own:
        _fig, ax = plt.subplots(figsize=(6, 4.2))

    def numbers(values: Sequence[Any]) -> np.ndarray:  # blank/None (undefined, see the note) -> nan
        return np.array([float(v) if isinstance(v, int | float) else np.nan for v in values], dtype=float)

    t = numbers(temperatures_K)
    dvals = numbers(diffusivities)
    errs = numbers(errors)
    pos = (dvals > 0) & np.isfinite(errs)
    if fit:
        label += f": Ea = {fit['activation_energy_eV']:.2f} ± {fit['activation_energy_err_eV']:.2f} eV"
    x, d, e = 1000 / t[pos], dvals[pos], errs[pos]
    open_below = d - e <= 0
    # floor for bars whose lower end is <= 0: a decade below every lower end that can be drawn
    floor = 0.1 * min(np.min(d), np.min((d - e)[~open_below], initial=np.inf)) if len(d) else 0.0
    lower = np.where(open_below, d - floor, e)
    bars = ax.errorbar(x, d, yerr=[lower, e], fmt="o", capsize=3, label=label)
    colour = bars[0].get_color()
    if open_below.any():
        note = "D - err <= 0: bar runs to the axis floor"
        ax.plot(
            x[open_below],
            np.full(open_below.sum(), floor),
            "v",
            mfc="none",
            color=colour,
            label=note if note not in ax.get_legend_handles_labels()[1] else "_nolegend_",
        )
    if (~pos).any():
        ax.plot([], [], " ", label=f"{int((~pos).sum())} point(s) with D <= 0 not shown")
    if fit:
        t_fit = np.asarray(fit.get("temperatures_K") or t, dtype=float)
        t_lo, t_hi = float(t_fit.min()), float(t_fit.max())

        def law(xs: np.ndarray) -> np.ndarray:
            return fit["prefactor"] * np.exp(-fit["activation_energy_eV"] / (KB_EV * 1000 / xs))

        xs = np.linspace(1000 / t_hi, 1000 / t_lo, 50)
        ax.plot(xs, law(xs), "-", color=colour, lw=1)
        t_ext = float(fit.get("extrapolated_T_K", 300.0))
        if not t_lo <= t_ext <= t_hi:
            end = 1000 / t_lo if t_ext < t_lo else 1000 / t_hi
            xe = np.linspace(end, 1000 / t_ext, 50)
            ax.plot(xe, law(xe), "--", color=colour, lw=1)
    if own:
        _finish_arrhenius(ax, path)
    return path


def _finish_arrhenius(ax: Any, path: Path) -> None:
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel("tracer D (cm$^2$/s)")
    ax.set_title(
        "Arrhenius (bars: D ± err as in the table, asymmetric on the log axis;\n"
        "He et al. 2018 RSD; fit solid over the data, extrapolation dashed)",
        fontsize=8,
    )
    ax.legend(fontsize=8)
    fig = ax.figure
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_arrhenius(rows: list[dict[str, Any]], fits: StageItems, path: Path) -> Path:
    """Arrhenius plot of diffusion.csv's rows (orderings ranked from 1) with their stored fits."""
    _fig, ax = plt.subplots(figsize=(6, 4.2))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["system"], r["ordering"])].append(r)
    # the rows rank orderings from 1, the job metadata from 0
    fit_by = {(p.system, d["metadata"].get("ordering", 0) + 1): d["output"] for p, d in fits}
    for key, rs in groups.items():
        plot_arrhenius_points(
            [r["temperature_K"] for r in rs],
            [r["diffusivity_cm2_s"] for r in rs],
            [r["diffusivity_err_cm2_s"] for r in rs],
            fit_by.get(key, {}).get("diffusivity"),
            f"{key[0]} #{key[1]}",
            path,
            ax=ax,
        )
    _finish_arrhenius(ax, path)
    return path


def plot_rotation(items: StageItems, path: Path) -> Path:
    """Orientation autocorrelation C(t) of every polyanion kind and temperature."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for p, d in sorted(items, key=lambda t: t[1]["output"]["temperature_K"]):
        for unit, r in d["output"]["units"].items():
            flag = " (tau extrapolated)" if rotation_extrapolated(r) else ""
            label = f"{p.system} {unit} {d['output']['temperature_K']:g} K{flag}"
            ax.plot(r["lag_times_ps"], r["acf"], label=label)
    ax.axhline(np.exp(-1), color="k", lw=0.5, ls=":")
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("C(t) = <u(t)·u(0)>")
    ax.set_title("Orientation autocorrelation of polyanions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_structure(items: StageItems, out_dir: Path) -> list[Path]:
    """Centre-centre RDF and X-ray G(r) of every analysed structure."""
    written = []
    with_rdf = [(p, d) for p, d in items if "rdf_center_center" in d["output"]]
    if with_rdf:
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, (p, d) in enumerate(sorted(with_rdf, key=lambda t: str(t[1]["output"]["label"]))):
            r = d["output"]["rdf_center_center"]
            ax.plot(
                r["r_A"],
                [g + 2.0 * k for g in r["g"]],
                label=f"{p.system.split(' (')[0]}: {d['output']['label']}",
            )
        ax.set_xlabel("r (A)")
        ax.set_ylabel("g(r) centre-centre (offset)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "rdf_center_center.png", dpi=130)
        plt.close(fig)
        written.append(out_dir / "rdf_center_center.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    for p, d in items:
        g = d["output"]["xray_G"]
        ax.plot(g["r_A"], g["G"], label=f"{p.system.split(' (')[0]}: {d['output']['label']}", lw=1)
    ax.set_xlabel("r (A)")
    ax.set_ylabel("G(r), X-ray weighted (1/A^2)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "xray_G.png", dpi=130)
    plt.close(fig)
    written.append(out_dir / "xray_G.png")
    return written


def write_nmr_spectra(items: StageItems, out_dir: Path) -> list[Path]:
    """Ensemble spectrum per element over all sites of all structures (CSV + PNG)."""
    from superionic.analysis.nmr import ensemble_spectrum, plot_spectrum

    by_element: dict[str, list[float]] = defaultdict(list)
    referenced: dict[str, bool] = {}
    fwhm = 1.0
    for _p, d in items:
        fwhm = float(d["output"].get("line_fwhm_ppm", fwhm))
        for site in d["output"]["sites"]:
            value = site.get("delta_iso_ppm", site.get("sigma_iso_ppm"))
            if value is None or value == "":
                continue
            el = site["species"]
            by_element[el].append(float(value))
            referenced[el] = "delta_iso_ppm" in site
    written = []
    for el, values in sorted(by_element.items()):
        lo, hi = min(values) - 10 * fwhm, max(values) + 10 * fwhm
        grid = np.linspace(lo, hi, 2000)
        spec = ensemble_spectrum(values, grid, fwhm)
        kind = "shift" if referenced[el] else "shielding"
        csv_path = out_dir / f"nmr_spectrum_{el}.csv"
        write_csv(
            csv_path,
            [{f"{kind}_ppm": float(x), "intensity": float(y)} for x, y in zip(grid, spec, strict=True)],
        )
        label = el if referenced[el] else f"{el} (shielding, unreferenced)"
        written += [csv_path, plot_spectrum(grid, spec, label, out_dir / f"nmr_spectrum_{el}.png")]
    return written
