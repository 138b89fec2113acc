"""Quench stage: melt-quench MD per (T_melt, replica), then local-structure analysis of each result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobflow import job
from pymatgen.core import Structure

from superionic.analysis.local_structure import (
    connectivity,
    coordination,
    first_peak,
    polyhedra_csm,
    rdf,
    rdf_similarity,
    xray_gr,
)


def _s(x: Structure | dict) -> Structure:
    return x if isinstance(x, Structure) else Structure.from_dict(x)


@job
def analyze_local_structure(
    structure: Structure | dict,
    label: str,
    center: str | None,
    ligands: list[str],
    cutoff_A: float,
    shape: str | None = None,
    reference: Structure | dict | None = None,
    melt_temperature_K: float | None = None,
    replica: int | None = None,
) -> dict[str, Any]:
    """CN, bond lengths, CSM, connectivity, RDFs, X-ray G(r) and similarity to the crystal."""
    s = _s(structure)
    out: dict[str, Any] = {
        "label": label,
        "melt_temperature_K": melt_temperature_K,
        "replica": replica,
        "formula": s.composition.reduced_formula,
        "density_g_cm3": float(s.density),
    }
    if center:
        out["coordination"] = {lig: coordination(s, center, lig, cutoff_A) for lig in ligands}
        if shape or len(ligands) == 1:
            try:
                out["csm"] = polyhedra_csm(s, center, ligands[0], cutoff_A, shape)
            except Exception as exc:
                out["csm"] = {"error": str(exc)}
        out["connectivity"] = connectivity(s, center, ligands, cutoff_A)
        cc = rdf(s, center, center, r_max=8.0, bin_A=0.1)
        out["rdf_center_center"] = cc
        out["rdf_center_ligand"] = {lig: rdf(s, center, lig, r_max=6.0, bin_A=0.05) for lig in ligands}
        out["first_peak_center_center_A"] = first_peak(cc["r_A"], cc["g"])[0]
        if reference is not None:
            ref = rdf(_s(reference), center, center, r_max=8.0, bin_A=0.1)
            out["crystallinity"] = rdf_similarity(cc["g"], ref["g"])
    out["xray_G"] = xray_gr(s, r_max=10.0, bin_A=0.05)
    return out


def add_quench_jobs(
    stage: Any,
    settings: dict[str, Any],
    engine: str,
    structure: Any,
    name: str,
    add: Callable[..., None],
    ordering: int,
) -> list[tuple[Any, str]]:
    """Add the melt-quench and analysis jobs of one structure; return (quenched structure, variant)."""
    merged = {
        **settings,
        **{
            k: getattr(stage, k)
            for k in (
                "start_temperature_K",
                "heat_ps",
                "hold_ps",
                "quench_ps",
                "timestep_fs",
                "trajectory_interval",
            )
        },
    }
    crystal = analyze_local_structure(
        structure, "crystal", stage.center, list(stage.ligands), stage.cutoff_A, stage.shape, None
    )
    crystal.name = f"{name} structure (crystal)"
    add(crystal, "structure", ordering=ordering, variant="crystal")
    results = []
    for t_melt in stage.melt_temperatures_K:
        for k in range(stage.replicas):
            variant = f"quench {t_melt:g} K #{k}"
            if engine == "vasp":
                from superionic.engines.vasp import quench_jobs

                segs, final = quench_jobs(merged, t_melt, structure, f"{name} {variant}")
                for sj in segs:
                    add(sj, "quench", ordering=ordering, variant=variant, melt_temperature_K=t_melt)
            else:
                from superionic.engines.mlip import quench_maker

                maker = quench_maker(merged, t_melt, seed=k)
                maker.name = f"{name} {variant}"
                qj = maker.make(structure)
                add(qj, "quench", ordering=ordering, variant=variant, melt_temperature_K=t_melt)
                final = qj.output.structure
            if stage.relax_after:
                from superionic.engines.mlip import relax_maker

                rmaker = relax_maker({**settings, "relax_cell": True})
                rmaker.name = f"{name} {variant} relax"
                rj = rmaker.make(final)
                add(rj, "quench", ordering=ordering, variant=variant, melt_temperature_K=t_melt)
                final = rj.output.structure
            ana = analyze_local_structure(
                final,
                variant,
                stage.center,
                list(stage.ligands),
                stage.cutoff_A,
                stage.shape,
                structure,
                t_melt,
                k,
            )
            ana.name = f"{name} structure ({variant})"
            add(ana, "structure", ordering=ordering, variant=variant)
            results.append((final, variant))
    return results
