"""Expand a campaign's systems: sweeps, prototypes or structure files, supercells."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymatgen.core import Structure

from superionic.errors import Problem, StructureError
from superionic.spec.models import (
    SystemSpec,
)
from superionic.spec.yaml_errors import _line_of


@dataclass
class SystemInstance:
    """One expanded system of a campaign.

    Attributes
    ----------
    name : str
        Unique name within the campaign.
    spec : SystemSpec
        The system entry with sweep lists replaced by single values.
    structure : Structure
        The (super)cell, disordered or ordered, with oxidation states where known.
    oxidation_states : dict
        Element -> charge used for ordering.
    index : int
        Position of the originating entry in ``systems``.

    """

    name: str
    spec: SystemSpec
    structure: Structure
    oxidation_states: dict[str, float]
    index: int
    polyanions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_ordered(self) -> bool:
        """Whether every site is fully occupied by one species."""
        return self.structure.is_ordered

    @property
    def elements(self) -> set[str]:
        """Elements of the final structures (rigid units' ligands included)."""
        els = {el.symbol for el in self.structure.composition.elements if el.symbol != "X"}
        els |= {str(u.get("ligand")) for u in self.polyanions.values() if u.get("ligand")}
        return els


def _expand(system: SystemSpec) -> list[tuple[str, dict[str, Any]]]:
    sweep = {k: v for k, v in system.params.items() if isinstance(v, list)}
    fixed = {k: v for k, v in system.params.items() if not isinstance(v, list)}
    if not sweep:
        return [("", dict(fixed))]
    keys = list(sweep)
    out = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        params = dict(fixed)
        params.update(dict(zip(keys, combo, strict=True)))
        suffix = "-".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
        out.append((suffix, params))
    return out


def _build_system(
    campaign_dir: Path, system: SystemSpec, index: int, data: Any
) -> tuple[list[SystemInstance], list[Problem]]:
    where = f"systems[{index}]"
    problems: list[Problem] = []
    instances: list[SystemInstance] = []
    if system.structure is not None:
        path = system.structure if system.structure.is_absolute() else campaign_dir / system.structure
        if not path.is_file():
            problems.append(
                Problem(
                    f"{where}.structure",
                    "structure file not found",
                    str(system.structure),
                    f"an existing CIF/POSCAR path relative to {campaign_dir}",
                    _line_of(data, ("systems", index, "structure")),
                )
            )
            return [], problems
        try:
            structure = Structure.from_file(path)
        except Exception as exc:  # pymatgen raises many types for unreadable files
            problems.append(
                Problem(
                    f"{where}.structure",
                    f"cannot read structure: {exc}",
                    str(path),
                    "a CIF, POSCAR or other pymatgen-readable file",
                )
            )
            return [], problems
        ox = dict(system.oxidation_states)
        name = system.name or path.stem
        structure.make_supercell(list(system.supercell))
        instances.append(SystemInstance(name, system, structure, ox, index, dict(system.polyanions)))
        return instances, problems

    from superionic.structures.prototypes import build_disordered, load_prototype

    try:
        proto = load_prototype(system.prototype or "")
    except StructureError as exc:
        p = exc.problems[0]
        problems.append(
            Problem(
                f"{where}.prototype",
                p.message,
                p.value,
                p.valid,
                _line_of(data, ("systems", index, "prototype")),
            )
        )
        return [], problems
    for suffix, params in _expand(system):
        try:
            structure = build_disordered(
                proto.name, params, system.sites, where=where, oxidation_states=system.oxidation_states
            )
        except StructureError as exc:
            for p in exc.problems:
                loc = tuple(
                    int(x) if x.isdigit() else x
                    for x in p.where.replace("[", ".").replace("]", "").split(".")
                )
                problems.append(Problem(p.where, p.message, p.value, p.valid, _line_of(data, loc)))
            continue
        structure.make_supercell(list(system.supercell))
        base = system.name or proto.name
        name = f"{base}-{suffix}" if suffix else base
        ox = dict(proto.oxidation_states)
        ox.update(system.oxidation_states)
        spec = system.model_copy(update={"params": params})
        units = {**proto.polyanions, **system.polyanions}
        instances.append(SystemInstance(name, spec, structure, ox, index, units))
    return instances, problems
