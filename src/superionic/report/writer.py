"""Write ``report/``: summary.md, CSV tables and PNG plots."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from superionic.dispatch.local import CampaignStore
from superionic.flows import PlannedJob


def _outputs(store: CampaignStore, planned: list[PlannedJob]) -> dict[str, dict[str, Any]]:
    """Output documents by job uuid; a job replaced at run time is represented by its last index."""
    uuids = [p.uuid for p in planned]
    docs = store.job_store.query(
        {"uuid": {"$in": uuids}}, properties=["uuid", "index", "output", "metadata"], load=False
    )
    latest: dict[str, dict[str, Any]] = {}
    for d in docs:
        if d["uuid"] not in latest or d.get("index", 1) > latest[d["uuid"]].get("index", 1):
            latest[d["uuid"]] = d
    for d in latest.values():
        out = d.get("output")
        if isinstance(out, dict) and out.get("@class") == "OutputReference":
            # a job replaced at run time stores a reference to its replacement's output
            d["output"] = store.job_store.get_output(d["uuid"], which="last")
    return latest


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as fh:
        fields = list(dict.fromkeys(k for row in rows for k in row))  # union, first-seen order
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_none yet_\n"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k, ""), k) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any, key: str = "") -> str:
    """Format a table value for summary.md by what the column holds (the CSVs keep full precision).

    Energies in eV (per atom or per cell) to 4 decimals, meV to 1 decimal, jump counts as
    integers (1 decimal below 10), anything else to 4 significant figures.
    """
    if isinstance(v, float) and not np.isfinite(v):
        return "n/a"  # undefined (the row's note says why); never a bare nan in the summary
    if not isinstance(v, float) or isinstance(v, bool):
        return str(v)
    k = key.lower()
    if "mev" in k:
        return f"{v:.1f}"
    if k.endswith("_ev") or "_ev_" in k:
        return f"{v:.4f}"
    if k.startswith("n_jumps"):
        return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"
    return f"{v:.4g}"


_DIFFUSION_NUMBERS = (
    "diffusivity_cm2_s",
    "diffusivity_err_cm2_s",
    "conductivity_mS_cm",
    "conductivity_err_mS_cm",
    "charge_diffusivity_cm2_s",
    "charge_diffusivity_err_cm2_s",
    "haven_ratio",
    "haven_ratio_err",
    "n_jumps",
)


def diffusion_rows(items: list[tuple[PlannedJob, dict]]) -> list[dict[str, Any]]:
    """Rows of diffusion.csv: one per system, ordering and temperature, sorted.

    A number the analysis could not define (``null`` in the result, NaN from older versions) is
    left blank, never ``nan``, with the reason in ``note``. ``converged`` reads ``yes`` or
    ``not converged (N jumps)``; ``sigma_method`` says which D the conductivity comes from.
    """
    from superionic.analysis.diffusion import SIGMA_METHOD, convergence

    rows = []
    for p, d in items:
        r = d["output"]
        notes = dict(r.get("notes") or {})
        row: dict[str, Any] = {
            "system": p.system,
            "ordering": d["metadata"].get("ordering", 0),
            "temperature_K": r["temperature_K"],
            "species": r["species"],
        }
        for key in _DIFFUSION_NUMBERS:
            value = r.get(key)
            if isinstance(value, int | float) and np.isfinite(value):
                row[key] = value
                continue
            row[key] = ""
            if key not in r:
                notes.setdefault(key, "not in this stored result (analysed by an older version)")
            elif key == "haven_ratio" and not (r.get("charge_diffusivity_cm2_s") or 0) > 0:
                notes.setdefault(key, f"undefined: D_sigma = {r.get('charge_diffusivity_cm2_s')} cm2/s <= 0")
            else:
                notes.setdefault(key, "undefined")
        rsd = r.get("rsd")
        if not (isinstance(rsd, int | float) and np.isfinite(rsd)):
            notes.setdefault("rsd", "undefined (no jumps)")
        if "converged" in r:
            ok, why = r["converged"], r.get("convergence_note", "")
        else:  # stored by an older version: the same rule from its numbers
            ok, why = convergence(r["n_jumps"], np.inf if rsd is None else rsd, r["diffusivity_cm2_s"])
        row["converged"] = "yes" if ok else why.split(":")[0]
        row.update(
            {
                "sigma_method": r.get("sigma_method", SIGMA_METHOD),
                "total_time_ps": r["total_time_ps"],
                "n_chunks": r.get("n_chunks", 1),
                "rsd": rsd if isinstance(rsd, int | float) and np.isfinite(rsd) else "",
                "fit_window_ps": f"{r['fit_window_ps'][0]:.2f}-{r['fit_window_ps'][1]:.2f}",
                "volume_A3": r.get("volume_A3", ""),
                "volume_note": r.get("volume_note", ""),
            }
        )
        if not ok:
            notes.setdefault("converged", why.split(": ", 1)[-1])
        by_reason: dict[str, list[str]] = defaultdict(list)  # one phrase per reason, naming its columns
        for key, reason in notes.items():
            by_reason[reason].append(key)
        row["note"] = "; ".join(f"{', '.join(keys)}: {reason}" for reason, keys in by_reason.items())
        rows.append(row)
    rows.sort(key=lambda r: (r["system"], r["ordering"], r["temperature_K"]))
    return rows


def write_report(
    campaign_name: str, planned: list[PlannedJob], store: CampaignStore, out_dir: Path
) -> list[Path]:
    """Write the campaign report.

    Files: ``summary.md``; ``orderings.csv``; ``relax.csv``; ``diffusion.csv`` (one row per
    system, ordering and temperature); ``arrhenius.csv``; ``msd.png``; ``arrhenius.png``.

    Returns
    -------
    list of Path
        The files written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    docs = _outputs(store, planned)
    by_stage: dict[str, list[tuple[PlannedJob, dict]]] = defaultdict(list)
    for p in planned:
        if p.uuid in docs:
            by_stage[p.stage].append((p, docs[p.uuid]))

    orderings = []
    for p, d in by_stage["order"]:
        for i, e in enumerate(d["output"]["ewald_energies_ev"]):
            orderings.append(
                {"system": p.system, "rank": i + 1, "ewald_energy_ev": e, "formula": d["output"]["formula"]}
            )
    relax = []
    for p, d in by_stage["relax"]:
        out = d["output"]
        o = out.get("output", {})
        relax.append(
            {
                "system": p.system,
                "ordering": d["metadata"].get("ordering", 0),
                "formula": out.get("formula_pretty"),
                "energy_per_atom_ev": o.get("energy_per_atom"),
                "volume_A3": out.get("volume"),
                "density_g_cm3": out.get("density"),
            }
        )
    diffusion = diffusion_rows(by_stage["diffusion"])
    arrhenius = []
    for p, d in by_stage["arrhenius"]:
        r = d["output"]
        row = {"system": p.system, "ordering": d["metadata"].get("ordering", 0)}
        if "diffusivity" in r:
            fd, fs = r["diffusivity"], r["conductivity_T"]
            row.update(
                {
                    "ea_D_ev": fd["activation_energy_eV"],
                    "ea_D_err_ev": fd["activation_energy_err_eV"],
                    "D_300K_cm2_s": fd["extrapolated_value"],
                    "D_300K_err_cm2_s": fd["extrapolated_err"],
                    "ea_sigmaT_ev": fs["activation_energy_eV"],
                    "ea_sigmaT_err_ev": fs["activation_energy_err_eV"],
                    "sigma_300K_mS_cm": fs["extrapolated_value"] / 300.0,
                    "sigma_300K_err_mS_cm": fs["extrapolated_err"] / 300.0,
                }
            )
        else:
            row["note"] = r.get("error", "")
        arrhenius.append(row)
    rotation = _rotation_rows(by_stage["rotation"])
    hull = hull_rows(by_stage["hull"])
    nmr = nmr_rows(by_stage["nmr"])
    structure = structure_rows(by_stage["structure"])
    study_d = study_d_rows(by_stage["structure"])
    phases = [
        {
            "phase": d["metadata"].get("phase", p.name),
            "formula": d["output"].get("formula_pretty"),
            "energy_per_atom_ev": d["output"].get("output", {}).get("energy_per_atom"),
        }
        for p, d in by_stage["phase"]
    ]
    # job metadata count orderings from 0 (job names say "#0"); the report ranks them from 1,
    # as `superionic order` and orderings.csv do
    for row in (*relax, *diffusion, *arrhenius, *rotation):
        if isinstance(row.get("ordering"), int):
            row["ordering"] += 1

    written = []
    for name, rows in (
        ("orderings.csv", orderings),
        ("relax.csv", relax),
        ("diffusion.csv", diffusion),
        ("arrhenius.csv", arrhenius),
        ("rotation.csv", rotation),
        ("hull.csv", hull),
        ("nmr_sites.csv", nmr),
        ("structure.csv", structure),
        ("study_d_comparison.csv", study_d),
        ("phases.csv", phases),
    ):
        if rows:
            _write_csv(out_dir / name, rows)
            written.append(out_dir / name)
    if by_stage["diffusion"]:
        written.append(_plot_msd(by_stage["diffusion"], out_dir / "msd.png"))
    if diffusion:
        written.append(_plot_arrhenius(diffusion, by_stage["arrhenius"], out_dir / "arrhenius.png"))
    if by_stage["rotation"]:
        written.append(_plot_rotation(by_stage["rotation"], out_dir / "rotation_acf.png"))
    if nmr:
        written += write_nmr_spectra(by_stage["nmr"], out_dir)
    if by_stage["structure"]:
        written += plot_structure(by_stage["structure"], out_dir)
    if hull:
        from superionic.analysis.hull import plot_hull

        written.append(plot_hull(hull, out_dir / "hull.png", f"{campaign_name}: energy above hull"))

    md = [f"# {campaign_name}: report\n"]
    for title, rows in (
        ("Orderings (Ewald energy per cell)", orderings),
        ("Relaxation", relax),
        ("Diffusion per temperature", diffusion),
        (
            "Arrhenius fits (error: weighted least squares of the per-point errors; "
            "per-point errors from He et al. 2018 RSD)",
            arrhenius,
        ),
        (
            "Polyanion rotation (C(t) = <u(t).u(0)>; tau from exp(-t/tau) where C > 1/e; "
            "extrapolated: C(t) stayed above 1/e over the run, tau is longer than the run)",
            _rotation_md(rotation),
        ),
        ("Energy above the convex hull (against the competing phases below)", hull),
        (
            "Local structure (CN and bond lengths within the cutoff; CSM: continuous symmetry measure, "
            "0 = ideal polyhedron; crystallinity: cosine similarity of the centre-centre RDF with "
            "the crystal's)",
            structure,
        ),
        ("Generated model vs EXAFS/RMC (study D)", study_d),
        (
            "NMR per site (sigma: shielding, ppm; delta = sigma_ref - sigma_iso; Haeberlen "
            "anisotropy/asymmetry; C_Q = eQVzz/h, |Vzz| >= |Vyy| >= |Vxx|)",
            nmr,
        ),
        ("Competing phases (relaxed with the same engine and preset)", phases),
    ):
        if rows:
            md.append(f"## {title}\n\n{_md_table(rows)}")
    for png in [w for w in written if w.suffix == ".png"]:
        md.append(f"![{png.stem}]({png.name})\n")
    (out_dir / "summary.md").write_text("\n".join(md))
    written.insert(0, out_dir / "summary.md")
    return written


