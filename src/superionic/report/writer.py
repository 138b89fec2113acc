"""Write ``report/``: summary.md, CSV tables and PNG plots.

The store queries live in :mod:`superionic.report.queries`, the rows of each table in
:mod:`superionic.report.tables`, the plots in :mod:`superionic.report.plots` and the comparison
with published experiments in :mod:`superionic.report.experiments`; this module decides which
files a report holds and writes ``summary.md``. The names other modules imported from here
before the split are kept below.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from superionic.report.experiments import study_d_rows
from superionic.report.plots import (
    plot_arrhenius,
    plot_arrhenius_points,
    plot_msd,
    plot_rotation,
    plot_structure,
    write_nmr_spectra,
)
from superionic.report.queries import outputs_by_stage
from superionic.report.tables import (
    NMR_COLUMNS,
    arrhenius_rows,
    diffusion_rows,
    finetune_rows,
    hull_rows,
    md_table,
    nmr_rows,
    ordering_rows,
    phase_rows,
    rank_orderings_from_one,
    relax_rows,
    rotation_extrapolated,
    rotation_md,
    rotation_rows,
    rotation_time_text,
    structure_rows,
    write_csv,
)

if TYPE_CHECKING:
    from superionic.dispatch.local import CampaignStore
    from superionic.flows import PlannedJob
    from superionic.spec.loader import Campaign

__all__ = [
    "NMR_COLUMNS",
    "diffusion_rows",
    "hull_rows",
    "nmr_rows",
    "plot_arrhenius_points",
    "plot_structure",
    "rotation_extrapolated",
    "rotation_time_text",
    "structure_rows",
    "study_d_rows",
    "write_nmr_spectra",
    "write_report",
]

# names of the writers before the split (tests and older callers import them from here)
_write_csv = write_csv
_md_table = md_table

_ROTATION_TITLE = (
    "Polyanion rotation (C(t) = <u(t).u(0)>; tau from exp(-t/tau) where C > 1/e; "
    "extrapolated: C(t) stayed above 1/e over the run, tau is longer than the run)"
)
_STRUCTURE_TITLE = (
    "Local structure (CN and bond lengths within the cutoff; CSM: continuous symmetry measure, "
    "0 = ideal polyhedron; crystallinity: cosine similarity of the centre-centre RDF with "
    "the crystal's)"
)
_NMR_TITLE = (
    "NMR per site (sigma: shielding, ppm; delta = sigma_ref - sigma_iso; Haeberlen "
    "anisotropy/asymmetry; C_Q = eQVzz/h, |Vzz| >= |Vyy| >= |Vxx|)"
)


def write_report(
    campaign_name: str,
    planned: list[PlannedJob],
    store: CampaignStore,
    out_dir: Path,
    campaign: Campaign | None = None,
) -> list[Path]:
    """Write the campaign report.

    Files: ``summary.md``; ``orderings.csv``; ``relax.csv``; ``diffusion.csv`` (one row per
    system, ordering and temperature); ``arrhenius.csv``; ``msd.png``; ``arrhenius.png``; and,
    when the campaign has those stages, ``rotation.csv``/``rotation_acf.png``, ``hull.csv``/
    ``hull.png``, ``nmr_sites.csv`` with one spectrum per element, ``structure.csv`` with its RDF
    and G(r) plots, ``study_d_comparison.csv`` and ``phases.csv``.

    Parameters
    ----------
    campaign_name : str
        Title of the summary.
    planned : list of PlannedJob
        The campaign's jobs.
    store : CampaignStore
        The campaign's connected store.
    out_dir : Path
        The report folder (created).
    campaign : Campaign, optional
        The loaded campaign: with ``reproduces:`` the report also holds ``reproduction.csv``,
        ``reproduction.png`` and its section of summary.md (MD health, energy drift and broken
        bonds, is in diffusion.csv).

    Returns
    -------
    list of Path
        The files written, ``summary.md`` first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    by_stage = outputs_by_stage(store, planned)

    orderings = ordering_rows(by_stage["order"])
    relax = relax_rows(by_stage["relax"])
    finetune = finetune_rows(by_stage["finetune"])
    diffusion = diffusion_rows(by_stage["diffusion"])
    arrhenius = arrhenius_rows(by_stage["arrhenius"])
    rotation = rotation_rows(by_stage["rotation"])
    hull = hull_rows(by_stage["hull"])
    nmr = nmr_rows(by_stage["nmr"])
    structure = structure_rows(by_stage["structure"])
    study_d = study_d_rows(by_stage["structure"])
    phases = phase_rows(by_stage["phase"])
    rank_orderings_from_one(relax, diffusion, arrhenius, rotation)
    reproduction = _reproduction(campaign, arrhenius, diffusion, hull, rotation, nmr, study_d)

    written = []
    for name, rows in (
        ("orderings.csv", orderings),
        ("relax.csv", relax),
        ("finetune.csv", finetune),
        ("diffusion.csv", diffusion),
        ("arrhenius.csv", arrhenius),
        ("rotation.csv", rotation),
        ("hull.csv", hull),
        ("nmr_sites.csv", nmr),
        ("structure.csv", structure),
        ("study_d_comparison.csv", study_d),
        ("phases.csv", phases),
        ("reproduction.csv", reproduction),
    ):
        if rows:
            write_csv(out_dir / name, rows)
            written.append(out_dir / name)
    if finetune:
        written += _finetune_parity(by_stage["finetune"], store, out_dir, finetune)
        write_csv(out_dir / "finetune.csv", finetune)  # with the model folders found above
    if by_stage["diffusion"]:
        written.append(plot_msd(by_stage["diffusion"], out_dir / "msd.png"))
    if diffusion:
        written.append(plot_arrhenius(diffusion, by_stage["arrhenius"], out_dir / "arrhenius.png"))
    if by_stage["rotation"]:
        written.append(plot_rotation(by_stage["rotation"], out_dir / "rotation_acf.png"))
    if nmr:
        written += write_nmr_spectra(by_stage["nmr"], out_dir)
    if by_stage["structure"]:
        written += plot_structure(by_stage["structure"], out_dir)
    if hull:
        from superionic.analysis.hull import plot_hull

        written.append(plot_hull(hull, out_dir / "hull.png", f"{campaign_name}: energy above hull"))

    if reproduction:
        from superionic.report.reproduction import plot_reproduction

        png = plot_reproduction(reproduction, out_dir / "reproduction.png")
        if png is not None:
            written.append(png)
    md = [f"# {campaign_name}: report\n"]
    if reproduction:
        md.append(_reproduction_md(campaign, reproduction))
    for title, rows in (
        ("Orderings (Ewald energy per cell)", orderings),
        ("Relaxation", relax),
        (
            "Fine-tuned CHGNet (MAE on held-out DFT single points, and on each hull phase's DFT "
            "relaxation, never trained on, its energy error with the phase's mean offset removed; "
            "before: pretrained with its reference energies refit)",
            finetune,
        ),
        ("Diffusion per temperature", diffusion),
        (
            "Arrhenius fits (error: weighted least squares of the per-point errors; "
            "per-point errors from He et al. 2018 RSD)",
            arrhenius,
        ),
        (_ROTATION_TITLE, rotation_md(rotation)),
        ("Energy above the convex hull (against the competing phases below)", hull),
        (_STRUCTURE_TITLE, structure),
        ("Generated model vs EXAFS/RMC (study D)", study_d),
        (_NMR_TITLE, nmr),
        ("Competing phases (relaxed with the same engine and preset)", phases),
    ):
        if rows:
            md.append(f"## {title}\n\n{md_table(rows)}")
    for png in [w for w in written if w.suffix == ".png"]:
        md.append(f"![{png.stem}]({png.name})\n")
    (out_dir / "summary.md").write_text("\n".join(md))
    written.insert(0, out_dir / "summary.md")
    return written


