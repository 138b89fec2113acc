"""NMR stage jobs: read the engine's NMR outputs into one document shape per site."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import job
from pymatgen.core import Structure

from superionic.analysis.nmr import (
    environment_label,
    reference_shifts,
    sigma_reference_from_compound,
    vasp_efg,
    vasp_shielding,
)
from superionic.stages.common import engine_for, staged

if TYPE_CHECKING:
    from jobflow import Flow

    from superionic.spec.loader import Campaign
    from superionic.spec.models import CampaignSpec, NMRStage


def _outcar(dir_name: str) -> Path:
    from atomate2.utils.path import strip_hostname  # atomate2's dir_name is "host:/path"

    folder = Path(strip_hostname(str(dir_name)))
    for name in ("OUTCAR", "OUTCAR.gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no OUTCAR in {folder}")


@job
def collect_nmr(
    structure: Structure | dict,
    cs_dir: str | dict | None,
    efg_dir: str | dict | None,
    isotopes: list[str],
    label: str,
    shift_references_ppm: dict[str, float] | None = None,
    environment_species: list[str] | None = None,
    environment_cutoff_A: float = 3.5,
    line_fwhm_ppm: float = 1.0,
    reference_results: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-site shielding and EFG documents from the CS and EFG runs of one structure.

    ``reference_results`` (element -> reference compound's collected output and experimental
    shift) sets sigma_ref = <sigma_iso of the element in the compound> + delta_exp; explicit
    ``shift_references_ppm`` take precedence.

    Returns
    -------
    dict
        ``label``, ``sites`` (one dict per site: species, isotope, sigma_*, efg_*, cq_mhz, eta_q)
        and ``structure``.
    """
    s = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
    species = [site.specie.symbol for site in s]
    sites: list[dict[str, Any]] = [{"site": i, "species": el} for i, el in enumerate(species)]
    if isinstance(cs_dir, dict):  # already computed (CP2K): {"sites": [...]}
        for doc, cs in zip(sites, cs_dir["sites"], strict=True):
            doc.update(cs)
    elif cs_dir:
        for doc, cs in zip(sites, vasp_shielding(_outcar(cs_dir), species), strict=True):
            doc.update(cs)
    if isinstance(efg_dir, dict):  # already computed (ABINIT): {"sites": [...]}
        for doc, efg in zip(sites, efg_dir["sites"], strict=True):
            doc.update(efg)
    elif efg_dir:
        for doc, efg in zip(sites, vasp_efg(_outcar(efg_dir), species, isotopes), strict=True):
            doc.update(efg)
    refs: dict[str, dict[str, float]] = {}
    for el, ref in (reference_results or {}).items():
        sigma_ref = sigma_reference_from_compound(ref["result"]["sites"], el, ref["delta_exp_ppm"])
        refs[el] = {"sigma_ref_ppm": sigma_ref}
    refs.update({el: {"sigma_ref_ppm": v} for el, v in (shift_references_ppm or {}).items()})
    sites = reference_shifts(sites, refs)
    if environment_species:
        for doc in sites:
            doc["environment"] = environment_label(s, doc["site"], environment_species, environment_cutoff_A)
    return {"label": label, "sites": sites, "structure": s.as_dict(), "line_fwhm_ppm": line_fwhm_ppm}


def nmr_flow(
    spec: CampaignSpec,
    nmr: NMRStage,
    structure: Any,
    label: str,
    reference_results: dict[str, Any] | None = None,
    /,
    **metadata: Any,
) -> Flow:
    """Build the NMR runs of one structure on the stage's engine, then one collect job (the output).

    The engine's runs are tagged with their own stage (``nmr_cs``/``nmr_efg``); the collect job
    with ``nmr``. ``metadata`` (campaign, system, ordering, ...) goes on every job.
    """
    from jobflow import Flow

    engine, settings = engine_for(spec, nmr)
    runs = engine.nmr(structure, settings, label)
    coll = collect_nmr(
        structure,
        runs.output["cs"],
        runs.output["efg"],
        list(nmr.isotopes),
        label,
        dict(nmr.shift_references_ppm),
        list(nmr.environment_species),
        nmr.environment_cutoff_A,
        nmr.line_fwhm_ppm,
        reference_results or None,
    )
    coll.name = f"{label} nmr"
    jobs = [staged(runs, "nmr", **metadata), staged(coll, "nmr", **metadata)]
    return Flow(jobs, output=coll.output, name=f"{label} nmr")


def reference_flow(campaign: Campaign) -> tuple[Flow | None, dict[str, Any]]:
    """NMR of the shift-reference compounds (``configs/nmr/references.yaml``), once per campaign.

    Each compound from ``configs/phases`` is relaxed like the systems (when there is a relax
    stage) and computed with the same NMR engine and settings. Returns the flow and
    element -> ``{"result": collect-job output, "delta_exp_ppm": ..., "compound": ...}``.
    """
    from jobflow import Flow
    from ruamel.yaml import YAML

    from superionic.paths import configs_dir
    from superionic.spec.models import NMRStage, RelaxStage
    from superionic.stages.relax import relax_flow
    from superionic.structures.phases import build_phase

    spec = campaign.spec
    stages = {s.stage: s for s in spec.stages}
    nmr = stages.get("nmr")
    if not isinstance(nmr, NMRStage) or not nmr.reference_compounds:
        return None, {}
    refs = YAML(typ="safe").load((configs_dir() / "nmr" / "references.yaml").read_text())
    elements = sorted({el for s in campaign.systems for el in s.elements} & set(refs))
    meta = {"campaign": spec.name, "system": "nmr references"}
    jobs: list[Any] = []
    results: dict[str, Any] = {}
    relax = stages.get("relax")
    for el in elements:
        compound = refs[el]["compound"]
        structure: Any = build_phase(compound)
        if isinstance(relax, RelaxStage):
            rflow = relax_flow(spec, relax, structure, f"reference {compound} relax")
            jobs.append(staged(rflow, "relax", **meta))
            structure = rflow.output["structure"]
        flow = nmr_flow(spec, nmr, structure, f"reference {compound}", **meta)
        coll = flow.jobs[-1]
        coll.metadata["stage"] = "nmr_reference"
        jobs.append(flow)
        results[el] = {
            "result": flow.output,
            "delta_exp_ppm": float(refs[el]["delta_exp_ppm"]),
            "compound": compound,
        }
    return Flow(jobs, name=f"{spec.name}:nmr references"), results


def __getattr__(name: str) -> Any:
    # the CP2K and ABINIT NMR jobs moved to their engines (engines import no stage); fireworks
    # stored before the move name this module, so the old names keep resolving
    if name == "cp2k_nmr":
        from superionic.engines.cp2k_nmr import cp2k_nmr

        return cp2k_nmr
    if name == "abinit_efg_job":
        from superionic.engines.abinit import abinit_efg_job

        return abinit_efg_job
    raise AttributeError(name)
