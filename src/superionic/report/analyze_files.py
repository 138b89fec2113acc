"""The files `superionic analyze` reads and writes: result JSON, NMR site tables, local-structure tables.

- ``analyze diffusion`` / ``rotation`` / ``arrhenius`` write their result as JSON
  (:func:`write_json`); ``analyze arrhenius`` reads the diffusion JSON back
  (:func:`read_diffusion_results`).
- ``analyze nmr`` writes one CSV row per site (:func:`write_cp2k_shift_csv`,
  :func:`vasp_nmr_rows`, :func:`write_site_csv`).
- ``analyze structure`` writes summary.csv, rdf.csv, angles.csv and rdf.png
  (:func:`read_frames`, :func:`write_local_structure`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from superionic.errors import SuperionicError

# what `analyze arrhenius` needs of each `analyze diffusion` result
DIFFUSION_KEYS = (
    "temperature_K",
    "diffusivity_cm2_s",
    "diffusivity_err_cm2_s",
    "conductivity_mS_cm",
    "conductivity_err_mS_cm",
)


def write_json(path: Path, doc: Mapping[str, Any], allow_nan: bool = True) -> None:
    """Write an analysis result as indented JSON.

    Parameters
    ----------
    path : Path
        Output file.
    doc : mapping
        The result (JSON-serialisable).
    allow_nan : bool
        Whether NaN/inf may be written (as the non-standard ``NaN``/``Infinity``); if not, such a
        value raises ``ValueError``.

    """
    path.write_text(json.dumps(doc, indent=1, allow_nan=allow_nan))


def read_diffusion_results(files: Sequence[Path]) -> list[dict[str, Any]]:
    """Read the JSON results of ``superionic analyze diffusion``, checking the fields a fit needs.

    Parameters
    ----------
    files : sequence of Path
        JSON files written by ``analyze diffusion --out``.

    Returns
    -------
    list of dict
        One result per file, in order.

    Raises
    ------
    DiffusionInputError
        Naming the file that is unreadable, not a JSON object, or lacks a numeric field of
        :data:`DIFFUSION_KEYS`.

    """
    from superionic.analysis.diffusion import DiffusionInputError

    results = []
    for f in files:
        try:
            results.append(json.loads(Path(f).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise DiffusionInputError(f"{f}: not a diffusion JSON ({exc})") from None
    for f, r in zip(files, results, strict=True):
        if not isinstance(r, dict):
            raise DiffusionInputError(f"{f}: not a diffusion JSON (a {type(r).__name__}, not an object)")
        missing = [k for k in DIFFUSION_KEYS if k not in r]
        if missing:
            raise DiffusionInputError(f"{f}: missing {', '.join(missing)} (not from analyze diffusion?)")
        bad = next(
            (k for k in DIFFUSION_KEYS if not isinstance(r[k], int | float) or isinstance(r[k], bool)), None
        )
        if bad is not None:
            raise DiffusionInputError(f"{f}: {bad} is not a number (got {r[bad]!r})")
    return results


def write_cp2k_shift_csv(shift_file: Path, isotopes: Sequence[str], out: Path) -> int:
    """Write the shielding per site of a CP2K NMR run (its ``*-SHIFT-1.data``) as CSV.

    Parameters
    ----------
    shift_file : Path
        CP2K's ``<project>-SHIFT-1.data`` (it carries the species itself).
    isotopes : sequence of str
        Isotopes named by the user (from ``parse_isotopes``); other elements get the default one.
    out : Path
        Output CSV: site, species, isotope, sigma_iso_ppm, sigma_aniso_ppm, sigma_eta,
        cp2k_printed_iso_ppm.

    Returns
    -------
    int
        The number of sites written.

    """
    from superionic.analysis.nmr import default_isotope
    from superionic.engines.cp2k_nmr import parse_shift_file

    docs = parse_shift_file(shift_file)
    keys = [
        "site",
        "species",
        "isotope",
        "sigma_iso_ppm",
        "sigma_aniso_ppm",
        "sigma_eta",
        "cp2k_printed_iso_ppm",
    ]
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for d in docs:
            w.writerow({**d, "isotope": default_isotope(d["species"], isotopes)})
    return len(docs)


def vasp_nmr_rows(
    outcar: Path, species: Sequence[str], isotopes: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-site rows of a VASP NMR OUTCAR: shielding and/or EFG, without the full tensors.

    Parameters
    ----------
    outcar : Path
        OUTCAR (or .gz) of an LCHIMAG and/or LEFG run.
    species : sequence of str
        Element per site, in the run's order.
    isotopes : sequence of str
        Isotopes named by the user; other elements get the default one.

    Returns
    -------
    rows : list of dict
        One row per site: site, species, isotope, then the CS and/or EFG values.
    found : list of str
        Which outputs the OUTCAR held: ``"cs"``, ``"efg"`` (empty when neither).

    Raises
    ------
    SiteCountError
        When the OUTCAR's tensors are for another number of sites than ``species``.

    """
    from superionic.analysis.nmr import SiteCountError, default_isotope, vasp_efg, vasp_shielding

    rows: list[dict] = [
        {"site": i, "species": el, "isotope": default_isotope(el, isotopes)} for i, el in enumerate(species)
    ]
    found = []
    for name, reader in (
        ("cs", lambda: vasp_shielding(outcar, species)),
        ("efg", lambda: vasp_efg(outcar, species, isotopes)),
    ):
        try:
            docs = reader()
        except SiteCountError:
            raise  # the tensors are there, for another structure: say so, not "no output"
        except SuperionicError:
            continue
        found.append(name)
        for row, doc in zip(rows, docs, strict=True):
            row.update(
                {
                    k: v
                    for k, v in doc.items()
                    if not k.endswith("tensor_ppm") and not k.endswith("tensor_V_A2")
                }
            )
    return rows, found


