"""The ``superionic`` command.

Typical session::

    superionic validate workflows/demo.yaml   # check the file, show the job graph; runs nothing
    superionic run workflows/demo.yaml        # run locally on the embedded store, then report
    superionic status workflows/demo.yaml     # done / running / failed / waiting per stage
    superionic report workflows/demo.yaml     # report/<campaign>/: summary.md, CSV, PNG

Exit status: 0 success, 1 some job failed, 2 invalid input (nothing was written).
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from superionic import __version__
from superionic.errors import SuperionicError

app = typer.Typer(
    help=(
        "superionic: campaigns for solid electrolytes - order disordered cells, relax, hull, NMR, "
        "AIMD transport (D, sigma, Ea with error bars) and melt-quench, on CHGNet locally or on "
        "DFT through FireWorks/SLURM.\n\nStart with `superionic validate workflows/demo.yaml`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
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

    return wrapper  # type: ignore[return-value]


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    import logging

    for name in ("jobflow", "atomate2", "pymatgen", "maggma"):
        logging.getLogger(name).setLevel(logging.WARNING)


CampaignArg = Annotated[Path, typer.Argument(help="Campaign YAML file (see workflows/).")]


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


@app.command()
@_user_errors
def validate(file: CampaignArg) -> None:
    """Check a campaign file and print the expanded systems and the job graph (runs nothing).

    Every problem is printed on its own line as FILE:LINE: FIELD: MESSAGE (got VALUE); valid:
    ...; the exit status is 2 when there is any.
    """
    _quiet()
    from superionic.flows import build_flows, planned_jobs
    from superionic.ordering.ewald import count_orderings, find_sublattices
    from superionic.spec import load_campaign

    campaign = load_campaign(file)
    spec = campaign.spec
    console.print(
        f"[bold]{spec.name}[/bold]  engine={spec.engine} preset={spec.preset} "
        f"store={spec.store.uri or campaign.store_path}"
    )
    systems = Table(title="systems", show_lines=False)
    for col in ("system", "formula (cell)", "sites", "ordered", "configurations"):
        systems.add_column(col)
    for s in campaign.systems:
        n_conf = "1"
        if not s.is_ordered:
            subs, _ = find_sublattices(s.structure)
            n = count_orderings(subs)
            n_conf = f"{n:.3e}" if n > 1e6 else str(n)
        systems.add_row(
            s.name,
            s.structure.composition.formula,
            str(len(s.structure)),
            "yes" if s.is_ordered else "no",
            n_conf,
        )
    console.print(systems)
    planned = planned_jobs(build_flows(campaign))
    jobs = Table(title="job graph (execution order)")
    for col in ("#", "system", "stage", "job", "fingerprint"):
        jobs.add_column(col)
    for i, p in enumerate(planned):
        jobs.add_row(str(i + 1), p.system, p.stage, p.name, p.fingerprint[:12])
    console.print(jobs)
    per_stage: dict[str, int] = {}
    for p in planned:
        per_stage[p.stage] = per_stage.get(p.stage, 0) + 1
    console.print(
        "jobs per stage: " + ", ".join(f"{k} {v}" for k, v in per_stage.items()) + f"; total {len(planned)}"
    )


@app.command()
@_user_errors
def run(
    file: CampaignArg,
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
    out: Annotated[Path | None, typer.Option(help="Report folder (default report/<campaign>).")] = None,
) -> None:
    """Run a campaign on this machine (embedded store, or MongoDB if the file gives a URI).

    Finished jobs (same structure and settings, by fingerprint) are not recomputed: running a
    finished campaign again returns at once. One run per embedded store at a time.
    """
    _quiet()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.dispatch.local import exclusive_run, run_flows
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    campaign = load_campaign(file)
    flows = build_flows(campaign)
    planned = planned_jobs(flows)
    store = open_campaign_store(campaign, create=True)
    assert store is not None
    root = store.root or Path.cwd() / ".superionic"
    with exclusive_run(root):
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("starting", total=len(planned))

            def on_event(kind: str, job: Any, info: str) -> None:
                if kind == "start":
                    progress.update(task, description=f"running {job.name}")
                    return
                mark = {
                    "done": "[green]done[/green]",
                    "skip": "[dim]already done[/dim]",
                    "fail": "[red]FAILED[/red]",
                    "block": "[yellow]blocked[/yellow]",
                }[kind]
                progress.console.print(f"{mark} {job.name} {info}")
                progress.advance(task)

            summary = run_flows(flows, store, root / "jobs", on_event=on_event)
            progress.update(task, description="finished")
    console.print(
        f"{len(summary.done)} run, {len(summary.skipped)} already done, "
        f"{len(summary.failed)} failed, {len(summary.blocked)} blocked "
        f"in {summary.seconds:.0f} s"
    )
    for uuid, message in summary.failed.items():
        name = next(p.name for p in planned if p.uuid == uuid)
        typer.echo(f"failed: {name}: {message}", err=True)
    if report:
        from superionic.report import write_report

        target = out or Path("report") / campaign.spec.name
        files = write_report(campaign.spec.name, planned, store, target)
        console.print(f"report: {target}/ ({', '.join(f.name for f in files)})")
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
@_user_errors
def status(
    file: Annotated[Path | None, typer.Argument(help="Campaign YAML (omit to list a store).")] = None,
    store_dir: Annotated[Path, typer.Option("--store", help="Embedded store folder, without FILE.")] = Path(
        ".superionic"
    ),
) -> None:
    """Show per system and stage how many jobs are done, running, failed, blocked or waiting."""
    _quiet()
    from superionic.report.status import STATES, campaign_status

    if file is None:
        _status_of_store(store_dir)
        return
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    campaign = load_campaign(file)
    planned = planned_jobs(build_flows(campaign))
    store = open_campaign_store(campaign, create=False)
    table = campaign_status(planned, store)
    out = Table(title=f"{campaign.spec.name}: status")
    out.add_column("system")
    out.add_column("stage")
    for s in STATES:
        out.add_column(s, justify="right")
    for (system, stage), counts in table.counts.items():
        out.add_row(system, stage, *[str(counts.get(s, 0) or "") for s in STATES])
    total = table.total()
    out.add_row("[bold]total[/bold]", "", *[str(total.get(s, 0)) for s in STATES])
    console.print(out)
    for name, message in table.failures:
        console.print(f"[red]failed[/red] {name}: {message}", markup=True, highlight=False)


def _status_of_store(store_dir: Path) -> None:
    from collections import Counter

    from superionic.dispatch.stores import JournalStore

    path = store_dir / "state.jsonl"
    if not path.is_file():
        raise SuperionicError.single(
            "--store",
            "no superionic store here",
            str(store_dir),
            "a folder made by `superionic run` (or give the campaign FILE)",
        )
    state = JournalStore(path, collection_name="state", key="uuid")
    state.connect()
    counts: Counter = Counter()
    for d in state.query({}):
        counts[(d.get("campaign"), d.get("system"), d.get("stage"), d.get("state"))] += 1
    out = Table(title=f"store {store_dir}")
    for col in ("campaign", "system", "stage", "state", "jobs"):
        out.add_column(col)
    for (c, sy, st, s), n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0]))):
        out.add_row(str(c), str(sy), str(st), str(s), str(n))
    console.print(out)


@app.command()
@_user_errors
def report(
    file: CampaignArg,
    out: Annotated[Path | None, typer.Option(help="Report folder (default report/<campaign>).")] = None,
) -> None:
    """Write summary.md, CSV tables (orderings, relax, diffusion, arrhenius) and PNG plots."""
    _quiet()
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.report import write_report
    from superionic.spec import load_campaign

    campaign = load_campaign(file)
    store = open_campaign_store(campaign, create=False)
    if store is None:
        raise SuperionicError.single(
            "store",
            "this campaign has not run yet (no store)",
            str(campaign.store_path),
            f"run `superionic run {file}` first",
        )
    planned = planned_jobs(build_flows(campaign))
    target = out or Path("report") / campaign.spec.name
    files = write_report(campaign.spec.name, planned, store, target)
    console.print(f"report: {target}/")
    for f in files:
        console.print(f"  {f}")


def entrypoint() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