NMR_COLUMNS = (
    "site",
    "species",
    "isotope",
    "environment",
    "sigma_iso_ppm",
    "delta_iso_ppm",
    "sigma_aniso_ppm",
    "sigma_eta",
    "cq_mhz",
    "eta_q",
)


def nmr_rows(items: list[tuple[PlannedJob, dict]]) -> list[dict[str, Any]]:
    """Rows of nmr_sites.csv: one per site of every structure."""
    rows = []
    for p, d in items:
        for site in d["output"]["sites"]:
            row = {"system": p.system, "structure": _rank_label(str(d["output"]["label"]), p.system)}
            row.update({k: site.get(k, "") for k in NMR_COLUMNS})
            rows.append(row)
    return rows


def write_nmr_spectra(items: list[tuple[PlannedJob, dict]], out_dir: Path) -> list[Path]:
    """Ensemble spectrum per element over all sites of all structures (CSV + PNG)."""
    import numpy as np

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
        _write_csv(
            csv_path,
            [{f"{kind}_ppm": float(x), "intensity": float(y)} for x, y in zip(grid, spec, strict=True)],
        )
        label = el if referenced[el] else f"{el} (shielding, unreferenced)"
        written += [csv_path, plot_spectrum(grid, spec, label, out_dir / f"nmr_spectrum_{el}.png")]
    return written