def write_site_csv(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write per-site rows as CSV, the union of their keys as columns; lists as space-separated numbers.

    Parameters
    ----------
    out : Path
        Output CSV.
    rows : sequence of mapping
        One row per site (from :func:`vasp_nmr_rows`).

    """
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: (r.get(k) if not isinstance(r.get(k), list) else " ".join(f"{x:.6g}" for x in r[k]))
                    for k in keys
                }
            )


def read_frames(path: Path, every: int = 1) -> list[Any]:
    """Read one structure, or every ``every``-th frame of a trajectory (recognised by its name).

    Parameters
    ----------
    path : Path
        CIF/POSCAR, or a trajectory whose name holds vasprun, XDATCAR, .traj, .extxyz, .xyz or .npy.
    every : int
        For a trajectory: keep every N-th frame.

    Returns
    -------
    list of Structure
        The frames.

    """
    name = path.name.lower()
    if any(t in name for t in ("vasprun", "xdatcar", ".traj", ".extxyz", ".xyz", ".npy")):
        from superionic.analysis.trajectory_io import read_trajectory

        traj = read_trajectory(path)
        return [traj.structure_at(k) for k in range(0, traj.n_frames, max(1, every))]
    from pymatgen.core import Structure

    return [Structure.from_file(str(path))]


def write_local_structure(
    out: Path,
    frames: Sequence[Any],
    center: str,
    ligands: Sequence[str],
    cutoff_A: float,
    shape: str | None = None,
) -> list[dict[str, Any]]:
    """Analyse the polyhedra of each frame and write the tables and the plot into ``out``.

    Parameters
    ----------
    out : Path
        Output folder (created).
    frames : sequence of Structure
        The frames to analyse.
    center : str
        Polyhedron centre element.
    ligands : sequence of str
        Ligand elements; the first one is used for CSM and bond angles.
    cutoff_A : float
        Centre-ligand bond cutoff (A).
    shape : str, optional
        ``octahedron`` or ``tetrahedron``; by default from the coordination number (a CSM that
        cannot be computed is then noted in the row, not raised).

    Returns
    -------
    list of dict
        One row per frame, as in summary.csv: frame, cn_<ligand>, bond_<ligand>_A, csm_mean,
        csm_std, csm_n (or csm_note), <kind>_sharing fractions and corner_via_<element>.

    Notes
    -----
    Writes summary.csv (the rows), rdf.csv (centre-centre and centre-ligand g(r), averaged over
    frames), angles.csv (ligand-centre-ligand angles, deg) and rdf.png (g(r) and the angle
    histogram).

    """
    import numpy as np

    from superionic.analysis.local_structure import (
        bond_angles,
        connectivity,
        coordination,
        polyhedra_csm,
        rdf,
    )

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, s in enumerate(frames):
        row: dict[str, Any] = {"frame": k}
        for lig in ligands:
            c = coordination(s, center, lig, cutoff_A)
            row[f"cn_{lig}"], row[f"bond_{lig}_A"] = c["cn_mean"], c["bond_length_mean_A"]
        try:
            cs = polyhedra_csm(s, center, ligands[0], cutoff_A, shape)
            row.update(csm_mean=cs["csm_mean"], csm_std=cs["csm_std"], csm_n=cs["n"])
        except SuperionicError as exc:
            if shape:
                raise
            row["csm_note"] = exc.problems[0].message
        conn = connectivity(s, center, list(ligands), cutoff_A)
        row.update({f"{kind}_sharing": v for kind, v in conn["fractions"].items()})
        row.update({f"corner_via_{el}": v for el, v in conn["corner_bridges"].items()})
        rows.append(row)
    keys = list(dict.fromkeys(key for r in rows for key in r))
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)
    pairs = [(center, center)] + [(center, lig) for lig in ligands]
    curves = {f"{a}-{b}": rdf(frames, a, b, r_max=8.0, bin_A=0.05) for a, b in pairs}
    r_axis = next(iter(curves.values()))["r_A"]
    with open(out / "rdf.csv", "w", newline="") as fh:
        w2 = csv.writer(fh)
        w2.writerow(["r_A", *curves])
        for n, r in enumerate(r_axis):
            w2.writerow([f"{r:.3f}", *(f"{c['g'][n]:.5f}" for c in curves.values())])
    angles = [a for s in frames for a in bond_angles(s, center, ligands[0], cutoff_A)]
    np.savetxt(
        out / "angles.csv",
        np.array(angles),
        fmt="%.3f",
        header=f"{ligands[0]}-{center}-{ligands[0]} angle (deg)",
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, c in curves.items():
        axes[0].plot(c["r_A"], c["g"], label=name)
    axes[0].set_xlabel("r (A)")
    axes[0].set_ylabel("g(r)")
    axes[0].legend()
    axes[1].hist(angles, bins=90, range=(0, 180))
    axes[1].set_xlabel(f"{ligands[0]}-{center}-{ligands[0]} angle (deg)")
    fig.tight_layout()
    fig.savefig(out / "rdf.png", dpi=130)
    plt.close(fig)
    return rows
