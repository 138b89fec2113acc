"""Competing phases for convex hulls, shipped as crystallographic data in ``configs/phases/``.

Each file lists phases. A phase is one of

- a crystal: ``spacegroup``, ``lattice`` and ``sites`` (``species`` and fractional ``coords``);
  sites with mixed species are ordered by lowest Ewald energy in ``supercell`` using
  ``oxidation_states`` (used for wurtzite- and hcp-derived phases built from their parent
  arrays); ``polyanions: {B: BH4}`` expands rigid units from ``configs/polyanions.yaml``;
- a molecule in a cubic box: ``molecule`` (a list of ``[element, x, y, z]`` in A, or a built-in
  name) and ``box_A``.

Every phase carries a ``citation`` saying where its numbers come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from pymatgen.core import Composition, Lattice, Molecule, Structure
from ruamel.yaml import YAML

from superionic.errors import Problem, SpecError
from superionic.paths import configs_dir
from superionic.structures.prototypes import from_spacegroup


def _s8_crown() -> list[list[Any]]:
    """S8 crown ring: S-S 2.05 A, S-S-S 108 deg (atoms alternate +-h on a circle of radius R)."""
    d, angle = 2.05, math.radians(108.0)
    radius = 2 * d * math.sin(angle / 2) / math.sqrt(2)
    h = 0.5 * math.sqrt(d**2 - 2 * radius**2 * (1 - math.cos(math.pi / 4)))
    return [
        ["S", radius * math.cos(k * math.pi / 4), radius * math.sin(k * math.pi / 4), h if k % 2 else -h]
        for k in range(8)
    ]


BUILTIN_MOLECULES = {"s8_crown": _s8_crown}


@dataclass
class Phase:
    """One competing phase."""

    name: str
    citation: str
    source: str
    data: dict[str, Any]

    @property
    def composition(self) -> Composition:
        """Composition of the built structure."""
        return build_phase(self).composition

    @property
    def elements(self) -> set[str]:
        """Element symbols of the phase."""
        return {el.symbol for el in self.composition.elements}


@lru_cache(maxsize=1)
def load_phases() -> tuple[Phase, ...]:
    """Load every phase of every file in ``configs/phases/`` (names must be unique)."""
    phases: list[Phase] = []
    seen: dict[str, str] = {}
    for path in sorted((configs_dir() / "phases").glob("*.yaml")):
        data = YAML(typ="safe").load(path.read_text()) or {}
        for entry in data.get("phases", []):
            name = str(entry["name"])
            if name in seen:
                raise SpecError.single(
                    f"{path.name}: phases.{name}",
                    "phase name defined twice",
                    name,
                    f"unique (also in {seen[name]})",
                )
            seen[name] = path.name
            phases.append(Phase(name, str(entry.get("citation", "")), path.name, dict(entry)))
    return tuple(phases)


@lru_cache(maxsize=64)
def _build_cached(name: str) -> Structure:
    phase = next(p for p in load_phases() if p.name == name)
    d = phase.data
    if "molecule" in d:
        atoms = d["molecule"]
        if isinstance(atoms, str):
            atoms = BUILTIN_MOLECULES[atoms]()
        mol = Molecule([a[0] for a in atoms], [a[1:] for a in atoms])
        box = float(d.get("box_A", 10.0))
        return mol.get_boxed_structure(box, box, box)
    lat = d["lattice"]
    a = float(lat["a"])
    hexagonal = d["spacegroup"].startswith(("P6", "R", "P-6", "P3", "P-3"))
    lattice = Lattice.from_parameters(
        a,
        float(lat.get("b", a)),
        float(lat.get("c", a)),
        float(lat.get("alpha", 90.0)),
        float(lat.get("beta", 90.0)),
        float(lat.get("gamma", 120.0 if hexagonal else 90.0)),
    )
    species = [s["species"] if isinstance(s["species"], str) else dict(s["species"]) for s in d["sites"]]
    structure = from_spacegroup(
        d["spacegroup"],
        lattice,
        [Composition(sp) if isinstance(sp, dict) else sp for sp in species],
        [s["coords"] for s in d["sites"]],
    )
    if d.get("supercell"):
        structure.make_supercell(d["supercell"])
    if not structure.is_ordered:
        from superionic.ordering import order_by_ewald

        structure = order_by_ewald(structure, 1, dict(d.get("oxidation_states", {})), seed=0)[0].structure
        structure.remove_oxidation_states()
    if d.get("polyanions"):
        from superionic.structures.polyanions import expand_polyanions, polyanion_library

        units = polyanion_library()
        spec = {centre: units[unit] for centre, unit in d["polyanions"].items()}
        structure = expand_polyanions(structure, spec, seed=0)
    return structure


def build_phase(phase: Phase | str) -> Structure:
    """Return the structure of a phase (a copy; ordered; molecules boxed)."""
    name = phase if isinstance(phase, str) else phase.name
    return _build_cached(name).copy()


def phases_for(elements: set[str] | list[str]) -> list[Phase]:
    """Return the phases whose elements are all among ``elements``."""
    want = set(elements)
    return [p for p in load_phases() if p.elements <= want]


def missing_elements(elements: set[str] | list[str]) -> list[str]:
    """Return the elements that have no elemental reference phase in ``configs/phases/``."""
    have = {next(iter(p.elements)) for p in load_phases() if len(p.elements) == 1}
    return sorted(set(elements) - have)


def check_phases_cover(elements: set[str] | list[str], where: str, line: int | None = None) -> list[Problem]:
    """Problems when a system's elements lack elemental references (the hull needs its corners)."""
    missing = missing_elements(elements)
    if not missing:
        return []
    return [
        Problem(
            where,
            f"no competing phases for element(s) {', '.join(missing)} in configs/phases/",
            sorted(elements),
            "add the element's reference phase to a file in configs/phases/, or give the hull stage an "
            "entries_file (Materials Project entries exported as JSON)",
            line,
        )
    ]


def min_distance_A(structure: Structure) -> float:
    """Shortest interatomic distance (A), for sanity checks of shipped data."""
    dm = structure.distance_matrix
    return float(np.min(dm[np.triu_indices(len(structure), 1)])) if len(structure) > 1 else math.inf