def structure_rows(items: list[tuple[PlannedJob, dict]]) -> list[dict[str, Any]]:
    """Rows of structure.csv: one per analysed structure (crystal and each quench)."""
    rows = []
    for p, d in items:
        o = d["output"]
        row: dict[str, Any] = {
            "system": p.system.split(" (")[0],
            "structure": o["label"],
            "melt_temperature_K": o.get("melt_temperature_K") or "",
            "replica": "" if o.get("replica") is None else o["replica"],
            "density_g_cm3": o["density_g_cm3"],
            "snapshot_temperature_K": o.get("snapshot_temperature_K") or "",
            "n_snapshots": o.get("n_snapshots", 1),
        }
        for lig, c in (o.get("coordination") or {}).items():
            row[f"cn_{lig}"] = c["cn_mean"]
            row[f"bond_{lig}_A"] = "" if c["bond_length_mean_A"] is None else c["bond_length_mean_A"]
        csm = o.get("csm") or {}
        if "csm_mean" in csm:
            row.update(csm_mean=csm["csm_mean"], csm_std=csm["csm_std"], csm_n=csm["n"])
        for kind, frac in (o.get("connectivity") or {}).get("fractions", {}).items():
            row[f"{kind}_sharing"] = frac
        if "crystallinity" in o:
            row["crystallinity"] = o["crystallinity"]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["system"], str(r["melt_temperature_K"]), str(r["replica"])))


