"""Rigid polyanions: order a molecular anion as one pseudo-site, then re-expand it.

During ordering a unit such as BH4- or NH2- is represented by its central atom carrying the
unit's charge. :func:`expand_polyanions` then puts the ligands back with a fixed geometry
(B-H 1.21 A tetrahedral; N-H 1.02 A, H-N-H 104 deg) and an orientation that is either random
(seeded) or aligned with the cubic site symmetry, retrying random orientations until no ligand is
closer than ``clash_A`` to any other atom.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymatgen.core import Structure
from scipy.spatial.transform import Rotation

from superionic.errors import StructureError

_TETRA = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float) / np.sqrt(3)


def polyanion_library() -> dict[str, dict[str, Any]]:
    """Return the rigid units of ``configs/polyanions.yaml`` (name -> centre, ligand, bond, charge...)."""
    from ruamel.yaml import YAML

    from superionic.paths import configs_dir

    return YAML(typ="safe").load((configs_dir() / "polyanions.yaml").read_text())


def unit_vectors(spec: dict[str, Any]) -> np.ndarray:
    """Return the ligand directions (unit vectors) of a polyanion in its reference orientation.

    Parameters
    ----------
    spec : dict
        ``geometry`` (``tetrahedral``, ``bent``, ``linear``), ``count``, and for ``bent`` the
        ``angle_deg``.
    """
    geometry = spec.get("geometry", "tetrahedral")
    if geometry == "tetrahedral":
        return _TETRA.copy()
    if geometry == "bent":
        half = np.radians(float(spec.get("angle_deg", 104.0))) / 2
        return np.array([[np.sin(half), 0, np.cos(half)], [-np.sin(half), 0, np.cos(half)]])
    if geometry == "linear":
        return np.array([[0, 0, 1.0], [0, 0, -1.0]])
    raise StructureError.single(
        "polyanions.geometry", "unknown geometry", geometry, "tetrahedral, bent or linear"
    )


def expand_polyanions(
    structure: Structure,
    polyanions: dict[str, dict[str, Any]],
    seed: int = 0,
    orientation: str = "random",
    clash_A: float = 1.6,
    max_tries: int = 500,
) -> Structure:
    """Add the ligands of every polyanion centre in ``structure``.

    Parameters
    ----------
    structure : Structure
        Ordered structure whose polyanions are represented by their central atoms.
    polyanions : dict
        Central element -> ``{ligand, count, bond_A, geometry, angle_deg?}``.
    seed : int
        Seed for random orientations.
    orientation : str
        ``random`` or ``aligned`` (reference orientation, e.g. BH4 H along <111>).
    clash_A : float
        Minimum distance between a ligand and any atom outside its own unit.
    max_tries : int
        Random orientations tried per unit before giving up.

    Returns
    -------
    Structure
        A new structure with the ligands added (site property ``polyanion`` = index of the
        unit for its atoms, -1 elsewhere).

    Raises
    ------
    StructureError
        When no clash-free orientation is found for a unit.
    """
    if not polyanions:
        return structure.copy()
    rng = np.random.default_rng(seed)
    out = structure.copy()
    out.remove_site_property("polyanion") if "polyanion" in out.site_properties else None
    unit_id = [-1] * len(out)
    centres = [i for i, site in enumerate(structure) if site.specie.symbol in polyanions]
    for n_unit, i in enumerate(centres):
        spec = polyanions[structure[i].specie.symbol]
        ref = unit_vectors(spec)
        centre = structure[i].coords
        others = np.array([s.coords for j, s in enumerate(out) if j != i])
        placed = False
        for attempt in range(max_tries):
            if orientation == "aligned" and attempt == 0:
                rot = np.eye(3)
            else:
                rot = Rotation.random(random_state=rng.integers(2**31)).as_matrix()
            ligands = centre + float(spec["bond_A"]) * ref @ rot.T
            if len(others):
                frac = out.lattice.get_fractional_coords(ligands)
                other_frac = out.lattice.get_fractional_coords(others)
                d = out.lattice.get_all_distances(frac, other_frac)
                if d.min() < clash_A:
                    continue
            for pos in ligands:
                out.append(spec["ligand"], pos, coords_are_cartesian=True)
                unit_id.append(n_unit)
            unit_id[i] = n_unit
            placed = True
            break
        if not placed:
            raise StructureError.single(
                f"polyanion {spec.get('name', structure[i].specie.symbol)} at site {i}",
                f"no orientation keeps every {spec['ligand']} at least {clash_A} A from other atoms "
                f"after {max_tries} tries",
                None,
                "a larger cell, a smaller clash distance, or fewer neighbouring atoms",
            )
    out.add_site_property("polyanion", unit_id)
    return out


def check_polyanions(
    structure: Structure, polyanions: dict[str, dict[str, Any]], tol_A: float = 0.05
) -> list[str]:
    """Return problems with the units in ``structure`` (empty when every unit is whole).

    A unit is whole when its centre has exactly ``count`` ligands at ``bond_A`` (+- ``tol_A``).
    """
    problems = []
    ligand_species = {spec["ligand"] for spec in polyanions.values()}
    for i, site in enumerate(structure):
        spec = polyanions.get(site.specie.symbol)
        if spec is None:
            continue
        near = [
            n
            for n in structure.get_neighbors(site, float(spec["bond_A"]) + tol_A)
            if n.specie.symbol in ligand_species
        ]
        good = [n for n in near if abs(n.nn_distance - float(spec["bond_A"])) <= tol_A]
        if len(good) != int(spec["count"]) or len(near) != len(good):
            problems.append(
                f"site {i} {site.specie.symbol}: {len(good)} {spec['ligand']} at "
                f"{spec['bond_A']} A, expected {spec['count']}"
            )
    return problems
