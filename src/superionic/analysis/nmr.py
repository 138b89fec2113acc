"""NMR parameters from engine outputs: shielding, EFG, quadrupolar couplings, shifts, spectra.

No jobflow imports. One document shape per site, whatever the engine (:func:`site_document`):

- ``sigma_tensor_ppm`` (3x3), ``sigma_iso_ppm``; Haeberlen convention for the anisotropy:
  principal values ordered |s_zz - s_iso| >= |s_xx - s_iso| >= |s_yy - s_iso|,
  ``sigma_aniso_ppm`` = s_zz - (s_xx + s_yy)/2, ``sigma_eta`` = (s_yy - s_xx)/(s_zz - s_iso);
- ``efg_tensor_V_A2`` (3x3, V/A^2), ``efg_principal_V_A2`` ordered |Vxx| <= |Vyy| <= |Vzz|,
  ``cq_mhz`` = e Q Vzz / h (signed, Q from ``configs/nmr/quadrupole_moments.yaml``, in mb),
  ``eta_q`` = (Vxx - Vyy)/Vzz in [0, 1].
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from ruamel.yaml import YAML
from scipy import constants as sc

from superionic.errors import SuperionicError
from superionic.paths import configs_dir

E_CHARGE = sc.e  # C
H_PLANCK = sc.h  # J s
MILLIBARN_M2 = sc.milli * 1e-28  # 1 mb = 1e-31 m^2 (scipy.constants has no barn)
# C_Q (MHz) = e * Q[mb] * 1e-31 m^2 * Vzz[V/A^2] * 1e20 / h / 1e6
CQ_MHZ_PER_MB_V_A2 = E_CHARGE * MILLIBARN_M2 / sc.angstrom**2 / H_PLANCK / sc.mega


@lru_cache(maxsize=1)
def quadrupole_table() -> dict[str, Any]:
    """Isotope -> quadrupole moment (mb) and each element's default NMR isotope."""
    return dict(YAML(typ="safe").load((configs_dir() / "nmr" / "quadrupole_moments.yaml").read_text()))


# "Li-6", "Li6" or "6Li" (any case)
_ISOTOPE = re.compile(r"^\s*(?:(?P<m1>\d+)-?(?P<e1>[A-Za-z]{1,3})|(?P<e2>[A-Za-z]{1,3})-?(?P<m2>\d+))\s*$")


def _split_isotope(text: str) -> tuple[str, int] | None:
    m = _ISOTOPE.match(str(text))
    if m is None:
        return None
    return (m["e1"] or m["e2"]).capitalize(), int(m["m1"] or m["m2"])


def known_isotopes(element: str) -> list[str]:
    """NMR isotopes of an element we know: ``configs/nmr/quadrupole_moments.yaml`` and pymatgen.

    The table's moments, spin-1/2 list and default isotope, and the isotopes pymatgen's
    ``Element.nmr_quadrupole_moment`` knows, sorted by mass.
    """
    from pymatgen.core import Element

    table = quadrupole_table()
    listed = [*table["moments_mb"], *table.get("spin_half", [])]
    names = {iso for iso in listed if iso.split("-")[0] == element}
    if element in table["default_isotopes"]:
        names.add(table["default_isotopes"][element])
    if Element.is_valid_symbol(element):
        names |= set(Element(element).nmr_quadrupole_moment)
    return sorted(names, key=lambda name: int(name.split("-")[1]))


def parse_isotopes(texts: Sequence[str], where: str = "isotope") -> list[str]:
    """Normalise isotopes written ``Li-6``, ``Li6`` or ``6Li`` to ``Li-6``, refusing unknown ones.

    Parameters
    ----------
    texts : sequence of str
        The isotopes as the user wrote them.
    where : str
        The option or field named in errors (e.g. ``--isotope``).

    Returns
    -------
    list of str
        ``ELEMENT-MASS`` names, at most one per element.

    Raises
    ------
    SuperionicError
        Unreadable text, an unknown element or isotope (listing the element's known isotopes),
        or two isotopes of one element.
    """
    chosen: dict[str, str] = {}
    for text in texts:
        split = _split_isotope(text)
        if split is None:
            raise SuperionicError.single(
                where, "expected an isotope such as Li-6, Li6 or 6Li", text, "ELEMENT-MASS, e.g. B-11"
            )
        element, mass = split
        valid = known_isotopes(element)
        if not valid:
            from pymatgen.core import Element

            if not Element.is_valid_symbol(element):
                raise SuperionicError.single(
                    where, f"'{element}' is not an element", text, "an element and a mass number, e.g. B-11"
                )
            raise SuperionicError.single(
                where,
                f"no NMR isotope of {element} is known",
                text,
                f"add {element}'s isotopes to configs/nmr/quadrupole_moments.yaml",
            )
        name = f"{element}-{mass}"
        if name not in valid:
            raise SuperionicError.single(
                where,
                f"unknown isotope of {element}",
                text,
                ", ".join(valid) + " (configs/nmr/quadrupole_moments.yaml, pymatgen)",
            )
        if chosen.get(element, name) != name:
            raise SuperionicError.single(
                where,
                f"{chosen[element]} and {name} both given for {element}",
                text,
                "one isotope per element",
            )
        chosen[element] = name
    return list(chosen.values())