def _finetune_parity(items: list, store: CampaignStore, out_dir: Path, rows: list[dict]) -> list[Path]:
    """Copy each fine-tuned model's parity plot (test frames, before and after) into the report.

    The model is unpacked from the store on the way; its folder goes into ``rows`` (finetune.csv's
    ``model_folder``): the path ``force_field:`` or ``--force-field`` takes to use it elsewhere.
    """
    from superionic.engines.finetune import model_folder

    written = []
    for p, d in items:
        out = d["output"]
        if not isinstance(out, dict) or "model" not in out:
            continue
        try:
            folder = model_folder(out["model"], store.job_store)
        except (OSError, ValueError, KeyError):
            continue  # a model in a store this machine cannot read: the table still says it all
        for row in rows:  # the model's single-point row and its phases' rows
            if row["weights_sha256"] == str(out["weights_sha256"])[:12]:
                row["model_folder"] = str(folder)
        png = folder / "parity.png"
        if png.is_file():
            target = out_dir / f"finetune_parity_{p.system.replace(' ', '_')}.png"
            target.write_bytes(png.read_bytes())
            written.append(target)
    return written


def _mlip_label(force_field: str | None) -> str:
    """Name the MLIP a campaign's MD ran on, for reproduction.csv's ``model`` column."""
    from superionic.engines.mlip import is_model_folder

    if force_field is None or force_field == "CHGNet":
        return "CHGNet (pretrained, in the chgnet wheel)"
    if force_field == "SevenNet":
        return "SevenNet-0 (pretrained, in the sevenn wheel)"
    if force_field == "finetuned":
        return "CHGNet fine-tuned by the campaign's finetune stage (finetune.csv)"
    if is_model_folder(force_field):
        from superionic.engines.finetune import read_model_folder
        from superionic.errors import SuperionicError

        try:
            meta = read_model_folder(force_field)
        except (SuperionicError, OSError, ValueError, KeyError):
            return f"fine-tuned model {force_field}"
        sha = meta["weights_sha256"][:12]
        return f"CHGNet fine-tuned on {meta['engine']} data (weights {sha}, {force_field})"
    return force_field


