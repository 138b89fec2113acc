"""Campaign commands: validate, run, status, report, and inputs (one job's inputs, written)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from superionic.cli.common import (
    CampaignArg,
    ForceFieldOpt,
    ScaleOpt,
    _user_errors,
    check_supercell,
    console,
    load_input,
    parse_pairs,
    print_engine_notes,
    quiet,
)
from superionic.errors import SuperionicError, mask_uri
from superionic.inputs import writable_stages_text

# FireWorks states as `status` shows them: the state names and their column headings
FW_STATES = ("WAITING", "READY", "RESERVED", "RUNNING", "COMPLETED", "FIZZLED", "DEFUSED")
FW_SHORT = ("wait", "ready", "resv", "run", "done", "fail", "defused")


@_user_errors
def validate(file: CampaignArg, scale: ScaleOpt = None, force_field: ForceFieldOpt = None) -> None:
    """Check a campaign file and print the expanded systems and the job graph (runs nothing).

    Every problem is printed on its own line as FILE:LINE: FIELD: MESSAGE (got VALUE); valid:
    ...; the exit status is 2 when there is any.
    """
    quiet()
    from superionic.flows import build_flows, planned_jobs
    from superionic.ordering.ewald import count_orderings, find_sublattices
    from superionic.spec import load_campaign

    campaign = load_campaign(
        file, check_engines="note", machine_checks=True, scale=scale, force_field=force_field
    )
    spec = campaign.spec
    console.print(
        f"[bold]{spec.name}[/bold]  "
        + (f"scale={campaign.scale} " if campaign.scale else "")
        + f"engine={spec.engine} preset={spec.preset} "
        f"store={mask_uri(spec.store.uri) if spec.store.uri else campaign.store_path}"
    )
    print_engine_notes(campaign)
    systems = Table(title="systems", show_lines=False)
    for col in ("system", "formula (cell)", "sites", "ordered", "configurations"):
        systems.add_column(col)
    order = next((st for st in spec.stages if st.stage == "order"), None)
    for s in campaign.systems:
        n_conf = "1"
        if not s.is_ordered:
            subs, _ = find_sublattices(
                s.structure,
                round_counts=getattr(order, "round_counts", False),
                group_by=getattr(order, "group_by", "wyckoff"),
            )
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


@_user_errors
def run(
    file: CampaignArg,
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
    report: Annotated[bool, typer.Option(help="Write the report when the run ends.")] = True,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: report/<campaign> beside the campaign file).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Write every relax job's inputs to <store>/dry-run/ instead of running."
        ),
    ] = False,
) -> None:
    """Run a campaign on this machine (embedded store, or MongoDB if the file gives a URI).

    Finished jobs (same structure and settings, by fingerprint) are not recomputed: running a
    finished campaign again returns at once. One run per embedded store at a time.
    """
    quiet()
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

    campaign = load_campaign(
        file,
        check_engines="note" if dry_run else "require",
        machine_checks=True,
        scale=scale,
        force_field=force_field,
    )
    _check_store_writable(campaign, file)
    if dry_run:
        print_engine_notes(campaign)
        _dry_run(campaign)
        return
    from superionic.dispatch.threads import configure_process

    console.print(configure_process(campaign.spec.resources).describe())
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
                from rich.markup import escape

                if kind == "start":
                    progress.update(task, description=escape(f"running {job.name}"))
                    return
                mark = {
                    "done": "[green]done[/green]",
                    "skip": "[dim]already done[/dim]",
                    "fail": "[red]FAILED[/red]",
                    "block": "[yellow]blocked[/yellow]",
                }[kind]
                progress.console.print(
                    f"{mark} {escape(str(job.name))} {escape(info)}"
                )  # names hold [variant]
                progress.advance(task)

            from superionic.engines.guard import engine_checks

            with engine_checks():
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

        target = _report_dir(campaign, out)
        files = write_report(campaign.spec.name, planned, store, target, campaign=campaign)
        console.print(f"report: {target}/ ({', '.join(f.name for f in files)})", soft_wrap=True)
        _print_hull(target)
    if not summary.ok:
        raise typer.Exit(1)


def _check_store_writable(campaign: Any, file: Path) -> None:
    """Refuse, in one line naming the folder, an embedded store that cannot be created or written."""
    if campaign.spec.store.uri:
        return
    import tempfile

    root = campaign.store_path
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):  # an existing read-only folder passes mkdir
            pass
    except OSError as exc:
        raise SuperionicError.single(
            "store.path" if campaign.spec.store.path else "store",
            f"cannot write the store folder ({exc.strerror or exc})",
            str(root),
            "a folder you can write to: fix its permissions, or set store: {path: DIR} in the campaign file",
            file=str(file),
        ) from None


def _dry_run(campaign: Any) -> None:
    """Write the inputs of every relax job (orderings computed now) under <store>/dry-run/."""
    from superionic.engines import stage_overrides
    from superionic.inputs import write_stage_inputs
    from superionic.stages.order import order_maker_for

    spec = campaign.spec
    stages = {s.stage: s for s in spec.stages}
    target = campaign.store_path / "dry-run"
    n_written = 0
    for system in campaign.systems:
        if "order" in stages:
            o = stages["order"]
            structures = order_maker_for(o, system).run(system.structure)[1]
        else:
            structures = [system.structure]
        for k, s in enumerate(structures):
            s = s.copy()
            s.remove_oxidation_states()
            if "relax" in stages:
                st = stages["relax"]
                folder = target / system.name / f"ordering_{k}" / "relax"
                write_stage_inputs(
                    s,
                    st.engine or spec.engine,
                    st.preset or spec.preset,
                    "relax",
                    folder,
                    stage_overrides(st),
                )
                n_written += 1
    console.print(f"dry run: inputs of {n_written} relax job(s) written under {target}/ (nothing ran)")


@_user_errors
def status(
    file: Annotated[Path | None, typer.Argument(help="Campaign YAML (omit to list a store).")] = None,
    store_dir: Annotated[Path, typer.Option("--store", help="Embedded store folder, without FILE.")] = Path(
        ".superionic"
    ),
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
) -> None:
    """Show per system and stage how many jobs are done, running, failed, blocked, lost or waiting.

    A job recorded as running whose process is gone (pid not alive on this host) is lost, in
    both views (FILE and --store). In a narrow terminal, state columns with no job are left out.
    """
    quiet()
    from superionic.report.status import campaign_status, render_status

    if file is None:
        _status_of_store(store_dir)
        return
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    campaign = load_campaign(file, check_engines="note", scale=scale, force_field=force_field)
    planned = planned_jobs(build_flows(campaign))
    store = open_campaign_store(campaign, create=False)
    table = campaign_status(planned, store)
    console.print(render_status(f"{campaign.spec.name}: status", table, console.width))
    for name, message in table.failures:
        console.print(f"[red]failed[/red] {name}: {message}", markup=True, highlight=False)
    from superionic.dispatch.fireworks import open_launchpad

    lp = open_launchpad(campaign, create=False)
    if lp is not None:
        print_fireworks_status(campaign.spec.name, lp)


def _status_of_store(store_dir: Path) -> None:
    from superionic.report.listing import store_job_counts

    counts = store_job_counts(store_dir)
    if counts is None:
        raise SuperionicError.single(
            "--store",
            "no superionic store here",
            str(store_dir),
            "a folder made by `superionic run` (or give the campaign FILE)",
        )
    from rich.markup import escape

    out = Table(title=f"store {store_dir}")
    for col in ("campaign", "system", "stage", "state", "jobs"):
        out.add_column(col, no_wrap=col == "system")  # a sweep's systems differ only at the end
    for (c, sy, st, s), n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0]))):
        out.add_row(escape(str(c)), escape(str(sy)), str(st), str(s), str(n))
    console.print(out)


def print_fireworks_status(campaign_name: str, lp: Any) -> None:
    """Print a table of firework states per system and stage, with the workers (SLURM job ids) running them.

    Parameters
    ----------
    campaign_name : str
        The campaign whose fireworks to show.
    lp : LaunchPad
        The campaign's LaunchPad.

    """
    from superionic.dispatch.fireworks import fireworks_status

    rows = fireworks_status(lp, campaign_name)
    if not rows:
        return
    out = Table(title=f"{campaign_name}: FireWorks")
    out.add_column("system")
    out.add_column("stage")
    for s in FW_SHORT:
        out.add_column(s, justify="right")
    out.add_column("running on (worker / SLURM job)")
    for r in rows:
        out.add_row(r["system"], r["stage"], *[str(r.get(s, "") or "") for s in FW_STATES], r["workers"])
    console.print(out)


@_user_errors
def report(
    file: CampaignArg,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: report/<campaign> beside the campaign file).")
    ] = None,
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
) -> None:
    """Write summary.md, CSV tables (orderings, relax, diffusion, arrhenius, ...) and PNG plots.

    The report goes to <campaign dir>/report/<campaign name>/ (beside the store), or --out. A
    study file (``reproduces: study_a``) also gets reproduction.csv and reproduction.png: every
    number of the paper beside ours, with a verdict. Example::

        superionic report workflows/study_e_argyrodite_disorder.yaml --scale quick
    """
    quiet()
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.report import write_report
    from superionic.spec import load_campaign

    campaign = load_campaign(file, check_engines="note", scale=scale, force_field=force_field)
    store = open_campaign_store(campaign, create=False)
    if store is None:
        raise SuperionicError.single(
            "store",
            "this campaign has not run yet (no store)",
            str(campaign.store_path),
            f"run `superionic run {file}` first",
        )
    planned = planned_jobs(build_flows(campaign))
    target = _report_dir(campaign, out)
    files = write_report(campaign.spec.name, planned, store, target, campaign=campaign)
    console.print(f"report: {target}/", soft_wrap=True)
    for f in files:
        console.print(f"  {f}", soft_wrap=True)
    _print_hull(target)


def _report_dir(campaign: Any, out: Path | None) -> Path:
    """``--out``, else ``<campaign dir>/report/<campaign name>`` (beside the store, whatever the cwd)."""
    return out if out is not None else campaign.directory / "report" / campaign.spec.name


def _print_hull(report_dir: Path) -> None:
    """Print hull.csv (if the campaign has a hull stage), one line per structure."""
    from superionic.report.listing import hull_rows

    rows = hull_rows(report_dir)
    if rows is None:
        return
    console.print("energy above hull (E_hull, meV/atom), decomposition:")
    for r in rows:
        typer.echo(
            f"  E_hull {float(r['e_hull_meV_per_atom']):7.1f} meV/atom  {r['structure']}  "
            f"({r['formula']}) -> {r['decomposition']}"
        )


@_user_errors
def inputs(
    structure: Annotated[
        str, typer.Argument(help="Structure file (CIF/POSCAR), or an ordered prototype name.")
    ],
    engine: Annotated[str, typer.Option(help="vasp, cp2k or mlip.")] = "vasp",
    preset: Annotated[str, typer.Option(help="Preset in configs/engines (e.g. argyrodite_bh4).")] = "default",
    stage: Annotated[
        str, typer.Option(help=f"Stage whose inputs to write: {writable_stages_text()}.")
    ] = "relax",
    out: Annotated[Path, typer.Option(help="Folder for the input files.")] = Path("inputs"),
    supercell: Annotated[tuple[int, int, int], typer.Option(help="Supercell multiples A B C.")] = (1, 1, 1),
    param: Annotated[
        list[str] | None, typer.Option(help="Prototype parameter KEY=VALUE (repeatable).")
    ] = None,
) -> None:
    """Write the inputs a job would run with, without running.

    VASP: INCAR, KPOINTS, POSCAR and POTCAR.spec (a POTCAR when PMG_VASP_PSP_DIR is set).
    CP2K: cp2k.inp with the BASIS and POTENTIAL files it reads. MLIP: POSCAR and settings.json.
    A prototype name is ordered first (lowest Ewald energy, seed 0). Examples::

        superionic inputs argyrodite_bh4 --supercell 2 1 1 --engine vasp --preset argyrodite_bh4 --out A/
        superionic inputs antiperovskite_amide --engine cp2k --preset antiperovskite_amide --out B/
    """
    from superionic.inputs import write_stage_inputs
    from superionic.stages.order import ordered_structures

    quiet()
    check_supercell(supercell)
    s, ox, units = load_input(structure, parse_pairs(param or [], "--param", number=False), "STRUCTURE")
    s.make_supercell(list(supercell))
    if not s.is_ordered and ox:  # a prototype: order it (lowest Ewald energy, seed 0)
        s = ordered_structures(s, 1, ox, units)[1][0]
    if not s.is_ordered:
        raise SuperionicError.single(
            "STRUCTURE",
            "the structure has partial occupancies",
            structure,
            "an ordered structure (use `superionic order` first)",
        )
    if engine not in ("vasp", "mlip", "cp2k"):
        raise SuperionicError.single("--engine", "unknown engine", engine, "vasp, mlip or cp2k")
    files = write_stage_inputs(s, engine, preset, stage, out)
    console.print(f"{s.composition.formula} ({len(s)} atoms) -> {out}/: " + ", ".join(f.name for f in files))