def default_isotope(element: str, isotopes: Sequence[str] = ()) -> str:
    """Isotope of an element: the one named in ``isotopes`` (``Li-6``, ``Li6``, ``6Li``), else the default."""
    for iso in isotopes:
        split = _split_isotope(iso)
        if split is not None and split[0] == element:
            return f"{element}-{split[1]}"
    table = quadrupole_table()
    return table["default_isotopes"].get(element, f"{element}-?")


def quadrupole_moment_or_none(isotope: str) -> float | None:
    """Quadrupole moment (mb) from our table, else pymatgen's; None for spin 1/2 or unknown isotopes."""
    table = quadrupole_table()
    if isotope in table["moments_mb"]:
        return float(table["moments_mb"][isotope])
    if isotope in table.get("spin_half", []):  # pymatgen lists some isomers' moments under these names
        return None
    from pymatgen.core import Element

    element = isotope.split("-")[0]
    if Element.is_valid_symbol(element):
        q = Element(element).nmr_quadrupole_moment.get(isotope)
        if q is not None:
            return float(q)
    return None


def quadrupole_moment_mb(isotope: str) -> float:
    """Nuclear quadrupole moment (mb) of an isotope such as ``"B-11"``.

    Raises
    ------
    SuperionicError
        For an unknown isotope or a spin-1/2 one (no quadrupole moment).
    """
    moments = quadrupole_table()["moments_mb"]
    q = quadrupole_moment_or_none(isotope)
    if q is None:
        known = ", ".join(sorted(moments))
        raise SuperionicError.single(
            "isotope",
            "no quadrupole moment for this isotope (spin 1/2, or not in the table)",
            isotope,
            f"one of {known} (configs/nmr/quadrupole_moments.yaml)",
        )
    return q


def efg_parameters(tensor_V_A2: Any, q_mb: float) -> dict[str, Any]:
    """Principal components, C_Q (MHz, signed) and eta_Q of an EFG tensor (symmetrised first)."""
    t = np.asarray(tensor_V_A2, dtype=float)
    t = 0.5 * (t + t.T)
    w = np.linalg.eigvalsh(t)
    vxx, vyy, vzz = sorted(w, key=abs)
    eta = 0.0 if abs(vzz) < 1e-12 else float(np.clip((vxx - vyy) / vzz, 0.0, 1.0))
    return {
        "efg_tensor_V_A2": t.tolist(),
        "efg_principal_V_A2": [float(vxx), float(vyy), float(vzz)],
        "cq_mhz": float(CQ_MHZ_PER_MB_V_A2 * q_mb * vzz),
        "eta_q": eta,
    }


def shielding_parameters(tensor_ppm: Any) -> dict[str, Any]:
    """Isotropic shielding and Haeberlen anisotropy/asymmetry of a shielding tensor."""
    t = np.asarray(tensor_ppm, dtype=float)
    w = np.linalg.eigvalsh(0.5 * (t + t.T))
    iso = float(np.trace(t) / 3.0)
    zz, xx, yy = sorted(w, key=lambda v: -abs(v - iso))
    zeta = zz - iso
    return {
        "sigma_tensor_ppm": t.tolist(),
        "sigma_iso_ppm": iso,
        "sigma_aniso_ppm": float(zz - 0.5 * (xx + yy)),
        "sigma_eta": 0.0 if abs(zeta) < 1e-12 else float(abs((yy - xx) / zeta)),
    }


class SiteCountError(SuperionicError):
    """An OUTCAR holds NMR tensors, for a different number of sites than the structure given."""


OUTCAR_KIND = "a VASP OUTCAR"


