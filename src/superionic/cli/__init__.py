"""The ``superionic`` command.

Typical session::

    superionic validate workflows/demo.yaml   # check the file, show the job graph; runs nothing
    superionic run workflows/demo.yaml        # run locally on the embedded store, then report
    superionic status workflows/demo.yaml     # done / running / failed / waiting per stage
    superionic report workflows/demo.yaml     # workflows/report/<campaign>/: summary.md, CSV, PNG

Exit status: 0 success, 1 some job failed, 2 invalid input (nothing was written).

One module per command group: :mod:`~superionic.cli.campaign` (validate, run, status, report,
inputs), :mod:`~superionic.cli.order`, :mod:`~superionic.cli.analyze` (the ``analyze`` group) and
:mod:`~superionic.cli.fireworks` (submit, worker, launch, init-site, rerun, cancel),
:mod:`~superionic.cli.store` (the ``store`` group: ``store copy``); what they share
is in :mod:`~superionic.cli.common`. This module builds the command tree, in the order ``--help``
lists it. Command modules import ``common`` only and keep heavy imports inside their functions,
so ``superionic --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from superionic import __version__
from superionic.cli import analyze, campaign, finetune, fireworks, order, store
from superionic.cli.common import console

__all__ = ["app", "entrypoint", "main"]

app = typer.Typer(
    help=(
        "superionic: campaigns for solid electrolytes - order disordered cells, relax, hull, NMR, "
        "AIMD transport (D, sigma, Ea with error bars) and melt-quench, on CHGNet locally or on "
        "DFT through FireWorks/SLURM.\n\nStart with `superionic validate workflows/demo.yaml`."
    ),
    epilog=(
        "[bold]Examples[/bold]\n\n"
        "  superionic validate workflows/demo.yaml        # systems, job graph; runs nothing\n\n"
        "  superionic run workflows/demo.yaml             # run locally; report in workflows/report/\n\n"
        "  superionic status workflows/demo.yaml          # done / running / failed / lost per stage\n\n"
        "  superionic report workflows/demo.yaml --out my_report/\n\n"
        "  superionic run workflows/study_e_argyrodite_disorder.yaml --scale quick   # a paper, on CHGNet\n\n"
        "  superionic report workflows/study_e_argyrodite_disorder.yaml --scale quick  # reproduction.csv\n\n"
        "  superionic order argyrodite --param x=0.5 --supercell 2 1 1 --n 25 --out orderings/\n\n"
        "  superionic inputs argyrodite_bh4 --engine vasp --stage md --preset argyrodite_bh4 --out A/\n\n"
        "  superionic analyze diffusion vasprun.xml --species Li --timestep-fs 2 --temperature-K 800\n\n"
        "  superionic submit study.yaml && superionic launch study.yaml --slurm --jobs 4\n\n"
        "Each command's --help has more examples."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"superionic {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Campaign orchestration for solid-electrolyte studies."""


# the command tree, in the order `superionic --help` lists it
app.command()(campaign.validate)
app.command()(campaign.run)
app.command()(campaign.status)
app.command()(campaign.report)
app.command()(order.order)
app.command()(finetune.finetune)
app.command()(campaign.inputs)
app.command()(fireworks.submit)
app.command()(fireworks.worker)
app.command()(fireworks.launch)
app.command("init-site")(fireworks.init_site)
app.command()(fireworks.rerun)
app.command()(fireworks.cancel)
app.add_typer(store.store_app, name="store")
app.add_typer(analyze.analyze_app, name="analyze")


def entrypoint() -> None:
    """Console-script entry point."""
    app()
