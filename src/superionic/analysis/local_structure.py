"""Local structure of crystals, glasses and MD snapshots (numpy + pymatgen; no jobflow).

- partial radial distribution functions g_AB(r), averaged over snapshots;
- coordination numbers and mean bond lengths within a stated cutoff;
- bond-angle distributions ligand-centre-ligand;
- polyhedral connectivity: for every pair of centre polyhedra, the number of shared ligands
  (1 corner, 2 edge, >= 3 face) and which anion species bridge;
- continuous symmetry measure (Pinsky & Avnir) of a polyhedron against the ideal octahedron or
  tetrahedron: S = 100 min |Q - sP'|^2 / |Q - Q0|^2 over vertex permutations, rotations and
  scale, S = 0 for the ideal shape;
- the X-ray weighted total G(r) (form factors approximated by Z), for comparison with a PDF;
- crystallinity of a cell against a reference crystal (cosine similarity of their RDFs).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from pymatgen.core import Structure

from superionic.errors import SuperionicError

IDEAL = {
    "octahedron": np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float),
    "tetrahedron": np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3.0),
}
SHAPE_FOR_CN = {6: "octahedron", 4: "tetrahedron"}


def _pairs(structure: Structure, a: str, b: str, r_max: float) -> np.ndarray:
    """Distances (A) from every ``a`` to every ``b`` within ``r_max`` (periodic, self excluded)."""
    idx_a = [i for i, s in enumerate(structure) if s.specie.symbol == a]
    out = []
    for i in idx_a:
        for nb in structure.get_neighbors(structure[i], r_max):
            if nb.specie.symbol == b and nb.nn_distance > 1e-8:
                out.append(nb.nn_distance)
    return np.asarray(out)


def rdf(
    structures: Structure | Sequence[Structure], a: str, b: str, r_max: float = 8.0, bin_A: float = 0.05
) -> dict[str, Any]:
    """Partial g_ab(r) averaged over snapshots (normalised to 1 at large r for an ideal gas).

    Returns ``r_A`` (bin centres), ``g`` and the number of snapshots.
    """
    frames = [structures] if isinstance(structures, Structure) else list(structures)
    edges = np.arange(0.0, r_max + bin_A, bin_A)
    hist = np.zeros(len(edges) - 1)
    norm = 0.0
    for s in frames:
        n_a = sum(1 for x in s if x.specie.symbol == a)
        n_b = sum(1 for x in s if x.specie.symbol == b)
        if n_a == 0 or n_b == 0:
            raise SuperionicError.single(
                "rdf", f"no {a if n_a == 0 else b} in the structure", s.formula, "elements present"
            )
        hist += np.histogram(_pairs(s, a, b, r_max), bins=edges)[0]
        n_pairs_b = n_b - (1 if a == b else 0)
        norm += n_a * n_pairs_b / s.volume
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = hist / (shell * norm)
    return {"r_A": (0.5 * (edges[1:] + edges[:-1])).tolist(), "g": g.tolist(), "n_frames": len(frames)}


def neighbours(
    structure: Structure, center: str, ligand: str, cutoff_A: float
) -> dict[int, list[tuple[int, float, np.ndarray]]]:
    """For each ``center`` site: (ligand index, distance, vector) within ``cutoff_A``."""
    out: dict[int, list[tuple[int, float, np.ndarray]]] = {}
    for i, site in enumerate(structure):
        if site.specie.symbol != center:
            continue
        out[i] = [
            (nb.index, nb.nn_distance, nb.coords - site.coords)
            for nb in structure.get_neighbors(site, cutoff_A)
            if nb.specie.symbol == ligand
        ]
    if not out:
        raise SuperionicError.single(
            "--center", f"no {center} in the structure", structure.formula, "an element present"
        )
    return out


def coordination(structure: Structure, center: str, ligand: str, cutoff_A: float) -> dict[str, Any]:
    """Mean coordination number and bond length of ``center`` by ``ligand`` within ``cutoff_A``.

    Raises
    ------
    SuperionicError
        When no ``ligand`` lies within the cutoff of any centre.
    """
    nb = neighbours(structure, center, ligand, cutoff_A)
    cns = [len(v) for v in nb.values()]
    dists = [d for v in nb.values() for _, d, _ in v]
    if not dists:
        raise SuperionicError.single(
            "cutoff_A", f"no {ligand} within {cutoff_A} A of any {center}", cutoff_A, "a larger cutoff"
        )
    return {
        "center": center,
        "ligand": ligand,
        "cutoff_A": cutoff_A,
        "cn_mean": float(np.mean(cns)),
        "cn_histogram": dict(sorted(Counter(cns).items())),
        "bond_length_mean_A": float(np.mean(dists)),
        "bond_length_std_A": float(np.std(dists)),
    }


def bond_angles(structure: Structure, center: str, ligand: str, cutoff_A: float) -> list[float]:
    """All ligand-centre-ligand angles (degrees)."""
    out = []
    for v in neighbours(structure, center, ligand, cutoff_A).values():
        for (_, _, u), (_, _, w) in itertools.combinations(v, 2):
            c = np.dot(u, w) / (np.linalg.norm(u) * np.linalg.norm(w))
            out.append(float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))))
    return out


def connectivity(
    structure: Structure, center: str, ligands: Sequence[str], cutoff_A: float | dict[str, float]
) -> dict[str, Any]:
    """Corner/edge/face sharing between ``center`` polyhedra and the bridging anion species.

    Two polyhedra share a ligand when the same ligand site (any periodic image) is within the
    cutoff of both centres. Returns counts of pairs by kind (``corner``, ``edge``, ``face``),
    their fractions, and for corner-sharing the bridging species fractions; plus the fraction of
    each ligand species that is terminal (bound to one centre) or bridging.
    """
    cut = cutoff_A if isinstance(cutoff_A, dict) else {lig: float(cutoff_A) for lig in ligands}
    r_cut = max(cut.values())
    members: dict[int, list[tuple[int, np.ndarray]]] = {}  # centre -> (ligand index, position)
    for i, site in enumerate(structure):
        if site.specie.symbol != center:
            continue
        members[i] = [
            (nb.index, nb.coords)
            for nb in structure.get_neighbors(site, r_cut)
            if nb.specie.symbol in cut and nb.nn_distance <= cut[nb.specie.symbol]
        ]
    kinds: Counter = Counter()
    bridges: Counter = Counter()
    for i in members:
        own = np.array([pos for _, pos in members[i]]) if members[i] else np.zeros((0, 3))
        for nb in structure.get_neighbors(structure[i], 2 * r_cut):
            j = nb.index
            if j not in members or j < i:
                continue
            shift = nb.coords - structure[j].coords  # the periodic image of j next to i
            if j == i and tuple(np.round(shift, 6)) < (0.0, 0.0, 0.0):
                continue  # count a self-image pair once
            shared = [
                idx
                for idx, pos in members[j]
                if len(own) and np.min(np.linalg.norm(own - (pos + shift), axis=1)) < 1e-3
            ]
            if not shared:
                continue
            kind = "corner" if len(shared) == 1 else "edge" if len(shared) == 2 else "face"
            kinds[kind] += 1
            if kind == "corner":
                bridges[structure[shared[0]].specie.symbol] += 1
    n_pairs = sum(kinds.values())
    per_ligand: Counter = Counter(idx for m in members.values() for idx, _ in m)
    ligand_env: dict[str, dict[str, float]] = {}
    for lig in ligands:
        idx = [i for i, s in enumerate(structure) if s.specie.symbol == lig]
        if not idx:
            continue
        counts = Counter(min(per_ligand.get(i, 0), 2) for i in idx)
        ligand_env[lig] = {
            "free": counts.get(0, 0) / len(idx),
            "terminal": counts.get(1, 0) / len(idx),
            "bridging": counts.get(2, 0) / len(idx),
        }
    return {
        "pairs": dict(kinds),
        "fractions": {k: v / n_pairs for k, v in kinds.items()} if n_pairs else {},
        "corner_bridges": {k: v / max(1, kinds["corner"]) for k, v in bridges.items()},
        "ligand_environment": ligand_env,
    }


def _kabsch_overlap(q: np.ndarray, p: np.ndarray) -> float:
    """Max over rotations of sum q . (R p) (both centred)."""
    h = p.T @ q
    u, s, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return float(s[0] + s[1] + d * s[2])


def csm(vertices: np.ndarray, shape: str = "octahedron") -> float:
    """Continuous symmetry measure (0-100) of a polyhedron's vertices against an ideal shape.

    ``vertices``: (n, 3) ligand positions (A); the centroid is removed. Scale, rotation and the
    vertex-to-vertex assignment are optimised (all n! assignments: 720 for an octahedron).
    """
    if shape not in IDEAL:
        raise SuperionicError.single("shape", "unknown polyhedron", shape, ", ".join(IDEAL))
    ideal = IDEAL[shape]
    q = np.asarray(vertices, dtype=float)
    if len(q) != len(ideal):
        raise SuperionicError.single(
            "polyhedron",
            f"{shape} needs {len(ideal)} vertices",
            len(q),
            f"a centre with coordination {len(ideal)} (check the cutoff)",
        )
    q = q - q.mean(axis=0)
    qq = float(np.sum(q * q))
    pp = float(np.sum(ideal * ideal))
    best = 0.0
    for perm in itertools.permutations(range(len(ideal))):
        best = max(best, _kabsch_overlap(q, ideal[list(perm)]))
    return float(100.0 * (qq - best**2 / pp) / qq)


def polyhedra_csm(
    structure: Structure, center: str, ligand: str, cutoff_A: float, shape: str | None = None
) -> dict[str, Any]:
    """CSM of every ``center`` polyhedron with the expected number of ligands; mean and spread.

    Centres with another coordination number are counted in ``skipped`` (not silently averaged).
    """
    nb = neighbours(structure, center, ligand, cutoff_A)
    values, skipped = [], 0
    for v in nb.values():
        want = shape or SHAPE_FOR_CN.get(len(v))
        if want is None or len(v) != len(IDEAL[want]):
            skipped += 1
            continue
        values.append(csm(np.array([vec for _, _, vec in v]), want))
    if not values:
        raise SuperionicError.single(
            "shape",
            f"no {center} has the coordination of a {shape or 'known polyhedron'} within {cutoff_A} A",
            shape,
            "a shape matching the coordination number (octahedron 6, tetrahedron 4)",
        )
    return {
        "csm_mean": float(np.mean(values)),
        "csm_std": float(np.std(values)),
        "n": len(values),
        "skipped": skipped,
    }


def xray_gr(
    structures: Structure | Sequence[Structure], r_max: float = 10.0, bin_A: float = 0.05
) -> dict[str, Any]:
    """Total X-ray weighted G(r) = 4 pi r rho0 (g_X(r) - 1), form factors approximated by Z."""
    frames = [structures] if isinstance(structures, Structure) else list(structures)
    s0 = frames[0]
    comp = s0.composition.fractional_composition
    els = [el.symbol for el in comp.elements]
    z = {el: float(s0.composition.elements[els.index(el)].Z) for el in els}
    mean_z = sum(comp[el] * z[el] for el in els)
    g_total = None
    r = None
    for a, b in itertools.product(els, els):
        part = rdf(frames, a, b, r_max, bin_A)
        w = comp[a] * comp[b] * z[a] * z[b] / mean_z**2
        r = np.asarray(part["r_A"])
        g_total = w * np.asarray(part["g"]) if g_total is None else g_total + w * np.asarray(part["g"])
    rho0 = len(s0) / s0.volume
    big_g = 4 * np.pi * r * rho0 * (g_total - 1.0)
    return {"r_A": r.tolist(), "G": big_g.tolist(), "g": g_total.tolist()}


def rdf_similarity(g1: Sequence[float], g2: Sequence[float]) -> float:
    """Cosine similarity of two g(r) on the same grid (1 = identical shape)."""
    a, b = np.asarray(g1), np.asarray(g2)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def first_peak(r: Sequence[float], g: Sequence[float], r_min: float = 0.5) -> tuple[float, float]:
    """Position and height of the highest g(r) value beyond ``r_min``."""
    r_arr, g_arr = np.asarray(r), np.asarray(g)
    mask = r_arr > r_min
    i = int(np.argmax(np.where(mask, g_arr, -np.inf)))
    return float(r_arr[i]), float(g_arr[i])


def local_structure_summary(
    structures: Structure | Sequence[Structure],
    center: str | None,
    ligands: Sequence[str],
    cutoff_A: float,
    shape: str | None = None,
    reference: Structure | None = None,
) -> dict[str, Any]:
    """Local structure of one structure, or pooled over MD snapshots (study C: every 2 ps).

    Pooling is over all polyhedra of all snapshots: the CN and bond length are the means over
    every centre and bond, the CSM mean/std over every polyhedron of the right coordination,
    the connectivity fractions over every sharing pair; ``cn_std_snapshots`` is the spread of the
    per-snapshot mean CN. RDFs and the X-ray G(r) are averaged over snapshots.

    Parameters
    ----------
    structures : Structure or sequence of Structure
        One cell, or snapshots of one run (same composition and ordering).
    center : str or None
        Polyhedron centre (e.g. ``Ta``); without it only the density and G(r) are given.
    ligands : sequence of str
        Ligand elements (the first one is used for the CSM); one absent from the composition gets
        CN 0 and ``absent: True``, one present but never within the cutoff is an error.
    cutoff_A : float
        Centre-ligand bond cutoff (A).
    shape : str, optional
        ``octahedron`` or ``tetrahedron`` for the CSM (default: from each polyhedron's CN).
    reference : Structure, optional
        Crystal whose centre-centre RDF the ``crystallinity`` (cosine similarity) is taken against.

    Returns
    -------
    dict
        ``n_snapshots``, ``formula``, ``density_g_cm3``, and with a centre ``coordination``
        (per ligand), ``csm`` (or ``{"error": ...}``), ``connectivity``, ``rdf_center_center``,
        ``rdf_center_ligand``, ``first_peak_center_center_A``, ``crystallinity``; ``xray_G``.
    """
    frames = [structures] if isinstance(structures, Structure) else list(structures)
    if not frames:
        raise SuperionicError.single("structures", "no snapshots to analyse", 0, "at least one structure")
    s0 = frames[0]
    out: dict[str, Any] = {
        "n_snapshots": len(frames),
        "formula": s0.composition.reduced_formula,
        "density_g_cm3": float(np.mean([s.density for s in frames])),
    }
    if center:
        coordination_out: dict[str, Any] = {}
        present = {el.symbol for el in s0.composition.elements}
        for lig in ligands:
            if lig not in present:  # e.g. O in the Li2ZrCl6 end member of an oxychloride sweep
                coordination_out[lig] = {
                    "center": center,
                    "ligand": lig,
                    "cutoff_A": cutoff_A,
                    "cn_mean": 0.0,
                    "bond_length_mean_A": None,
                    "absent": True,
                }
                continue
            per = [coordination(s, center, lig, cutoff_A) for s in frames]
            cn = np.array([c["cn_mean"] for c in per])
            hist: Counter = Counter()
            for c in per:
                hist.update(c["cn_histogram"])
            coordination_out[lig] = {
                **per[0],
                "cn_mean": float(cn.mean()),
                "cn_std_snapshots": float(cn.std()),
                "cn_histogram": dict(sorted(hist.items())),
                # bonds per snapshot are proportional to its mean CN (same number of centres)
                "bond_length_mean_A": float(np.average([c["bond_length_mean_A"] for c in per], weights=cn)),
                "bond_length_std_A": float(
                    np.sqrt(np.average([c["bond_length_std_A"] ** 2 for c in per], weights=cn))
                ),
            }
        out["coordination"] = coordination_out
        if shape or len(ligands) == 1:
            try:
                per_csm = [polyhedra_csm(s, center, ligands[0], cutoff_A, shape) for s in frames]
                n = np.array([c["n"] for c in per_csm], float)
                mean = float(np.average([c["csm_mean"] for c in per_csm], weights=n))
                second = float(
                    np.average([c["csm_std"] ** 2 + c["csm_mean"] ** 2 for c in per_csm], weights=n)
                )
                out["csm"] = {
                    "csm_mean": mean,
                    "csm_std": float(np.sqrt(max(0.0, second - mean**2))),
                    "n": int(n.sum()),
                    "skipped": int(sum(c["skipped"] for c in per_csm)),
                }
            except SuperionicError as exc:
                out["csm"] = {"error": exc.problems[0].message}
        out["connectivity"] = _pooled_connectivity(
            [connectivity(s, center, ligands, cutoff_A) for s in frames]
        )
        cc = rdf(frames, center, center, r_max=8.0, bin_A=0.1)
        out["rdf_center_center"] = cc
        out["rdf_center_ligand"] = {
            lig: rdf(frames, center, lig, r_max=6.0, bin_A=0.05) for lig in ligands if lig in present
        }
        out["first_peak_center_center_A"] = first_peak(cc["r_A"], cc["g"])[0]
        if reference is not None:
            ref = rdf(reference, center, center, r_max=8.0, bin_A=0.1)
            out["crystallinity"] = rdf_similarity(cc["g"], ref["g"])
    out["xray_G"] = xray_gr(frames, r_max=10.0, bin_A=0.05)
    return out


def _pooled_connectivity(per: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the sharing pairs of several snapshots and recompute the fractions."""
    pairs: Counter = Counter()
    bridges: Counter = Counter()
    for c in per:
        pairs.update(c["pairs"])
        for el, frac in c["corner_bridges"].items():
            bridges[el] += frac * c["pairs"].get("corner", 0)
    n_pairs = sum(pairs.values())
    env: dict[str, dict[str, float]] = {}
    for lig in per[0]["ligand_environment"]:
        env[lig] = {
            k: float(np.mean([c["ligand_environment"][lig][k] for c in per]))
            for k in per[0]["ligand_environment"][lig]
        }
    return {
        "pairs": dict(pairs),
        "fractions": {k: v / n_pairs for k, v in pairs.items()} if n_pairs else {},
        "corner_bridges": {k: v / max(1, pairs["corner"]) for k, v in bridges.items()},
        "ligand_environment": env,
    }
