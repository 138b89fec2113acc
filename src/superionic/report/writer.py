"""Write ``report/``: summary.md, CSV tables and PNG plots."""

from __future__ import annotations

import csv
from collections import defaultdict
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
        lines.append("| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


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
                {"system": p.system, "rank": i, "ewald_energy_ev": e, "formula": d["output"]["formula"]}
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
    diffusion = []
    for p, d in by_stage["diffusion"]:
        r = d["output"]
        diffusion.append(
            {
                "system": p.system,
                "ordering": d["metadata"].get("ordering", 0),
                "temperature_K": r["temperature_K"],
                "species": r["species"],
                "diffusivity_cm2_s": r["diffusivity_cm2_s"],
                "diffusivity_err_cm2_s": r["diffusivity_err_cm2_s"],
                "conductivity_mS_cm": r["conductivity_mS_cm"],
                "conductivity_err_mS_cm": r["conductivity_err_mS_cm"],
                "haven_ratio": r["haven_ratio"],
                "n_jumps": r["n_jumps"],
                "total_time_ps": r["total_time_ps"],
                "n_chunks": r.get("n_chunks", 1),
                "rsd": r["rsd"],
                "fit_window_ps": f"{r['fit_window_ps'][0]:.2f}-{r['fit_window_ps'][1]:.2f}",
            }
        )
    diffusion.sort(key=lambda r: (r["system"], r["ordering"], r["temperature_K"]))
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
        ("Polyanion rotation (C(t) = <u(t).u(0)>; tau from exp(-t/tau) where C > 1/e)", rotation),
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
            row = {"system": p.system, "structure": d["output"]["label"]}
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
                    "structure": r["label"],
                    "formula": r["formula"],
                    "energy_per_atom_ev": r["energy_per_atom_ev"],
                    "e_hull_meV_per_atom": r["e_hull_meV_per_atom"],
                    "formation_energy_ev_per_atom": r["formation_energy_ev_per_atom"],
                    "decomposition": r["decomposition"],
                }
            )
    return sorted(rows, key=lambda r: (r["system"], r["structure"]))


def _rotation_rows(items: list[tuple[PlannedJob, dict]]) -> list[dict[str, Any]]:
    rows = []
    for p, d in items:
        for unit, r in d["output"]["units"].items():
            rows.append(
                {
                    "system": p.system,
                    "ordering": d["metadata"].get("ordering", 0),
                    "temperature_K": d["output"]["temperature_K"],
                    "unit": unit,
                    "n_units": r["n_units"],
                    "rotation_time_ps": r["rotation_time_ps"],
                    "rotation_time_err_ps": r["rotation_time_err_ps"],
                    "extrapolated": r.get("extrapolated", False),
                    "jump_rotation_ratio": r.get("jump_rotation", {}).get("ratio", float("nan")),
                }
            )
    return sorted(rows, key=lambda r: (r["system"], r["ordering"], r["unit"], r["temperature_K"]))


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
    """Plot D (log) against 1000/T with error bars and the fitted line; save when ``ax`` is None."""
    own = ax is None
    if own:
        _fig, ax = plt.subplots(figsize=(6, 4.2))
    t = np.asarray(temperatures_K, dtype=float)
    dvals = np.asarray(diffusivities, dtype=float)
    errs = np.asarray(errors, dtype=float)
    pos = dvals > 0
    if fit:
        label += f": Ea = {fit['activation_energy_eV']:.2f} ± {fit['activation_energy_err_eV']:.2f} eV"
    bars = ax.errorbar(
        1000 / t[pos],
        dvals[pos],
        yerr=np.minimum(errs[pos], 0.95 * dvals[pos]),
        fmt="o",
        capsize=3,
        label=label,
    )
    if fit:
        x = np.linspace(1000 / 300.0, 1000 / t.min() * 0.98, 50)
        ax.plot(
            x,
            fit["prefactor"] * np.exp(-fit["activation_energy_eV"] / (8.617333262e-5 * 1000 / x)),
            "--",
            color=bars[0].get_color(),
            lw=1,
        )
    if own:
        _finish_arrhenius(ax, path)
    return path


def _finish_arrhenius(ax: Any, path: Path) -> None:
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel("tracer D (cm$^2$/s)")
    ax.set_title("Arrhenius plot (error bars: He et al. 2018 RSD)")
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
    fit_by = {(p.system, d["metadata"].get("ordering", 0)): d["output"] for p, d in fits}
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
            ax.plot(
                r["lag_times_ps"], r["acf"], label=f"{p.system} {unit} {d['output']['temperature_K']:g} K"
            )
    ax.axhline(np.exp(-1), color="k", lw=0.5, ls=":")
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("C(t) = <u(t)·u(0)>")
    ax.set_title("Orientation autocorrelation of polyanions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
