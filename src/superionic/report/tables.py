"""Report tables: the rows of every CSV, and the CSV and markdown writers.

Each ``*_rows`` function takes one stage's ``(planned job, output document)`` pairs
(:func:`superionic.report.queries.outputs_by_stage`) and returns the rows of its CSV; the
markdown summary shows the same rows through :func:`md_table`.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from superionic.report.queries import StageItems


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as CSV (columns: the union of the rows' keys, first-seen order); nothing if empty."""
    if not rows:
        return
    with open(path, "w", newline="") as fh:
        fields = list(dict.fromkeys(k for row in rows for k in row))  # union, first-seen order
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def md_table(rows: list[dict[str, Any]]) -> str:
    """Return ``rows`` as a markdown table, values formatted by :func:`fmt`."""
    if not rows:
        return "_none yet_\n"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k, ""), k) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def fmt(v: Any, key: str = "") -> str:
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


def ordering_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of orderings.csv: the Ewald energy of every kept ordering, ranked from 1."""
    rows = []
    for p, d in items:
        for i, e in enumerate(d["output"]["ewald_energies_ev"]):
            rows.append(
                {"system": p.system, "rank": i + 1, "ewald_energy_ev": e, "formula": d["output"]["formula"]}
            )
    return rows


def relax_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of relax.csv: one per relaxed ordering (``ordering`` as in the job metadata, from 0)."""
    rows = []
    for p, d in items:
        out = d["output"]
        o = out.get("output", {})
        rows.append(
            {
                "system": p.system,
                "ordering": d["metadata"].get("ordering", 0),
                "formula": out.get("formula_pretty"),
                "energy_per_atom_ev": o.get("energy_per_atom"),
                "volume_A3": out.get("volume"),
                "density_g_cm3": out.get("density"),
            }
        )
    return rows


def finetune_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of finetune.csv: per fine-tuned model, its test errors before and after.

    A model's first row is its held-out single points (with the training's frame counts); then
    one row per hull phase (its DFT relaxation's frames, never trained on: the stage's phases
    job), whose energy error is given with the phase's mean offset removed and the offsets beside
    it (with one training composition, how the refit splits an energy among the elements sets
    them).
    """
    phases: dict[str, dict[str, Any]] = {}
    for _, d in items:
        out = d["output"]
        if isinstance(out, dict) and out.get("scored_model"):
            phases[str(out["scored_model"])] = out.get("phases") or {}
    rows = []
    for p, d in items:
        out = d["output"]
        if not isinstance(out, dict) or "weights_sha256" not in out:
            continue  # the copies and phases jobs of the stage
        split = "/".join(str(out["splits"].get(k)) for k in ("train", "val", "test"))
        sha = str(out["weights_sha256"])
        sets = [("held-out single points", out["splits"].get("test"), out["before"], out["after"])]
        settings = {}
        for name, sc in sorted(phases.get(sha, {}).items()):
            label = f"phase {name} (never trained on)"
            sets.append((label, sc["frames"], sc["before"] or {}, sc["after"]))
            settings[label] = sc.get("dft_settings")
        for k, (label, n, before, after) in enumerate(sets):
            model = k == 0  # the model's own numbers once, on its first row
            rows.append(
                {
                    "system": p.system,
                    "engine": out.get("engine"),
                    "test_set": label,
                    "test_frames": n,
                    "energy_mae_before_meV_atom": before.get("energy_meV_per_atom"),
                    "energy_mae_after_meV_atom": after.get("energy_meV_per_atom"),
                    "energy_offset_before_meV_atom": before.get("energy_offset_meV_per_atom"),
                    "energy_offset_after_meV_atom": after.get("energy_offset_meV_per_atom"),
                    "force_mae_before_meV_A": before.get("force_meV_per_A"),
                    "force_mae_after_meV_A": after.get("force_meV_per_A"),
                    "stress_mae_before_GPa": before.get("stress_GPa"),
                    "stress_mae_after_GPa": after.get("stress_GPa"),
                    "frames_train_val_test": split if model else None,
                    "split_by": out.get("split_by") if model else None,
                    "relaxation_frames": out.get("relaxation_frames", 0) if model else None,
                    "used": out.get("use") if model else None,
                    "training_s": (out.get("seconds") or {}).get("training") if model else None,
                    "weights_sha256": sha[:12],
                    "phase_dft_settings": settings.get(label),
                }
            )
    return rows


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


def diffusion_rows(items: StageItems) -> list[dict[str, Any]]:
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
                "formula": r.get("formula", ""),
                "n_atoms": r.get("n_atoms", ""),
            }
        )
        health = r.get("health") or {}
        drift = health.get("energy_drift_meV_atom_ps")
        row["energy_drift_meV_atom_ps"] = "" if drift is None else drift
        for bond, fraction in (health.get("broken_bonds") or {}).items():
            row[f"broken_{bond}"] = fraction
        if not ok:
            notes.setdefault("converged", why.split(": ", 1)[-1])
        by_reason: dict[str, list[str]] = defaultdict(list)  # one phrase per reason, naming its columns
        for key, reason in notes.items():
            by_reason[reason].append(key)
        row["note"] = "; ".join(f"{', '.join(keys)}: {reason}" for reason, keys in by_reason.items())
        rows.append(row)
    rows.sort(key=lambda r: (r["system"], r["ordering"], r["temperature_K"]))
    return rows


def arrhenius_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of arrhenius.csv: Ea and the 300 K values of D and sigma per system and ordering.

    A fit that could not be made leaves its error in ``note``.
    """
    rows = []
    for p, d in items:
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
        rows.append(row)
    return rows


