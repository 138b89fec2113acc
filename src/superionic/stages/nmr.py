"""NMR stage jobs: read the engine's NMR outputs into one document shape per site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobflow import job
from pymatgen.core import Structure

from superionic.analysis.nmr import (
    environment_label,
    reference_shifts,
    sigma_reference_from_compound,
    vasp_efg,
    vasp_shielding,
)


def _outcar(dir_name: str) -> Path:
    folder = Path(str(dir_name).split(":", 1)[-1])  # atomate2 dir_name is "host:/path"
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


@job
def cp2k_nmr(
    structure: Structure | dict,
    label: str,
    efg: bool = False,
    min_cell_A: float = 10.0,
    cutoff_Ry: float = 300.0,
) -> dict[str, Any]:
    """CP2K GAPW shielding of one structure (Gamma point only; see :mod:`superionic.engines.cp2k_nmr`).

    With ``efg``, the EFG canary runs first and refuses a CP2K build that computes wrong tensors.
    """
    from superionic.engines.cp2k_nmr import cp2k_shielding, require_trustworthy_efg

    s = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
    here = Path.cwd()
    if efg:
        require_trustworthy_efg(here / "efg_canary")
    sites = cp2k_shielding(s, here / "cp2k_nmr", min_cell_A=min_cell_A, cutoff_Ry=cutoff_Ry)
    return {"label": label, "sites": sites, "structure": s.as_dict(), "engine": "cp2k"}


@job
def abinit_efg_job(
    structure: Structure | dict, isotopes: list[str], settings: dict[str, Any]
) -> dict[str, Any]:
    """ABINIT PAW EFG of one structure (``prtefg 2``); see :mod:`superionic.engines.abinit`."""
    from superionic.engines.abinit import abinit_efg

    s = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
    kwargs = {
        k: float(settings[k]) for k in ("ecut_Ha", "pawecutdg_Ha", "kpoint_spacing_per_A") if k in settings
    }
    return {"sites": abinit_efg(s, Path.cwd() / "abinit_efg", list(isotopes), **kwargs), "engine": "abinit"}
