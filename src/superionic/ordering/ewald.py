"""Find the N lowest-Ewald-energy orderings of a disordered cell.

The pairwise Ewald interaction matrix comes from pymatgen (:class:`EwaldSummation` of the cell
with a unit charge on every candidate site). Because the real-space, reciprocal-space and
self-energy terms are all bilinear in the charges, the energy of any neutral ordering with site
charges ``q`` is ``q @ M @ q``; a swap of two sites changes it by an O(1) expression once
``v = M @ q`` is kept up to date. The search is exact enumeration when the number of orderings is
small and simulated annealing with restarts (Metropolis swaps inside each sublattice, then a
zero-temperature descent) otherwise. Orderings related by symmetry have equal Ewald energies; we
keep one configuration per distinct energy (to 1e-6 eV), so the returned orderings are distinct.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pymatgen.analysis.ewald import EwaldSummation
from pymatgen.core import Species, Structure

from superionic.errors import Problem, StructureError

VACANCY = "X"


@dataclass
class Sublattice:
    """A set of equivalent sites sharing the same mixed occupancy.

    Attributes
    ----------
    label : str
        Site label (the ``wyckoff`` site property, or the occupancy string).
    sites : list of int
        Indices of the sites in the disordered supercell.
    counts : dict
        How many sites each species (or ``"X"`` for a vacancy) takes.

    """

    label: str
    sites: list[int]
    counts: dict[str, int]

    def n_orderings(self) -> int:
        """Return the number of ways to distribute the species over the sites."""
        n = len(self.sites)
        total = math.factorial(n)
        for c in self.counts.values():
            total //= math.factorial(c)
        return total


@dataclass
class Ordering:
    """One ordered configuration.

    Attributes
    ----------
    structure : Structure
        The ordered structure (vacancies removed), with oxidation states.
    ewald_energy_ev : float
        Ewald energy of the cell in eV.
    vacated : dict
        Sublattice label -> indices (in the disordered supercell) of sites left empty.
    occupation : dict
        Site index in the disordered supercell -> species symbol (``"X"`` for vacancy).

    """

    structure: Structure
    ewald_energy_ev: float
    vacated: dict[str, list[int]] = field(default_factory=dict)
    occupation: dict[int, str] = field(default_factory=dict)


def find_sublattices(
    structure: Structure, round_counts: bool = False, group_by: str = "wyckoff"
) -> tuple[list[Sublattice], list[int]]:
    """Split a disordered supercell into mixed sublattices and fixed sites.

    Parameters
    ----------
    structure : Structure
        Disordered supercell.
    group_by : str
        ``wyckoff``: sites form one sublattice when they share the ``wyckoff`` site property and
        the occupancy (so 4a and 4d keep their own counts even with equal occupancies; the
        refined model is preserved). ``occupancy``: sites with equal occupancies form one
        sublattice whatever their Wyckoff label (what pymatgen's ordering does).
        Structures without ``wyckoff`` labels (e.g. from a CIF) group by occupancy either way.
    round_counts : bool
        Round non-integer site counts (largest remainder) instead of refusing them;
        :func:`order_by_ewald` then restores charge neutrality.

    Raises
    ------
    StructureError
        When a sublattice's occupancies give non-integer site counts in this supercell (and
        ``round_counts`` is False), or an occupancy is above 1.
    """
    groups: dict[tuple, list[int]] = {}
    fixed: list[int] = []
    if group_by not in ("wyckoff", "occupancy"):
        raise StructureError.single("group_by", "unknown grouping", group_by, "wyckoff or occupancy")
    labels = structure.site_properties.get("wyckoff") if group_by == "wyckoff" else None
    for i, site in enumerate(structure):
        occ = {el.symbol: float(amt) for el, amt in site.species.element_composition.items()}
        occ = {k: v for k, v in occ.items() if v > 1e-9 and k != "X"}
        if len(occ) == 1 and abs(next(iter(occ.values())) - 1) < 1e-6:
            fixed.append(i)
            continue
        key = (labels[i] if labels else "", tuple(sorted((k, round(v, 6)) for k, v in occ.items())))
        groups.setdefault(key, []).append(i)
    problems: list[Problem] = []
    subs: list[Sublattice] = []
    for (label, occ_items), sites in groups.items():
        occ = dict(occ_items)
        name = label or ",".join(f"{k}:{v:g}" for k, v in occ.items())
        total = sum(occ.values())
        if total > 1 + 1e-6:
            problems.append(
                Problem(f"sublattice {name}", "occupancy above 1", total, "occupancies summing to <= 1")
            )
            continue
        counts: dict[str, int] = {}
        n = len(sites)
        exact_counts = {sp: frac * n for sp, frac in occ.items()}
        n_problems = len(problems)
        for sp, exact in exact_counts.items():
            if abs(exact - round(exact)) > 1e-3 and not round_counts:
                problems.append(
                    Problem(
                        f"sublattice {name}",
                        f"{sp} occupancy {occ[sp]:g} on {n} sites gives {exact:.3f} atoms, not an integer",
                        occ[sp],
                        f"a supercell or occupancy for which {sp} fills a whole number of the {n} "
                        "sites (or round the counts: --round / round_counts: true)",
                    )
                )
        if round_counts:
            # largest remainder: keep the total number of atoms on the sublattice nearest to exact
            floors = {sp: int(np.floor(x + 1e-9)) for sp, x in exact_counts.items()}
            extra = min(n, round(sum(exact_counts.values()))) - sum(floors.values())
            order = sorted(exact_counts, key=lambda sp: floors[sp] - exact_counts[sp])
            for sp in order[: max(extra, 0)]:
                floors[sp] += 1
            counts = floors
        else:
            counts = {sp: round(x) for sp, x in exact_counts.items()}
        vac = n - sum(counts.values())
        if vac < 0 and len(problems) == n_problems:
            problems.append(Problem(f"sublattice {name}", "more atoms than sites", counts, f"<= {n} atoms"))
        if vac:
            counts[VACANCY] = vac
        subs.append(Sublattice(name, sites, counts))
    if problems:
        raise StructureError(problems)
    return subs, fixed


def count_orderings(sublattices: list[Sublattice]) -> int:
    """Return the number of configurations (before symmetry reduction)."""
    total = 1
    for sub in sublattices:
        total *= sub.n_orderings()
    return total


def ewald_matrix(structure: Structure, eta: float | None = None) -> np.ndarray:
    """Return the pairwise Ewald matrix (eV per e^2) of all sites of ``structure``.

    Every site is given a unit charge; the energy of charges ``q`` is ``q @ M @ q`` for any
    neutral ``q``.
    """
    unit = Structure(structure.lattice, [Species("H", 1)] * len(structure), structure.frac_coords)
    ewald = EwaldSummation(unit, eta=eta)
    return np.asarray(ewald.total_energy_matrix, dtype=float)


class _Search:
    """State of the Metropolis search over site charges."""

    def __init__(
        self,
        matrix: np.ndarray,
        subs: list[Sublattice],
        charges: dict[str, float],
        fixed_q: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        self.M = matrix
        self.subs = subs
        self.charges = charges
        self.fixed_q = fixed_q
        self.rng = rng
        self.diag = np.diag(matrix).copy()

    def random_state(self) -> np.ndarray:
        labels = np.full(len(self.fixed_q), "", dtype=object)
        for sub in self.subs:
            pool = [sp for sp, c in sub.counts.items() for _ in range(c)]
            self.rng.shuffle(pool)
            labels[sub.sites] = pool
        return labels

    def q_of(self, labels: np.ndarray) -> np.ndarray:
        q = self.fixed_q.copy()
        for sub in self.subs:
            q[sub.sites] = [self.charges[s] for s in labels[sub.sites]]
        return q

    def energy(self, q: np.ndarray) -> float:
        return float(q @ self.M @ q)

    def anneal(
        self,
        labels: np.ndarray,
        n_steps: int,
        t_start: float,
        t_end: float,
        keep: Callable[[float, np.ndarray], None],
    ) -> np.ndarray:
        q = self.q_of(labels)
        v = self.M @ q
        e = float(q @ v)
        mixed = [s for s in self.subs if len(s.counts) > 1]
        if not mixed:
            keep(e, labels)
            return labels
        weights = np.array([len(s.sites) for s in mixed], dtype=float)
        weights /= weights.sum()
        sub_idx = self.rng.choice(len(mixed), size=n_steps, p=weights)
        uniform = self.rng.random(n_steps)
        temps = t_start * (t_end / t_start) ** (np.arange(n_steps) / max(n_steps - 1, 1))
        M = self.M
        last_kept = math.inf
        for step in range(n_steps):
            sub = mixed[sub_idx[step]]
            sites = sub.sites
            a = sites[int(self.rng.integers(len(sites)))]
            b = sites[int(self.rng.integers(len(sites)))]
            if labels[a] == labels[b]:
                continue
            d = q[b] - q[a]
            if d == 0.0:
                de = 0.0
            else:
                de = 2 * d * (v[a] - v[b]) + d * d * (self.diag[a] + self.diag[b] - 2 * M[a, b])
            if de <= 0 or uniform[step] < math.exp(-de / temps[step]):
                labels[a], labels[b] = labels[b], labels[a]
                if d != 0.0:
                    q[a] += d
                    q[b] -= d
                    v += d * (M[:, a] - M[:, b])
                e += de
                if e < last_kept + 1e-9 or temps[step] < 4 * t_end:
                    keep(e, labels)
                    last_kept = e
        return self.descend(labels, keep)

    def descend(self, labels: np.ndarray, keep: Callable[[float, np.ndarray], None]) -> np.ndarray:
        """Greedy swaps until no swap inside a sublattice lowers the energy."""
        q = self.q_of(labels)
        v = self.M @ q
        e = float(q @ v)
        improved = True
        while improved:
            improved = False
            for sub in self.subs:
                sites = np.asarray(sub.sites)
                qs = q[sites]
                # all pair energies at once: de[i, j] for swapping sites i and j
                d = qs[None, :] - qs[:, None]
                vs = v[sites]
                de = 2 * d * (vs[:, None] - vs[None, :]) + d * d * (
                    self.diag[sites][:, None] + self.diag[sites][None, :] - 2 * self.M[np.ix_(sites, sites)]
                )
                i, j = np.unravel_index(np.argmin(de), de.shape)
                if de[i, j] < -1e-9:
                    a, b = int(sites[i]), int(sites[j])
                    dd = q[b] - q[a]
                    labels[a], labels[b] = labels[b], labels[a]
                    q[a] += dd
                    q[b] -= dd
                    v += dd * (self.M[:, a] - self.M[:, b])
                    e += float(de[i, j])
                    improved = True
        keep(e, labels)
        return labels

    def energy_of(self, labels: np.ndarray) -> float:
        """Ewald energy of a labelling."""
        q = self.q_of(labels)
        return float(q @ self.M @ q)

    def hop_small_sublattices(
        self,
        labels: np.ndarray,
        keep: Callable[[float, np.ndarray], None],
        max_sites: int = 32,
        max_sweeps: int = 5,
    ) -> np.ndarray:
        """Basin hopping on small mixed sublattices (e.g. S/Cl on 4a/4d).

        Annealing freezes a small sublattice early: its swaps are rare and each costs eV while
        the large sublattice has not settled. Here every swap on a small sublattice is tried with
        the rest re-descended greedily, and the best improvement is kept, until none improves.
        """
        small = [s for s in self.subs if len(s.counts) > 1 and len(s.sites) <= max_sites]
        if not small:
            return labels
        best = labels.copy()
        best_e = self.energy_of(best)
        for _ in range(max_sweeps):
            improved = False
            for sub in small:
                for a, b in itertools.combinations(sub.sites, 2):
                    if best[a] == best[b]:
                        continue
                    trial = best.copy()
                    trial[a], trial[b] = trial[b], trial[a]
                    trial = self.descend(trial, keep)
                    e = self.energy_of(trial)
                    if e < best_e - 1e-9:
                        best, best_e, improved = trial, e, True
            if not improved:
                break
        return best


def order_by_ewald(
    structure: Structure,
    n_structures: int = 1,
    oxidation_states: dict[str, float] | None = None,
    seed: int = 0,
    n_restarts: int = 8,
    steps_per_site: int = 1000,
    exact_limit: int = 20000,
    progress: Callable[[int, int], None] | None = None,
    round_counts: bool = False,
    match_energy_window_ev: float = 0.05,
    group_by: str = "wyckoff",
) -> list[Ordering]:
    """Return the ``n_structures`` lowest-Ewald-energy distinct orderings of ``structure``.

    Parameters
    ----------
    structure : Structure
        Disordered supercell (partial occupancies; vacancies implied by occupancy < 1).
    n_structures : int
        How many orderings to return (fewer if fewer distinct ones exist).
    oxidation_states : dict, optional
        Element -> charge. Defaults to the oxidation states already on the structure, else
        pymatgen's guess.
    seed : int
        Random seed: the result is deterministic for a seed.
    n_restarts : int
        Independent annealing runs from random configurations (ignored for exact enumeration).
    steps_per_site : int
        Metropolis steps per mixed site in each run.
    exact_limit : int
        Enumerate every configuration when there are at most this many.
    progress : callable, optional
        Called as ``progress(done, total)`` after each restart.
    round_counts : bool
        Round non-integer site counts, then restore neutrality by moving the fewest atoms.
    group_by : str
        ``wyckoff`` (default) or ``occupancy``; see :func:`find_sublattices`.
    match_energy_window_ev : float
        Orderings whose energies differ by less than this are also compared with pymatgen's
        ``StructureMatcher`` and only one of a matching pair is kept. (Orderings of one site
        lattice with different Ewald energies are never symmetry-equivalent; the check guards
        against near-degenerate ones that match within StructureMatcher's tolerances.)

    Returns
    -------
    list of Ordering
        Sorted by Ewald energy (eV per cell), lowest first.

    """
    ox = dict(oxidation_states or {})
    if not ox:
        ox = _guess_oxidation_states(structure)
    subs, fixed = find_sublattices(structure, round_counts=round_counts, group_by=group_by)
    missing = sorted(
        {el.symbol for el in structure.composition.elements if el.symbol not in ox and el.symbol != "X"}
    )
    if missing:
        raise StructureError.single(
            "oxidation_states",
            f"no oxidation state for {', '.join(missing)} and none could be guessed",
            missing,
            "give oxidation states for every element",
        )
    charges = {sp: float(ox[sp]) for sub in subs for sp in sub.counts if sp != VACANCY}
    charges[VACANCY] = 0.0
    fixed_q = np.zeros(len(structure))
    fixed_symbols: dict[int, str] = {}
    for i in fixed:
        sym = next(iter(structure[i].species.element_composition)).symbol
        fixed_q[i] = float(ox[sym])
        fixed_symbols[i] = sym
    net = fixed_q.sum() + sum(charges[sp] * c for sub in subs for sp, c in sub.counts.items())
    if abs(net) > 1e-6 and round_counts:
        net = _restore_neutrality(subs, charges, net)
    if abs(net) > 1e-6:
        raise StructureError.single(
            "composition",
            f"the ordered cell would carry a net charge of {net:+g} e "
            f"(sublattices: {[(s.label, s.counts) for s in subs]})",
            None,
            "site counts whose oxidation states sum to zero",
        )
    matrix = ewald_matrix(structure)
    rng = np.random.default_rng(seed)
    search = _Search(matrix, subs, charges, fixed_q, rng)
    found: dict[int, tuple[float, np.ndarray]] = {}
    cap = max(4 * n_structures, 50)

    def keep(energy: float, labels: np.ndarray) -> None:
        key = round(energy * 1e6)
        if key in found:
            return
        if len(found) >= cap:
            worst = max(found)
            if key >= worst:
                return
            del found[worst]
        found[key] = (energy, labels.copy())

    total = count_orderings(subs)
    if total <= exact_limit:
        for labels in _enumerate(subs, len(structure)):
            keep(search.energy(search.q_of(labels)), labels)
        if progress:
            progress(1, 1)
    else:
        n_mixed = sum(len(s.sites) for s in subs if len(s.counts) > 1)
        n_steps = steps_per_site * n_mixed
        t_start = _start_temperature(search)
        for r in range(n_restarts):
            labels = search.anneal(search.random_state(), n_steps, t_start, t_start * 1e-3, keep)
            search.hop_small_sublattices(labels, keep)
            if progress:
                progress(r + 1, n_restarts)
    accepted: list[tuple[Ordering, Structure]] = []
    for e, labels in sorted(found.values(), key=lambda t: t[0]):
        candidate = _to_ordering(structure, subs, fixed_symbols, ox, e, labels)
        reduced = candidate.structure.get_reduced_structure(reduction_algo="niggli")
        if not _matches_any(candidate, reduced, accepted, match_energy_window_ev):
            accepted.append((candidate, reduced))
        if len(accepted) == n_structures:
            break
    return [ordering for ordering, _ in accepted]


def _matches_any(
    candidate: Ordering, reduced: Structure, accepted: list[tuple[Ordering, Structure]], window: float
) -> bool:
    """Whether ``candidate`` is symmetry-equivalent to an accepted ordering within ``window`` eV.

    Each structure is Niggli-reduced once here and compared with ``skip_structure_reduction``:
    what ``StructureMatcher(primitive_cell=False).fit`` does itself, except that its cache of
    reduced structures compares every new structure site by site with those it holds (all of
    one composition share a hash), which took 48 of the 62 s of ordering 25 cells of 2x1x1
    Li5.5PS4.5Cl1.5.
    """
    from pymatgen.analysis.structure_matcher import StructureMatcher

    close = [r for a, r in accepted if abs(a.ewald_energy_ev - candidate.ewald_energy_ev) < window]
    if not close:
        return False
    matcher = StructureMatcher(primitive_cell=False)
    return any(matcher.fit(reduced, r, skip_structure_reduction=True) for r in close)


def _restore_neutrality(subs: list[Sublattice], charges: dict[str, float], net: float) -> float:
    """Change site counts by single atoms until the cell is neutral (after rounding)."""
    for _ in range(1000):
        if abs(net) < 1e-6:
            break
        best: tuple[float, Sublattice, str, str] | None = None
        for sub in subs:
            for a in sub.counts:
                for b in [*sub.counts, VACANCY]:
                    if a == b or sub.counts.get(a, 0) == 0:
                        continue
                    change = charges[b] - charges[a]  # one site from a to b
                    new = net + change
                    if abs(new) < abs(net) - 1e-9 and (best is None or abs(new) < best[0]):
                        best = (abs(new), sub, a, b)
        if best is None:
            break
        _, sub, a, b = best
        sub.counts[a] -= 1
        sub.counts[b] = sub.counts.get(b, 0) + 1
        net += charges[b] - charges[a]
    for sub in subs:
        for k in [k for k, v in sub.counts.items() if v == 0]:
            del sub.counts[k]
    return net


def _start_temperature(search: _Search, n_probe: int = 200) -> float:
    """Pick a starting temperature (eV) from the spread of random swap energies."""
    labels = search.random_state()
    q = search.q_of(labels)
    v = search.M @ q
    des = []
    mixed = [s for s in search.subs if len(s.counts) > 1]
    for _ in range(n_probe):
        sub = mixed[int(search.rng.integers(len(mixed)))]
        a, b = search.rng.choice(sub.sites, size=2, replace=False)
        d = q[b] - q[a]
        if d == 0:
            continue
        des.append(
            abs(2 * d * (v[a] - v[b]) + d * d * (search.diag[a] + search.diag[b] - 2 * search.M[a, b]))
        )
    return float(np.median(des)) if des else 1.0


def _enumerate(subs: list[Sublattice], n_sites: int):
    per_sub = []
    for sub in subs:
        species = [sp for sp, c in sub.counts.items() for _ in range(c)]
        per_sub.append(sorted(set(itertools.permutations(species))))
    for combo in itertools.product(*per_sub):
        labels = np.full(n_sites, "", dtype=object)
        for sub, assign in zip(subs, combo, strict=True):
            labels[sub.sites] = list(assign)
        yield labels


def _to_ordering(
    structure: Structure,
    subs: list[Sublattice],
    fixed_symbols: dict[int, str],
    ox: dict[str, float],
    energy: float,
    labels: np.ndarray,
) -> Ordering:
    occupation: dict[int, str] = dict(fixed_symbols)
    vacated: dict[str, list[int]] = {}
    for sub in subs:
        for i in sub.sites:
            occupation[i] = str(labels[i])
            if labels[i] == VACANCY:
                vacated.setdefault(sub.label, []).append(i)
    species, coords, wyckoff = [], [], []
    wy = structure.site_properties.get("wyckoff")
    for i in range(len(structure)):
        sym = occupation[i]
        if sym == VACANCY:
            continue
        species.append(Species(sym, ox[sym]))
        coords.append(structure[i].frac_coords)
        wyckoff.append(wy[i] if wy else "")
    ordered = Structure(structure.lattice, species, coords, site_properties={"wyckoff": wyckoff})
    return Ordering(ordered, float(energy), vacated, occupation)


def _guess_oxidation_states(structure: Structure) -> dict[str, float]:
    ox: dict[str, float] = {}
    for site in structure:
        for sp in site.species:
            if getattr(sp, "oxi_state", None) is not None:
                ox[sp.element.symbol] = float(sp.oxi_state)
    if ox:
        return ox
    guesses = structure.composition.oxi_state_guesses(max_sites=-50)
    return {k: float(v) for k, v in guesses[0].items()} if guesses else {}