def describe_output(path: Path) -> str:
    """Say what a (possibly compressed) file looks like, from its first 4 kB.

    Returns :data:`OUTCAR_KIND` for a VASP OUTCAR, else a short description ("a vasprun.xml
    (VASP's XML output)", "an XDATCAR (VASP MD trajectory)", ...) for error messages. pymatgen's
    ``Outcar`` parses any text without complaint, so the header is checked here.
    """
    from monty.io import zopen

    try:
        with zopen(str(path), "rb") as fh:
            head = fh.read(4096)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        return f"an unreadable file ({exc})"
    if not head.strip():
        return "an empty file"
    if b"\0" in head:
        return "a binary file (WAVECAR, CHGCAR-like or an archive?)"
    text = head.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines()]
    if lines[0].lower().startswith("vasp.") or ("executed on" in text and "POTCAR:" in text):
        return OUTCAR_KIND
    if "<modeling>" in text:
        return "a vasprun.xml (VASP's XML output)"
    if text.lstrip().startswith("<?xml"):
        return "an XML file"
    if "Direct configuration=" in text or "Cartesian configuration=" in text:
        return "an XDATCAR (VASP MD trajectory)"
    if "CP2K|" in text or "DBCSR|" in text or "PROGRAM STARTED AT" in text:
        return "a CP2K output log (give the run's *-SHIFT-1.data, or its folder)"
    if "_cell_length_a" in text or re.search(r"^data_", text, re.MULTILINE):
        return "a CIF (a structure, not an output)"
    if ".Version" in text and "abinit" in text.lower():
        return "an ABINIT output"
    try:  # a POSCAR: comment, scale, then three lattice vectors
        float(lines[1].split()[0])
        if all(len([float(x) for x in ln.split()[:3]]) == 3 for ln in lines[2:5]) and len(lines) > 5:
            return "a POSCAR/CONTCAR (a structure, not an output)"
    except (ValueError, IndexError):
        pass
    return "an unrecognised text file"


def _outcar(path: Path) -> Any:
    from pymatgen.io.vasp import Outcar

    try:
        return Outcar(str(path))
    except Exception as exc:
        raise SuperionicError.single(
            str(path), f"cannot read OUTCAR ({exc})", str(path), "a VASP OUTCAR"
        ) from exc


def _read_outcar_tensors(
    outcar: Path, readers: Sequence[str], key: str, n_sites: int, what: str, valid: str
) -> tuple[Any, list]:
    """Run pymatgen's Outcar readers and return (outcar, per-site tensors), or a clear error."""
    o = _outcar(outcar)
    try:
        for reader in readers:
            getattr(o, reader)()
    except Exception as exc:
        raise SuperionicError.single(
            str(outcar), f"no {what} in this OUTCAR ({exc})", str(outcar), valid
        ) from exc
    tensors = o.data.get(key) or []
    if tensors and len(tensors) != n_sites:
        raise SiteCountError.single(
            str(outcar),
            f"{len(tensors)} sites carry {what} tensors but the structure has {n_sites}",
            len(tensors),
            "the POSCAR/CONTCAR of this very run (--structure FILE)",
        )
    if not tensors:
        raise SuperionicError.single(
            str(outcar), f"no per-site {what} tensors", 0, f"{n_sites} sites from {valid}"
        )
    return o, tensors


def vasp_shielding(outcar: Path, species: Sequence[str]) -> list[dict[str, Any]]:
    """Per-site shielding from a VASP LCHIMAG OUTCAR (valence tensor + G=0 + core contributions).

    Returns one document per site with ``vasp_printed_iso_ppm``, the isotropic shielding VASP
    printed in its symmetrised-tensor table (valence + G=0 term); ``sigma_iso_ppm`` adds the core
    contribution to it and reproduces it when that is zero.
    """
    o, tensors = _read_outcar_tensors(
        outcar,
        ("read_chemical_shielding", "read_cs_g0_contribution", "read_cs_core_contribution"),
        "unsym_cs_tensor",
        len(species),
        "chemical shielding",
        "an LCHIMAG = True run",
    )
    printed = o.data.get("chemical_shielding", {}).get("valence_only") or []
    g0 = np.asarray(o.data.get("cs_g0_contribution") or np.zeros((3, 3)), dtype=float)
    core = o.data.get("cs_core_contribution") or {}
    docs = []
    for i, (el, t) in enumerate(zip(species, tensors, strict=True)):
        total = np.asarray(t, dtype=float) + g0 + np.eye(3) * float(core.get(el, 0.0))
        doc = {"site": i, "species": el, **shielding_parameters(total)}
        if i < len(printed):
            doc["vasp_printed_iso_ppm"] = float(printed[i][0])
        docs.append(doc)
    return docs