def study_d_rows(items: list[tuple[PlannedJob, dict]]) -> list[dict[str, Any]]:
    """Return the generated Zr polyhedra beside study D's EXAFS/RMC values (Zr-centred analyses)."""
    from ruamel.yaml import YAML

    from superionic.paths import configs_dir

    exp = YAML(typ="safe").load((configs_dir() / "experiments" / "study_d.yaml").read_text())
    rows = []
    for _p, d in items:
        o = d["output"]
        coord = o.get("coordination") or {}
        if (
            not {"O", "Cl"} <= set(coord)
            or coord["O"].get("absent")
            or next(iter(coord.values()))["center"] != exp["center"]
        ):
            continue
        conn = o.get("connectivity") or {}
        for quantity, model, measured in (
            ("CN Zr-O", coord["O"]["cn_mean"], exp["coordination"]["O"]["cn"]),
            ("d Zr-O (A)", coord["O"]["bond_length_mean_A"], exp["coordination"]["O"]["distance_A"]),
            ("CN Zr-Cl", coord["Cl"]["cn_mean"], exp["coordination"]["Cl"]["cn"]),
            ("d Zr-Cl (A)", coord["Cl"]["bond_length_mean_A"], exp["coordination"]["Cl"]["distance_A"]),
            (
                "corner links via Cl",
                conn.get("corner_bridges", {}).get("Cl", 0.0),
                exp["corner_sharing_bridges"]["Cl"],
            ),
            (
                "corner links via O",
                conn.get("corner_bridges", {}).get("O", 0.0),
                exp["corner_sharing_bridges"]["O"],
            ),
            (
                "Cl terminal",
                conn.get("ligand_environment", {}).get("Cl", {}).get("terminal", 0.0),
                exp["chlorine_environment"]["terminal"],
            ),
        ):
            rows.append(
                {"structure": o["label"], "quantity": quantity, "model": model, "experiment": measured}
            )
    return rows


def plot_structure(items: list[tuple[PlannedJob, dict]], out_dir: Path) -> list[Path]:
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


