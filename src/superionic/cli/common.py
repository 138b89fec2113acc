"""What every command group shares: the console, error reporting, common arguments and options.

Command modules import this module only (never each other, never the ``cli`` package), and keep
heavy imports inside their command functions so that ``superionic --help`` stays fast.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from superionic.errors import SuperionicError

console = Console()

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(func: F) -> F:
    """Print SuperionicError problems one per line and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SuperionicError as exc:
            for problem in exc.problems:
                typer.echo(f"error: {problem.format(exc.file)}", err=True)
            raise typer.Exit(2) from None
        except ValueError as exc:
            from superionic.analysis.diffusion import DiffusionInputError

            if not isinstance(exc, DiffusionInputError):
                raise
            source = kwargs.get("traj")
            text = str(exc)
            if source is not None and not text.startswith(str(source)):
                text = f"{source}: {text}"  # name the trajectory the problem is in
            typer.echo(f"error: {text}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def quiet() -> None:
    """Silence warnings and the INFO logs of jobflow, atomate2, pymatgen and maggma."""
    warnings.filterwarnings("ignore")
    import logging

    for name in ("jobflow", "atomate2", "pymatgen", "maggma"):
        logging.getLogger(name).setLevel(logging.WARNING)


CampaignArg = Annotated[Path, typer.Argument(help="Campaign YAML file (see workflows/).")]
ScaleOpt = Annotated[
    str | None,
    typer.Option(
        "--scale",
        help="paper | quick | smoke, for a study file with a `scales:` block (default: its "
        "default_scale): paper = the protocol's engine and sizes, quick = CHGNet on a laptop "
        "(about 30 min), smoke = the whole graph in minutes.",
    ),
]

ForceFieldOpt = Annotated[
    str | None,
    typer.Option(
        "--force-field",
        help="Run every MLIP stage (relax, md, quench; the hull's phases follow relax) on this force "
        "field: a name (CHGNet, SevenNet) or a model folder from `superionic finetune` or a "
        "finetune stage (<store>/models/<sha>). The campaign name gets -ff-<name>, so each model "
        "has its own report: study A's quick table on two models, side by side.",
    ),
]


def print_engine_notes(campaign: Any) -> None:
    """Say which engines the campaign needs that are not on this machine (not an error here)."""
    for note in campaign.notes:
        where = f"{campaign.file.name}:{note.line}" if note.line else campaign.file.name
        typer.echo(
            f"note: {where}: {note.where}: {note.message}. Not needed here: it is needed where the "
            f"jobs run (each {note.value} job checks it when it starts; `superionic run` here refuses it)",
            err=True,
        )


# an example of each KEY=VALUE option, for its error messages
_PAIR_EXAMPLES = {"--param": "halide=Br", "--oxidation": "Li=1", "--polyanion": "B=BH4"}


def parse_pairs(values: list[str], option: str, number: bool) -> dict[str, Any]:
    """Parse repeated KEY=VALUE options into a dict (numbers as floats; all of them if ``number``).

    Parameters
    ----------
    values : list of str
        The option's values, e.g. ``["x=0.5", "halide=Br"]``.
    option : str
        The option's name, for error messages.
    number : bool
        Whether every value must be a number.

    Returns
    -------
    dict
        KEY -> value.

    Raises
    ------
    SuperionicError
        On an item without ``=``, or a value that is not a number when ``number`` is set.

    """
    out: dict[str, Any] = {}
    example = f"e.g. {option} {_PAIR_EXAMPLES.get(option, 'KEY=VALUE')}"
    for item in values:
        if "=" not in item:
            raise SuperionicError.single(option, "expected KEY=VALUE", item, example)
        key, raw = item.split("=", 1)
        value: Any = raw
        try:
            value = float(raw) if number or raw.replace(".", "", 1).lstrip("-").isdigit() else raw
        except ValueError:
            raise SuperionicError.single(option, "value is not a number", item, example) from None
        out[key.strip()] = value
    return out


def check_supercell(supercell: tuple[int, int, int]) -> None:
    """Refuse a supercell the campaign key ``supercell:`` would refuse (each multiple >= 1).

    Parameters
    ----------
    supercell : tuple of int
        The multiples A B C of ``--supercell``.

    Raises
    ------
    SuperionicError
        When a multiple is below 1.

    """
    if any(m < 1 for m in supercell):
        raise SuperionicError.single(
            "--supercell",
            "each multiple must be greater than 0",
            tuple(supercell),
            "three integers >= 1, e.g. --supercell 2 1 1",
        )


def load_input(
    name: str, params: dict[str, Any], option: str
) -> tuple[Any, dict[str, float], dict[str, dict]]:
    """Read a structure file or build a prototype: (structure, oxidation states, polyanions).

    Parameters
    ----------
    name : str
        A structure file path, or a prototype name.
    params : dict
        Prototype parameters (refused for a file).
    option : str
        The argument's name, for error messages.

    Returns
    -------
    tuple
        The structure, the oxidation states (empty for a file) and the polyanions (empty for a file).

    Raises
    ------
    SuperionicError
        For an unreadable file, parameters given with a file, or an unknown name.

    """
    from pymatgen.core import Structure

    from superionic.structures import build_disordered, list_prototypes, load_prototype

    path = Path(name)
    if path.is_file():
        if params:
            raise SuperionicError.single(
                "--param",
                "parameters apply to prototypes, not files",
                params,
                "omit --param for a structure file",
            )
        try:
            return Structure.from_file(path), {}, {}
        except Exception as exc:
            raise SuperionicError.single(
                option, f"cannot read structure: {exc}", str(path), "a CIF or POSCAR readable by pymatgen"
            ) from None
    if name in list_prototypes():
        proto = load_prototype(name)
        return (
            build_disordered(name, params, where="--param"),
            dict(proto.oxidation_states),
            dict(proto.polyanions),
        )
    raise SuperionicError.single(
        option,
        "neither a file nor a prototype",
        name,
        "a structure file path or one of " + ", ".join(list_prototypes()),
    )
