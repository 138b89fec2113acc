"""Disordered crystal prototypes defined as data.

A prototype file in ``configs/prototypes/<name>.yaml`` gives a space group, a lattice, named
parameters (with defaults and allowed values or ranges) and Wyckoff sites whose occupancies may be
arithmetic expressions of the parameters, and whose species keys may be templated
(``"{halide}"``). :func:`build_disordered` turns it into a partially occupied pymatgen
``Structure`` with a ``wyckoff`` site property, ready for ordering.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pymatgen.core import Composition, Element, Lattice, Structure
from ruamel.yaml import YAML

from superionic.errors import Problem, StructureError
from superionic.paths import configs_dir

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def evaluate_expression(expr: str | float | int, params: dict[str, Any]) -> float:
    """Evaluate an arithmetic occupancy expression such as ``"1 - site_mixing"``.

    Only numbers, parameter names and ``+ - * /`` are allowed.

    Parameters
    ----------
    expr : str or float
        The expression, or a plain number.
    params : dict
        Parameter values by name.

    Returns
    -------
    float
        The value.

    """
    if isinstance(expr, int | float):
        return float(expr)

    def _eval(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return _eval(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in params:
                raise KeyError(node.id)
            return float(params[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](_eval(node.operand))
        raise ValueError(f"unsupported expression element {ast.dump(node)}")

    return _eval(ast.parse(str(expr), mode="eval"))


@dataclass
class Prototype:
    """A disordered crystal prototype loaded from ``configs/prototypes``.

    Attributes
    ----------
    name : str
        Prototype name (the file stem).
    spacegroup : str
        Hermann-Mauguin symbol.
    lattice : dict
        Lattice parameters (``a``, optional ``b``, ``c``, ``alpha``, ``beta``, ``gamma``) in A/deg.
    parameters : dict
        Parameter name -> ``{default, allowed | min/max}``.
    sites : list of dict
        Wyckoff sites: ``label``, ``wyckoff``, ``coords``, ``species`` (symbol -> occupancy).
    oxidation_states : dict
        Nominal oxidation state per element, used for charge balance and Ewald ordering.

    """

    name: str
    spacegroup: str
    lattice: dict[str, float]
    parameters: dict[str, dict[str, Any]]
    sites: list[dict[str, Any]]
    oxidation_states: dict[str, float]
    description: str = ""
    lattice_by_parameter: dict[str, dict[str, float]] = field(default_factory=dict)
    lattice_by_expression: dict[str, str] = field(default_factory=dict)
    derived: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    polyanions: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None

    def defaults(self) -> dict[str, Any]:
        """Return the default value of every parameter."""
        return {k: v.get("default") for k, v in self.parameters.items()}


def list_prototypes() -> list[str]:
    """Return the names of the prototypes shipped in ``configs/prototypes``."""
    return sorted(p.stem for p in (configs_dir() / "prototypes").glob("*.yaml"))


def load_prototype(name: str) -> Prototype:
    """Load a prototype by name.

    Raises
    ------
    StructureError
        When no such prototype exists (the message lists the known ones).

    """
    path = configs_dir() / "prototypes" / f"{name}.yaml"
    if not path.is_file():
        raise StructureError.single("prototype", "unknown prototype", name, ", ".join(list_prototypes()))
    data = YAML(typ="safe").load(path.read_text())
    return Prototype(
        name=name,
        spacegroup=data["spacegroup"],
        lattice=dict(data["lattice"]),
        parameters=dict(data.get("parameters", {})),
        sites=list(data["sites"]),
        oxidation_states=dict(data.get("oxidation_states", {})),
        description=data.get("description", ""),
        lattice_by_parameter=dict(data.get("lattice_by_parameter", {})),
        lattice_by_expression=dict(data.get("lattice_by_expression", {})),
        derived=dict(data.get("derived", {})),
        polyanions=dict(data.get("polyanions", {})),
        source=path,
    )


def resolve_parameters(proto: Prototype, params: dict[str, Any], where: str) -> dict[str, Any]:
    """Merge user parameters with the defaults and check names, allowed values and ranges.

    Raises
    ------
    StructureError
        Listing every unknown or out-of-range parameter.

    """
    problems: list[Problem] = []
    values = proto.defaults()
    for key, value in params.items():
        if key not in proto.parameters:
            problems.append(
                Problem(
                    f"{where}.{key}",
                    f"prototype '{proto.name}' has no parameter '{key}'",
                    value,
                    ", ".join(proto.parameters) or "(none)",
                )
            )
            continue
        rule = proto.parameters[key]
        if "allowed" in rule and value not in rule["allowed"]:
            problems.append(
                Problem(f"{where}.{key}", "value not allowed", value, f"one of {rule['allowed']}")
            )
        if "min" in rule or "max" in rule:
            lo, hi = rule.get("min", float("-inf")), rule.get("max", float("inf"))
            if not isinstance(value, int | float) or not lo <= value <= hi:
                problems.append(
                    Problem(f"{where}.{key}", "value out of range", value, f"a number in [{lo}, {hi}]")
                )
        values[key] = value
    if problems:
        raise StructureError(problems)
    # derived quantities: name -> {parameter: {value: number}}
    for name, rule in proto.derived.items():
        ((pname, table),) = rule.items()
        values[name] = float(table[str(values[pname])])
    return values


def _lattice(proto: Prototype, values: dict[str, Any]) -> Lattice:
    lat = dict(proto.lattice)
    for pname, table in proto.lattice_by_parameter.items():
        if values.get(pname) in table:
            entry = table[values[pname]]
            lat.update(entry if isinstance(entry, dict) else {"a": entry})
    for key, expr in proto.lattice_by_expression.items():
        lat[key] = evaluate_expression(expr, values)
    for key in ("a", "b", "c", "alpha", "beta", "gamma"):
        if values.get(key) is not None:
            lat[key] = float(values[key])
    a = lat["a"]
    return Lattice.from_parameters(
        a,
        lat.get("b", a),
        lat.get("c", a),
        lat.get("alpha", 90.0),
        lat.get("beta", 90.0),
        lat.get("gamma", 120.0 if proto.spacegroup.startswith("P6") else 90.0),
    )


@lru_cache(maxsize=32)
def _space_group(symbol: str | int) -> Any:
    """Return the SpaceGroup of pymatgen, built once per symbol (its constructor takes ~0.5 s)."""
    from pymatgen.symmetry.groups import SpaceGroup

    try:
        return SpaceGroup.from_int_number(int(symbol))
    except ValueError:
        return SpaceGroup(str(symbol))


def from_spacegroup(
    spacegroup: str | int,
    lattice: Lattice,
    species: list[Any],
    coords: list[list[float]],
    site_properties: dict[str, list[Any]] | None = None,
) -> Structure:
    """``Structure.from_spacegroup`` with the space group built once per symbol.

    pymatgen caches the SpaceGroup instance but re-runs its ``__init__`` (the symmetry-operation
    de-duplication, ~0.5 s) on every call: a 40-composition sweep paid 20 s in every process that
    read the campaign (each FireWorks worker). The orbit expansion is pymatgen's own ``get_orbit``.

    Parameters
    ----------
    spacegroup : str or int
        Hermann-Mauguin symbol or number.
    lattice : Lattice
        A lattice compatible with the space group.
    species, coords : list
        One species (or partial-occupancy Composition) and fractional position per Wyckoff site.
    site_properties : dict, optional
        One value per Wyckoff site for each property; copied to every site of its orbit.

    Returns
    -------
    Structure
        Every site of every orbit, in the order pymatgen gives them.
    """
    spg = _space_group(spacegroup)
    if not spg.is_compatible(lattice):
        raise ValueError(f"lattice {lattice.parameters} is incompatible with space group {spg.symbol}")
    if len(species) != len(coords):
        raise ValueError(f"{len(species)} species but {len(coords)} positions")
    all_species: list[Any] = []
    all_coords: list[Any] = []
    props: dict[str, list[Any]] = {k: [] for k in site_properties or {}}
    for i, (sp, c) in enumerate(zip(species, coords, strict=True)):
        orbit = spg.get_orbit(c, tol=1e-5)
        all_species += [sp] * len(orbit)
        all_coords += orbit
        for k, v in (site_properties or {}).items():
            props[k] += [v[i]] * len(orbit)
    return Structure(lattice, all_species, all_coords, site_properties=props or None)


def build_disordered(
    name: str,
    params: dict[str, Any] | None = None,
    site_overrides: dict[str, dict[str, float]] | None = None,
    where: str = "system",
    oxidation_states: dict[str, float] | None = None,
) -> Structure:
    """Build the disordered conventional cell of a prototype.

    Parameters
    ----------
    name : str
        Prototype name (``configs/prototypes/<name>.yaml``).
    params : dict, optional
        Parameter values (others take their defaults).
    site_overrides : dict, optional
        Site label -> ``{species: occupancy}`` replacing the prototype's occupancies.
    where : str
        Field path used in error messages.
    oxidation_states : dict, optional
        The system's own oxidation states (its ``oxidation_states:`` key), over the prototype's.
        When given, an element that has none is reported at ``<where>.oxidation_states``.

    Returns
    -------
    Structure
        Partially occupied structure with site properties ``wyckoff`` (the site label).

    Raises
    ------
    StructureError
        Unknown parameters or site labels, occupancies above 1 or negative, or a composition
        that is not charge balanced with the prototype's oxidation states.

    """
    proto = load_prototype(name)
    values = resolve_parameters(proto, params or {}, f"{where}.params")
    labels = [s["label"] for s in proto.sites]
    problems: list[Problem] = []
    overrides = site_overrides or {}
    for label in overrides:
        if label not in labels:
            problems.append(
                Problem(
                    f"{where}.sites.{label}",
                    "no such site in the prototype",
                    label,
                    ", ".join(labels),
                )
            )
    species_list: list[dict[str, float]] = []
    coords: list[list[float]] = []
    for site in proto.sites:
        occ: dict[str, float] = {}
        if site["label"] in overrides:
            raw: dict[str, Any] = dict(overrides[site["label"]])
        else:
            raw = dict(site["species"])
        for key, expr in raw.items():
            symbol = str(key).format(**values)
            if not Element.is_valid_symbol(symbol):  # pymatgen would take it as a dummy species
                problems.append(
                    Problem(
                        f"{where}.sites.{site['label']}.{symbol}",
                        "not a chemical element",
                        symbol,
                        "an element symbol such as Se or Br",
                    )
                )
                continue
            value = evaluate_expression(expr, values)
            if value < -1e-9:
                problems.append(
                    Problem(
                        f"{where}.sites.{site['label']}.{symbol}",
                        "negative occupancy",
                        value,
                        ">= 0",
                    )
                )
            if value > 1e-12:
                occ[symbol] = occ.get(symbol, 0.0) + value
        total = sum(occ.values())
        if total > 1 + 1e-6:
            problems.append(
                Problem(
                    f"{where}.sites.{site['label']}",
                    f"total occupancy of Wyckoff site {site['wyckoff']} is {total:g}, above 1",
                    dict(occ),
                    "occupancies summing to at most 1",
                )
            )
        species_list.append(occ)
        coords.append([float(c) for c in site["coords"]])
    if problems:
        raise StructureError(problems)
    lattice = _lattice(proto, values)
    structure = from_spacegroup(
        proto.spacegroup,
        lattice,
        [Composition(o) if o else Composition({"X0+": 0}) for o in species_list],
        coords,
        site_properties={"wyckoff": labels},
    )
    if oxidation_states is None:
        check_charge_balance(structure, proto.oxidation_states, where)
        return structure
    ox = {**proto.oxidation_states, **oxidation_states}
    missing = sorted({el.symbol for el in structure.composition.elements} - set(ox))
    if missing:
        raise StructureError.single(
            f"{where}.oxidation_states",
            f"no oxidation state for {', '.join(missing)} (known: {', '.join(ox)})",
            missing,
            f"add them to {where}.oxidation_states, e.g. oxidation_states: {{{missing[0]}: CHARGE}}",
        )
    check_charge_balance(structure, ox, where)
    return structure


def check_charge_balance(
    structure: Structure, oxidation_states: dict[str, float], where: str, tol: float = 1e-3
) -> float:
    """Check that a (possibly disordered) structure is neutral with the given oxidation states.

    Returns
    -------
    float
        The net charge per cell (zero within ``tol``).

    Raises
    ------
    StructureError
        When an element has no oxidation state or the cell carries a net charge.

    """
    comp = structure.composition
    missing = [el.symbol for el in comp.elements if el.symbol not in oxidation_states]
    if missing:
        raise StructureError.single(
            where,
            f"no oxidation state for {', '.join(missing)}",
            missing,
            "add them to the prototype's oxidation_states",
        )
    charge = sum(amt * oxidation_states[el.symbol] for el, amt in comp.items())
    if abs(charge) > tol:
        formula = comp.reduced_formula if comp.is_element is False else str(comp)
        raise StructureError.single(
            where,
            f"composition {comp.formula} ({formula}) is not charge balanced: net charge "
            f"{charge:+.3f} e per cell with oxidation states {oxidation_states}",
            None,
            "occupancies whose charges sum to zero",
        )
    return charge