def hull_rows(items: list[tuple[PlannedJob, dict]]) -> list[dict[str, Any]]:
    """Rows of hull.csv: one per relaxed ordering."""
    rows = []
    for p, d in items:
        for r in d["output"]["rows"]:
            rows.append(
                {
                    "system": p.system,
                    "structure": _rank_label(r["label"], p.system),
                    "formula": r["formula"],
                    "energy_per_atom_ev": r["energy_per_atom_ev"],
                    "e_hull_meV_per_atom": r["e_hull_meV_per_atom"],
                    "formation_energy_ev_per_atom": r["formation_energy_ev_per_atom"],
                    "decomposition": r["decomposition"],
                }
            )
    return sorted(rows, key=lambda r: (r["system"], r["structure"]))


def _rank_label(label: str, system: str) -> str:
    """Return ``"<system> #k ..."`` (k from 0, as the flow counts) as ``"<system> #k+1 ..."``."""
    head = f"{system} #"
    if not label.startswith(head):
        return label
    digits = label[len(head) :].split(" ", 1)
    if not digits[0].isdigit():
        return label
    return head + str(int(digits[0]) + 1) + (" " + digits[1] if len(digits) > 1 else "")


def rotation_extrapolated(r: dict[str, Any]) -> bool:
    """Whether a rotation result's tau lies beyond its run (C(t) never fell below 1/e).

    Uses the result's own ``extrapolated`` flag and, for results stored without it, the curve:
    C(t) above 1/e at every lag, or tau longer than the longest lag.
    """
    lags, acf = r.get("lag_times_ps") or [], r.get("acf") or []
    tau = r.get("rotation_time_ps")
    return bool(
        r.get("extrapolated")
        or (len(acf) > 0 and min(acf) > np.exp(-1))
        or (len(lags) > 0 and isinstance(tau, int | float) and np.isfinite(tau) and tau > lags[-1])
    )


def rotation_time_text(tau_ps: float, extrapolated: bool, run_ps: float | None) -> str:
    """Rotation time as printed: ``540 (extrapolated: > 20 ps run)`` when beyond the run."""
    if tau_ps == float("inf"):
        return "no decay within the run" + (f" ({run_ps:.3g} ps)" if run_ps else "")
    text = f"{tau_ps:.3g}"
    if extrapolated:
        text += " (extrapolated: > " + (f"{run_ps:.3g} ps run)" if run_ps else "the run)")
    return text


def _rotation_rows(items: list[tuple[PlannedJob, dict]]) -> list[dict[str, Any]]:
    rows = []
    for p, d in items:
        for unit, r in d["output"]["units"].items():
            lags = r.get("lag_times_ps") or []
            rows.append(
                {
                    "system": p.system,
                    "ordering": d["metadata"].get("ordering", 0),
                    "temperature_K": d["output"]["temperature_K"],
                    "unit": unit,
                    "n_units": r["n_units"],
                    "rotation_time_ps": r["rotation_time_ps"],
                    "rotation_time_err_ps": r["rotation_time_err_ps"],
                    "extrapolated": rotation_extrapolated(r),
                    "run_ps": float(lags[-1]) if lags else float("nan"),
                    "jump_rotation_ratio": r.get("jump_rotation", {}).get("ratio", float("nan")),
                }
            )
    return sorted(rows, key=lambda r: (r["system"], r["ordering"], r["unit"], r["temperature_K"]))


def _rotation_md(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rotation rows for summary.md: an extrapolated tau says so beside its value."""
    out = []
    for r in rows:
        run = r["run_ps"] if np.isfinite(r["run_ps"]) else None
        shown = {**r, "rotation_time_ps": rotation_time_text(r["rotation_time_ps"], r["extrapolated"], run)}
        out.append(shown)
    return out


def _plot_msd(items: list[tuple[PlannedJob, dict]], path: Path) -> Path:
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
        kb = 8.617333262e-5
        t_fit = np.asarray(fit.get("temperatures_K") or t, dtype=float)
        t_lo, t_hi = float(t_fit.min()), float(t_fit.max())

        def law(xs: np.ndarray) -> np.ndarray:
            return fit["prefactor"] * np.exp(-fit["activation_energy_eV"] / (kb * 1000 / xs))

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


def _plot_arrhenius(rows: list[dict[str, Any]], fits: list[tuple[PlannedJob, dict]], path: Path) -> Path:
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


def _plot_rotation(items: list[tuple[PlannedJob, dict]], path: Path) -> Path:
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