def vasp_efg(outcar: Path, species: Sequence[str], isotopes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per-site EFG from a VASP LEFG OUTCAR, with C_Q from our quadrupole table.

    Each document also carries what VASP printed itself (``vasp_cq_mhz``, ``vasp_eta``, and the
    moment it used, ``vasp_q_mb``) so the two can be compared.
    """
    o, tensors = _read_outcar_tensors(
        outcar,
        ("read_nmr_efg_tensor", "read_nmr_efg"),
        "unsym_efg_tensor",
        len(species),
        "EFG",
        "an LEFG = True run",
    )
    printed = o.data.get("efg") or []
    docs = []
    for i, (el, t) in enumerate(zip(species, tensors, strict=True)):
        iso = default_isotope(el, isotopes)
        q = quadrupole_moment_or_none(iso)
        doc: dict[str, Any] = {"site": i, "species": el, "isotope": iso}
        doc.update(efg_parameters(t, q if q is not None else 0.0))
        if q is None:
            doc["cq_mhz"] = None  # spin-1/2 or unknown: no quadrupolar coupling
        if i < len(printed):
            doc.update(
                vasp_cq_mhz=float(printed[i]["cq"]),
                vasp_eta=float(printed[i]["eta"]),
                vasp_q_mb=float(printed[i]["nuclear_quadrupole_moment"]),
            )
        docs.append(doc)
    return docs


def reference_shifts(
    sites: list[dict[str, Any]], references: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """Add ``delta_iso_ppm`` = sigma_ref - sigma_iso to each site with a reference for its element.

    ``references``: element -> ``{"sigma_ref_ppm": ...}`` or, for a linear fit over several
    references, ``{"slope": m, "intercept_ppm": b}`` with delta = b + m * sigma_iso (m about -1).
    """
    out = []
    for s in sites:
        s = dict(s)
        ref = references.get(s["species"])
        if ref is not None and s.get("sigma_iso_ppm") is not None:
            if "sigma_ref_ppm" in ref:
                s["delta_iso_ppm"] = float(ref["sigma_ref_ppm"]) - s["sigma_iso_ppm"]
            else:
                s["delta_iso_ppm"] = float(ref["intercept_ppm"]) + float(ref["slope"]) * s["sigma_iso_ppm"]
        out.append(s)
    return out


def sigma_reference_from_compound(
    reference_sites: list[dict[str, Any]], element: str, delta_exp_ppm: float
) -> float:
    """sigma_ref such that the reference compound's mean computed shielding sits at its experimental shift."""
    vals = [s["sigma_iso_ppm"] for s in reference_sites if s["species"] == element]
    if not vals:
        raise SuperionicError.single(
            "nmr reference", f"the reference compound has no {element}", element, "a compound containing it"
        )
    return float(np.mean(vals) + delta_exp_ppm)


def ensemble_spectrum(
    shifts_ppm: Sequence[float],
    grid_ppm: np.ndarray,
    fwhm_ppm: float = 1.0,
    shape: str = "lorentzian",
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Sum of unit-area lines at ``shifts_ppm`` on ``grid_ppm`` (all sites of all orderings)."""
    x = np.asarray(grid_ppm, dtype=float)[:, None]
    c = np.asarray(shifts_ppm, dtype=float)[None, :]
    w = np.ones(c.shape[1]) if weights is None else np.asarray(weights, dtype=float)
    if shape == "lorentzian":
        g = fwhm_ppm / 2.0
        lines = g / np.pi / ((x - c) ** 2 + g**2)
    elif shape == "gaussian":
        s = fwhm_ppm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        lines = np.exp(-0.5 * ((x - c) / s) ** 2) / (s * np.sqrt(2.0 * np.pi))
    else:
        raise SuperionicError.single("shape", "unknown line shape", shape, "lorentzian or gaussian")
    return lines @ w


def environment_label(structure: Any, index: int, neighbours: Sequence[str], cutoff_A: float = 3.5) -> str:
    """Label a site by how many of each neighbour species lie within ``cutoff_A`` (e.g. ``Li2-B3``)."""
    counts = {n: 0 for n in neighbours}
    for nb in structure.get_neighbors(structure[index], cutoff_A):
        sym = nb.specie.symbol
        if sym in counts:
            counts[sym] += 1
    return "-".join(f"{k}{v}" for k, v in counts.items())


def find_peaks_ppm(grid_ppm: np.ndarray, spectrum: np.ndarray) -> list[float]:
    """Positions of the local maxima of a spectrum."""
    y = np.asarray(spectrum)
    idx = [i for i in range(1, len(y) - 1) if y[i] > y[i - 1] and y[i] >= y[i + 1]]
    return [float(grid_ppm[i]) for i in idx]


def plot_spectrum(grid_ppm: np.ndarray, spectrum: np.ndarray, nucleus: str, path: Path) -> Path:
    """Plot an ensemble spectrum with the NMR convention (shift increasing to the left)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(grid_ppm, spectrum, lw=1.2)
    ax.set_xlim(float(np.max(grid_ppm)), float(np.min(grid_ppm)))
    ax.set_xlabel(f"{nucleus} shift (ppm)")
    ax.set_ylabel("intensity (a.u.)")
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