def phase_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of phases.csv: the relaxed competing phases."""
    return [
        {
            "phase": d["metadata"].get("phase", p.name),
            "formula": d["output"].get("formula_pretty"),
            "energy_per_atom_ev": d["output"].get("output", {}).get("energy_per_atom"),
        }
        for p, d in items
    ]


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


def nmr_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of nmr_sites.csv: one per site of every structure."""
    rows = []
    for p, d in items:
        for site in d["output"]["sites"]:
            row = {"system": p.system, "structure": rank_label(str(d["output"]["label"]), p.system)}
            row.update({k: site.get(k, "") for k in NMR_COLUMNS})
            rows.append(row)
    return rows


def structure_rows(items: StageItems) -> list[dict[str, Any]]:
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


def hull_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of hull.csv: one per relaxed ordering."""
    rows = []
    for p, d in items:
        for r in d["output"]["rows"]:
            rows.append(
                {
                    "system": p.system,
                    "structure": rank_label(r["label"], p.system),
                    "formula": r["formula"],
                    "energy_per_atom_ev": r["energy_per_atom_ev"],
                    "e_hull_meV_per_atom": r["e_hull_meV_per_atom"],
                    "formation_energy_ev_per_atom": r["formation_energy_ev_per_atom"],
                    "decomposition": r["decomposition"],
                }
            )
    return sorted(rows, key=lambda r: (r["system"], r["structure"]))


def rank_label(label: str, system: str) -> str:
    """Return ``"<system> #k ..."`` (k from 0, as the flow counts) as ``"<system> #k+1 ..."``."""
    head = f"{system} #"
    if not label.startswith(head):
        return label
    digits = label[len(head) :].split(" ", 1)
    if not digits[0].isdigit():
        return label
    return head + str(int(digits[0]) + 1) + (" " + digits[1] if len(digits) > 1 else "")


def rank_orderings_from_one(*tables: list[dict[str, Any]]) -> None:
    """Shift the integer ``ordering`` of every row by one, in place.

    Job metadata count orderings from 0 (job names say "#0"); the report ranks them from 1, as
    ``superionic order`` and orderings.csv do.
    """
    for rows in tables:
        for row in rows:
            if isinstance(row.get("ordering"), int):
                row["ordering"] += 1


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


def rotation_rows(items: StageItems) -> list[dict[str, Any]]:
    """Rows of rotation.csv: one per polyanion kind, system, ordering and temperature."""
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


def rotation_md(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rotation rows for summary.md: an extrapolated tau says so beside its value."""
    out = []
    for r in rows:
        run = r["run_ps"] if np.isfinite(r["run_ps"]) else None
        shown = {**r, "rotation_time_ps": rotation_time_text(r["rotation_time_ps"], r["extrapolated"], run)}
        out.append(shown)
    return out