def _reproduction(
    campaign: Campaign | None,
    arrhenius: list,
    diffusion: list,
    hull: list,
    rotation: list,
    nmr: list,
    study_d: list,
) -> list[dict]:
    """reproduction.csv's rows, when the campaign names the study it reproduces."""
    if campaign is None or not campaign.spec.reproduces:
        return []
    from superionic.report.reproduction import reproduction_rows
    from superionic.spec.studies import load_study

    spec = campaign.spec
    md_stage = next((s for s in spec.stages if s.stage == "md"), None)
    engine = (md_stage.engine if md_stage is not None and md_stage.engine else None) or spec.engine
    model = {"vasp": "VASP PAW-PBE"}.get(engine, engine)
    if engine == "mlip":
        model = _mlip_label(getattr(md_stage, "force_field", None) if md_stage is not None else None)
    model += f"; preset {spec.preset}"
    tables = {
        "arrhenius": arrhenius,
        "diffusion": diffusion,
        "hull": hull,
        "rotation": rotation,
        "nmr": nmr,
        # the as-made structure is "<system>"; its MD snapshots average "<system> snapshots"
        "study_d": [
            {
                **r,
                "system": (r.get("system") or r["structure"])
                + (" snapshots" if "snapshots" in r["structure"] else ""),
            }
            for r in study_d
        ],
    }
    return reproduction_rows(load_study(spec.reproduces), tables, campaign.scale, engine, model)


def _reproduction_md(campaign: Campaign | None, rows: list[dict]) -> str:
    """Return the summary.md section: the comparison, the verdict counts, what limits it."""
    from collections import Counter

    counts = Counter(r["verdict"] for r in rows)
    shown = [
        {
            k: r[k]
            for k in (
                "quantity",
                "systems",
                "published",
                "unit",
                "published_kind",
                "ours",
                "ours_err",
                "replicas",
                "verdict",
                "why",
            )
        }
        for r in rows
    ]
    scale = campaign.scale if campaign is not None else None
    head = (
        f"## Reproduction of {campaign.spec.reproduces if campaign else ''} "
        f"(scale: {scale or 'as written'})\n\n"
        "Ours beside every published number the campaign can compute (configs/experiments/); "
        "ours_err combines the fits' standard errors and the spread of the replicas (orderings). "
        "Verdicts: " + ", ".join(f"{v} {n}" for v, n in counts.most_common()) + ". Code versions in "
        "reproduction.csv are those installed where this report was written.\n\n"
    )
    return head + md_table(shown)
