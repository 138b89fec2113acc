"""Ours beside the paper's: ``reproduction.csv``, its summary section and ``reproduction.png``.

A study's published numbers live in ``configs/experiments/<study>.yaml`` (the campaign names it
with ``reproduces:``). Each entry of its ``quantities`` list says which number it is, which
observable of ours it compares with, for which systems, and how to judge::

    - name: Ea (Li tracer D), no BH4 vacancies
      observable: ea_D_eV            # see OBSERVABLES
      systems: ["Li5PS4(BH4)2"]      # campaign system names; shell patterns allowed
      value: 0.14                    # a number, [low, high], or omitted for a trend
      error: null                    # published standard error, if any
      unit: eV
      kind: calculation              # experiment | calculation (the paper's own)
      where: "AIMD, tracer-diffusivity Arrhenius"
      judge: {tolerance: 0.05}       # {tolerance}, {rel_tolerance}, {factor}, {below}, {above},
                                     # {order: increasing|decreasing}, {similar_within_factor},
                                     # {different_observable: why}
      needs: "VASP LCHIMAG (paper scale)"   # why it may be missing at a smaller scale

A ``systems`` entry may also be a mapping, ``{system: <pattern>, unit_name: BH4,
temperature_K: 700, label: ...}``, to compare one system's rotation of two units, or a normal
and a frozen run. ``observable: none`` marks a published number no campaign computes yet; its
row says why (``needs``).

Ours is pooled over replicas (the orderings, or quench replicas, of a system): the mean, the
fit's standard error ``sqrt(sum err_i^2) / n`` and the replicas' spread (standard deviation); the
error used in a verdict combines both, ``sqrt(err^2 + spread^2 / n)``. Verdicts:

- ``agrees``: within the stated tolerance, and our two standard errors fit inside it (for a
  factor: the whole ratio interval, ours +- 2 SE over published +- 2 errors, inside [1/f, f]);
- ``differs``: further from the published value than the tolerance plus two combined standard
  errors (for a factor: the whole ratio interval outside [1/f, f]);
- ``not resolved at this scale``: neither (our error bar is wider than the tolerance, or the
  difference is inside it), or no error estimate (one replica without a fit error);
- ``trend holds`` / ``trend reversed``: every step of an order is in the stated direction (or
  one is against it) by more than two combined standard errors;
- ``not resolved at this scale``: some step of a trend is inside two combined standard errors;
- ``different observable``: the paper's number measures something else (an NMR T1 Ea is not a
  tracer-diffusion Ea); ours is shown beside it for reference, never judged against it;
- ``not computed at this scale``: the campaign at this scale has no such result (with why).
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from superionic.spec.studies import OBSERVABLE_NAMES

#: observable -> (table, column, column of its error) in the report's tables
OBSERVABLES: dict[str, tuple[str, str, str | None]] = {
    "ea_D_eV": ("arrhenius", "ea_D_ev", "ea_D_err_ev"),
    "ea_sigmaT_eV": ("arrhenius", "ea_sigmaT_ev", "ea_sigmaT_err_ev"),
    "sigma_300K_mS_cm": ("arrhenius", "sigma_300K_mS_cm", "sigma_300K_err_mS_cm"),
    "D_300K_cm2_s": ("arrhenius", "D_300K_cm2_s", "D_300K_err_cm2_s"),
    "e_hull_meV_atom": ("hull", "e_hull_meV_per_atom", None),
    "rotation_time_ps": ("rotation", "rotation_time_ps", "rotation_time_err_ps"),
    "cq_MHz": ("nmr", "cq_mhz", None),
    "eta_q": ("nmr", "eta_q", None),
    "delta_iso_ppm": ("nmr", "delta_iso_ppm", None),
    "local_structure": ("study_d", "model", None),
    "none": ("", "", None),
}
assert set(OBSERVABLES) == set(OBSERVABLE_NAMES), "superionic.spec.studies.OBSERVABLE_NAMES is out of date"

#: observables that carry sampling noise: one replica without a fit error has no error estimate
#: (its verdict is "not resolved"); the others (hull, NMR) are deterministic given the model
STATISTICAL = frozenset(
    {"ea_D_eV", "ea_sigmaT_eV", "sigma_300K_mS_cm", "D_300K_cm2_s", "rotation_time_ps", "local_structure"}
)

COLUMNS = (
    "study",
    "quantity",
    "systems",
    "published",
    "unit",
    "published_kind",
    "where",
    "ours",
    "ours_err",
    "replica_spread",
    "replicas",
    "verdict",
    "why",
    "scale",
    "engine",
    "model",
    "composition_simulated",
    "atoms",
    "simulated_ps",
    "jumps",
    "versions",
)


@dataclass
class Pooled:
    """One system's value pooled over its replicas."""

    value: float
    err: float
    spread: float
    n: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    statistical: bool = True

    @property
    def se(self) -> float:
        """Combined standard error: the fit's and the replicas' spread over sqrt(n).

        NaN when nothing estimates it (a statistical observable from one replica without a fit
        error); 0 for a deterministic one (a hull energy); inf for a value beyond the run (a
        rotation that did not decay).
        """
        if math.isinf(self.value):
            return float("nan")
        parts = []
        if math.isfinite(self.err):
            parts.append(self.err**2)
        if self.n > 1 and math.isfinite(self.spread):
            parts.append(self.spread**2 / self.n)
        if not parts:
            return float("nan") if self.statistical else 0.0
        return math.sqrt(sum(parts))


def _number(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return x


def _entry(entry: Any, q: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(label, system pattern, filters)`` of one ``systems`` entry (a pattern or a mapping)."""
    if isinstance(entry, dict):
        filters = {**q, **entry}
        return str(entry.get("label", entry["system"])), str(entry["system"]), filters
    return str(entry), str(entry), q


def _select(rows: list[dict[str, Any]], pattern: str, q: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of ``pattern``'s systems that match the quantity's filters (element, unit, T, ...)."""
    out = []
    for r in rows:
        if not fnmatch.fnmatchcase(str(r.get("system", "")), pattern):
            continue
        if "element" in q and r.get("species") != q["element"]:
            continue
        if "unit_name" in q and r.get("unit") != q["unit_name"]:
            continue
        if "temperature_K" in q and abs(_number(r.get("temperature_K")) - float(q["temperature_K"])) > 1e-6:
            continue
        if "environment" in q and q["environment"] not in str(r.get("environment", "")):
            continue
        if "row" in q and r.get("quantity") != q["row"]:
            continue
        out.append(r)
    return out


def _rows_of(
    table: list[dict[str, Any]], pattern: str, filters: dict[str, Any], q: dict[str, Any], column: str
) -> list[dict[str, Any]]:
    """Return the rows behind one system of a quantity; C_Q as a magnitude (papers quote |C_Q|)."""
    rows = _select(table, pattern, filters)
    if q["observable"] == "cq_MHz":
        rows = [{**r, column: abs(_number(r.get(column)))} for r in rows]
    return rows


def pool(
    rows: list[dict[str, Any]],
    column: str,
    err_column: str | None,
    how: str = "mean",
    statistical: bool = True,
) -> Pooled | None:
    """Pool one observable over replica rows.

    Parameters
    ----------
    rows : list of dict
        The replicas' rows (orderings or quench replicas of one system).
    column, err_column : str
        The value's column and its standard error's (None: no error column).
    how : str
        ``mean``, or ``min`` (a ground state: the lowest replica).
    statistical : bool
        Whether the value carries sampling noise (see :data:`STATISTICAL`).

    Returns
    -------
    Pooled or None
        None when no row has a value. A replica at +inf (a rotation that did not decay within its
        run) makes the pooled value +inf: a lower bound, judged only against finite values.
    """
    vals = np.array([_number(r.get(column)) for r in rows])
    errs = np.array([_number(r.get(err_column)) if err_column else float("nan") for r in rows])
    ok = ~np.isnan(vals)
    if not ok.any():
        return None
    vals, errs = vals[ok], errs[ok]
    kept = [r for r, k in zip(rows, ok, strict=True) if k]
    if how == "min":
        i = int(np.argmin(vals))
        return Pooled(float(vals[i]), float(errs[i]), float("nan"), 1, [kept[i]], statistical)
    n = len(vals)
    if np.isposinf(vals).any():
        return Pooled(float("inf"), float("nan"), float("nan"), n, kept, statistical)
    err = float(np.sqrt(np.sum(errs**2)) / n) if np.all(np.isfinite(errs)) else float("nan")
    spread = float(np.std(vals, ddof=1)) if n > 1 else float("nan")
    return Pooled(float(np.mean(vals)), err, spread, n, kept, statistical)


def _published(q: dict[str, Any]) -> tuple[float, float, float]:
    """``(low, high, error)`` of the published value (a number gives low == high)."""
    v = q.get("value")
    err = _number(q.get("error")) if q.get("error") is not None else 0.0
    if isinstance(v, list | tuple) and len(v) == 2:
        return float(v[0]), float(v[1]), err
    x = _number(v)
    return x, x, err


def _published_text(q: dict[str, Any]) -> str:
    v = q.get("value")
    if v is None:
        return str(q.get("statement", ""))
    if isinstance(v, list | tuple):
        return f"{v[0]:g}-{v[1]:g}"
    err = q.get("error")
    return f"{v:g}" + (f" +- {err:g}" if err is not None else "")


def _judge_value(ours: Pooled, q: dict[str, Any]) -> tuple[str, str]:
    """Verdict of one pooled value against a published number, range or bound (see the module doc)."""
    judge = q.get("judge") or {}
    if not math.isfinite(ours.se):
        return "not resolved at this scale", "no error estimate: one replica and no fit error"
    if "below" in judge or "above" in judge:
        bound = float(judge.get("below", judge.get("above")))
        below = "below" in judge
        ok = ours.value < bound if below else ours.value > bound
        if abs(ours.value - bound) <= 2 * ours.se:
            return "not resolved at this scale", f"within 2 SE ({2 * ours.se:.3g}) of the bound {bound:g}"
        side = "below" if below else "above"
        return ("agrees" if ok else "differs"), f"{side} {bound:g} required"
    low, high, perr = _published(q)
    if not math.isfinite(low):
        return "not judged", "no published number"
    if "factor" in judge:
        return _judge_factor(ours, low, high, perr, float(judge["factor"]))
    diff = 0.0 if low <= ours.value <= high else min(abs(ours.value - low), abs(ours.value - high))
    se = math.sqrt(ours.se**2 + perr**2)
    tol = max(
        float(judge.get("tolerance", 0.0)), float(judge.get("rel_tolerance", 0.0)) * max(abs(low), abs(high))
    )
    tol = tol or 2 * perr  # no stated tolerance: the published error bar is the window
    if diff > tol + 2 * se:
        return (
            "differs",
            f"|ours - published| = {diff:.3g} > tolerance {tol:.3g} + 2 combined SE {2 * se:.3g}",
        )
    if diff <= tol and 2 * ours.se <= tol:
        return "agrees", f"|ours - published| = {diff:.3g} <= tolerance {tol:.3g}, 2 SE {2 * ours.se:.3g}"
    return "not resolved at this scale", (
        f"|ours - published| = {diff:.3g}, tolerance {tol:.3g}, but 2 SE = {2 * ours.se:.3g} "
        "(ours) does not resolve it"
    )


def _judge_factor(ours: Pooled, low: float, high: float, perr: float, f: float) -> tuple[str, str]:
    """Within a factor ``f``: the whole ratio interval (ours +- 2 SE over published +- 2 err)."""
    mid = 0.5 * (low + high)
    ratio = ours.value / mid if mid else float("nan")
    lo_o, hi_o = ours.value - 2 * ours.se, ours.value + 2 * ours.se
    lo_p, hi_p = min(low, mid - 2 * perr), max(high, mid + 2 * perr)
    if mid <= 0 or lo_o <= 0 or lo_p <= 0:
        return (
            "not resolved at this scale",
            f"ours / published = {ratio:.3g}, but 2 SE ({2 * ours.se:.3g}) >= ours",
        )
    r_lo, r_hi = lo_o / hi_p, hi_o / lo_p
    text = f"ours / published = {ratio:.3g} ({r_lo:.3g}-{r_hi:.3g} at 2 SE), within a factor {f:g} required"
    if 1 / f <= r_lo and r_hi <= f:
        return "agrees", text
    if r_hi < 1 / f or r_lo > f:
        return "differs", text
    return "not resolved at this scale", text


def _judge_order(pooled: list[tuple[str, Pooled]], direction: str) -> tuple[str, str]:
    """Verdict of ``increasing`` / ``decreasing`` along the systems as listed."""
    sign = 1.0 if direction == "increasing" else -1.0
    steps, unresolved, against = [], False, False
    if len(pooled) < 2:
        return "not resolved at this scale", "an order needs two systems"
    for (a, pa), (b, pb) in itertools.pairwise(pooled):
        if math.isinf(pa.value) or math.isinf(pb.value):  # beyond the run: a lower bound
            if math.isinf(pa.value) and math.isinf(pb.value):
                unresolved = True
            else:
                against |= sign * (pb.value - pa.value) < 0
            steps.append(f"{b}: {pb.value:.3g}, {a}: {pa.value:.3g} (inf: no decay within the run)")
            continue
        d = sign * (pb.value - pa.value)
        se = math.sqrt(pa.se**2 + pb.se**2)
        if not math.isfinite(se) or abs(d) <= 2 * se:
            unresolved = True
        elif d < 0:
            against = True
        steps.append(f"{b} - {a} = {pb.value - pa.value:+.3g} (2 SE {2 * se:.2g})")
    if against:
        return "trend reversed", "; ".join(steps)
    if unresolved:
        return "not resolved at this scale", "; ".join(steps)
    return "trend holds", "; ".join(steps)


def _judge_similar(pooled: list[tuple[str, Pooled]], factor: float) -> tuple[str, str]:
    """Verdict of "barely depends on": the largest over the smallest value within ``factor``."""
    vals = [p.value for _, p in pooled]
    ses = [p.se for _, p in pooled]
    if not all(math.isfinite(v) and math.isfinite(e) for v, e in zip(vals, ses, strict=True)):
        return "not resolved at this scale", "a value or its error is not finite"
    hi, lo = int(np.argmax(vals)), int(np.argmin(vals))
    ratio = vals[hi] / vals[lo] if vals[lo] > 0 else float("nan")
    text = "; ".join(f"{s}: {p.value:.3g}" for s, p in pooled) + f"; max/min = {ratio:.2g}"
    worst_lo = vals[lo] - 2 * ses[lo]
    worst = (vals[hi] + 2 * ses[hi]) / worst_lo if worst_lo > 0 else float("inf")
    best = max(vals[hi] - 2 * ses[hi], 0.0) / (vals[lo] + 2 * ses[lo])
    text += f" ({best:.2g}-{worst:.2g} at 2 SE; <= {factor:g} required)"
    if worst <= factor:
        return "trend holds", text
    if best > factor:
        return "differs", text
    return "not resolved at this scale", text


def _missing(q: dict[str, Any], scale: str | None) -> str:
    needs = q.get("needs")
    if needs and scale != "paper":
        return f"needs {needs}"
    return "no result in the store for these systems (has the campaign run to the end?)"


def _details(pooled: list[Pooled], diffusion: list[dict[str, Any]]) -> dict[str, Any]:
    """Atoms, simulated ps, jumps and the composition simulated, from the diffusion rows behind a value."""
    keys = {(r.get("system"), r.get("ordering")) for p in pooled for r in p.rows}
    runs = [r for r in diffusion if (r.get("system"), r.get("ordering")) in keys]
    if not runs:
        return {}
    return {
        "composition_simulated": "; ".join(
            sorted({str(r.get("formula", "")) for r in runs if r.get("formula")})
        ),
        "atoms": "; ".join(sorted({str(r.get("n_atoms")) for r in runs if r.get("n_atoms")})),
        "simulated_ps": round(sum(_number(r.get("total_time_ps")) for r in runs), 2),
        "jumps": round(
            sum(_number(r.get("n_jumps")) for r in runs if math.isfinite(_number(r.get("n_jumps"))))
        ),
    }


def versions(engine: str) -> str:
    """Versions of the codes a result depends on, as installed where the report is written."""
    names = ["superionic", "pymatgen", "atomate2", "jobflow"]
    if engine == "mlip":
        names += ["chgnet", "torch"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            continue
    if engine == "vasp":  # the VASP build is in each run's vasprun.xml; the POTCARs follow MP's set
        from pymatgen.io.vasp.sets import MPRelaxSet

        out.append(f"VASP PAW POTCAR {MPRelaxSet.CONFIG.get('POTCAR_FUNCTIONAL', 'PBE')} (MP choice)")
    elif engine == "cp2k":
        out.append(f"{_cp2k_version()}; BASIS_MOLOPT + GTH_POTENTIALS (GTH-PBE)")
    return "; ".join(out)


def _cp2k_version() -> str:
    """``cp2k <version>`` of the executable on PATH (its first --version line), or ``cp2k``."""
    import shutil
    import subprocess

    exe = shutil.which("cp2k") or shutil.which("cp2k.psmp") or shutil.which("cp2k.ssmp")
    if not exe:
        return "cp2k (not on PATH here)"
    try:
        first = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "cp2k"
    line = next((ln.strip() for ln in first.splitlines() if ln.strip()), "")
    return line or "cp2k"


def reproduction_rows(
    study: dict[str, Any],
    tables: dict[str, list[dict[str, Any]]],
    scale: str | None,
    engine: str,
    model: str,
) -> list[dict[str, Any]]:
    """One row per published quantity of ``study``: ours beside it with a verdict.

    Parameters
    ----------
    study : dict
        ``configs/experiments/<study>.yaml`` (:func:`load_study`).
    tables : dict
        The report's tables by name (``arrhenius``, ``diffusion``, ``hull``, ``rotation``,
        ``nmr``, ``study_d``); a diffusion row may carry ``formula`` and ``n_atoms``.
    scale, engine, model : str
        Recorded in every row.

    Returns
    -------
    list of dict
        Rows with :data:`COLUMNS`.
    """
    rows = []
    code_versions = versions(engine)
    for q in study.get("quantities", []):
        table, column, err_column = OBSERVABLES[q["observable"]]
        entries = [_entry(e, q) for e in q.get("systems", ["*"])]
        systems = [label for label, _, _ in entries]
        row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
        row.update(
            study=study.get("study", ""),
            quantity=q["name"],
            systems=", ".join(systems),
            published=_published_text(q),
            unit=q.get("unit", ""),
            published_kind=q.get("kind", ""),
            where=q.get("where", ""),
            scale=scale or "",
            engine=engine,
            model=model,
            versions=code_versions,
        )
        if q["observable"] == "none":
            row.update(
                verdict="not computed at this scale", why=f"needs {q.get('needs', 'a stage not built yet')}"
            )
            rows.append(row)
            continue
        how = "min" if q["observable"] == "e_hull_meV_atom" else "mean"
        noisy = q["observable"] in STATISTICAL
        pooled = [
            (
                label,
                pool(_rows_of(tables.get(table, []), pattern, f, q, column), column, err_column, how, noisy),
            )
            for label, pattern, f in entries
        ]
        have = [(s, p) for s, p in pooled if p is not None]
        judge = q.get("judge") or {}
        if len(have) < len(pooled):
            missing = [s for s, p in pooled if p is None]
            row.update(
                verdict="not computed at this scale", why=f"{', '.join(missing)}: {_missing(q, scale)}"
            )
            if have:
                row["ours"] = "; ".join(f"{s}: {p.value:.4g}" for s, p in have)
            rows.append(row)
            continue
        ps = [p for _, p in have]
        row.update(_details(ps, tables.get("diffusion", [])))
        row["replicas"] = "; ".join(str(p.n) for p in ps)
        if len(ps) == 1:
            p = ps[0]
            err = p.se if math.isfinite(p.se) and p.se > 0 else ""
            row.update(ours=p.value, ours_err=err, replica_spread=_blank(p.spread))
        else:
            row["ours"] = "; ".join(f"{s}: {p.value:.4g}" for s, p in have)
            row["ours_err"] = "; ".join(f"{p.se:.2g}" for p in ps)
            row["replica_spread"] = "; ".join(
                f"{p.spread:.2g}" if math.isfinite(p.spread) else "-" for p in ps
            )
        if "different_observable" in judge:
            row.update(verdict="different observable", why=str(judge["different_observable"]))
        elif "order" in judge:
            row["verdict"], row["why"] = _judge_order(have, str(judge["order"]))
        elif "similar_within_factor" in judge:
            row["verdict"], row["why"] = _judge_similar(have, float(judge["similar_within_factor"]))
        elif q.get("value") is None and not judge:
            row.update(verdict="computed (no published value)", why=str(q.get("note", "")))
        else:
            verdicts = [(s, *_judge_value(p, q)) for s, p in have]
            if len(verdicts) == 1:
                row["verdict"], row["why"] = verdicts[0][1:]
            else:  # one number for several systems: each must agree
                kinds = {v for _, v, _ in verdicts}
                row["verdict"] = (
                    "differs"
                    if "differs" in kinds
                    else kinds.pop()
                    if len(kinds) == 1
                    else ("not resolved at this scale")
                )
                row["why"] = "; ".join(f"{s}: {v} ({w})" for s, v, w in verdicts)
        rows.append(row)
    return rows


def _blank(x: float) -> Any:
    return x if math.isfinite(x) else ""


def plot_reproduction(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Ours / published (log scale, error bars) for every row with one number on each side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for r in rows:
        if r["verdict"] not in ("agrees", "differs", "not resolved at this scale"):
            continue  # a different observable (an Ea beside a rotation time) is not a ratio
        ours, low, high = _number(r["ours"]), *_published_range(r["published"])
        if not (math.isfinite(ours) and math.isfinite(low)) or low == 0 or ours <= 0 or low < 0:
            continue
        mid = 0.5 * (low + high)
        err = _number(r["ours_err"])
        points.append(
            (
                f"{r['study']}: {r['quantity']}",
                ours / mid,
                (err / mid) if math.isfinite(err) else 0.0,
                r["verdict"],
            )
        )
    if not points:
        return None
    colours = {"agrees": "tab:green", "differs": "tab:red"}
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(points) + 1.2))
    for i, (_label, ratio, err, verdict) in enumerate(points):
        lo = min(err, ratio * 0.999)
        ax.errorbar(ratio, i, xerr=[[lo], [err]], fmt="o", color=colours.get(verdict, "tab:grey"))
        ax.text(1.02, i, verdict, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(range(len(points)), [p[0] for p in points], fontsize=8)
    ax.set_xlabel("ours / published (1 = same)")
    ax.set_title("Reproduction: ours against published", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _published_range(text: str) -> tuple[float, float]:
    """``(low, high)`` of a published cell: ``0.14``, ``1e-08``, ``0.3-1.3``, ``2.7 +- 0.1``."""
    m = re.fullmatch(rf"\s*({_NUMBER})(?:\s*-\s*({_NUMBER}))?\s*", str(text).split("+-")[0])
    if not m:
        return float("nan"), float("nan")
    low = float(m.group(1))
    return low, float(m.group(2)) if m.group(2) else low
