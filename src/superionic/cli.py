"""The ``superionic`` command.

Typical session::

    superionic validate workflows/demo.yaml   # check the file, show the job graph; runs nothing
    superionic run workflows/demo.yaml        # run locally on the embedded store, then report
    superionic status workflows/demo.yaml     # done / running / failed / waiting per stage
    superionic report workflows/demo.yaml     # workflows/report/<campaign>/: summary.md, CSV, PNG

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
from superionic.inputs import writable_stages_text

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


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    import logging

    for name in ("jobflow", "atomate2", "pymatgen", "maggma"):
        logging.getLogger(name).setLevel(logging.WARNING)


CampaignArg = Annotated[Path, typer.Argument(help="Campaign YAML file (see workflows/).")]


def print_engine_notes(campaign: Any) -> None:
    """Say which engines the campaign needs that are not on this machine (not an error here)."""
    for note in campaign.notes:
        where = f"{campaign.file.name}:{note.line}" if note.line else campaign.file.name
        typer.echo(
            f"note: {where}: {note.where}: {note.message}. Not needed here: it is needed where the "
            f"jobs run (each {note.value} job checks it when it starts; `superionic run` here refuses it)",
            err=True,
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

    campaign = load_campaign(file, check_engines="note")
    spec = campaign.spec
    console.print(
        f"[bold]{spec.name}[/bold]  engine={spec.engine} preset={spec.preset} "
        f"store={spec.store.uri or campaign.store_path}"
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


@app.command()
@_user_errors
def run(
    file: CampaignArg,
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

    With SUPERIONIC_VASP_REPLAY=<dir>, VASP jobs replay the real outputs in <dir>/<stage>/outputs
    after checking the inputs they wrote against the preset (no VASP needed).

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

    campaign = load_campaign(file, check_engines="note" if dry_run else "require")
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

            from contextlib import nullcontext

            from superionic.engines.replay import replay_from_environment, vasp_replay

            replay = replay_from_environment()
            required = {st.stage: _stage_incar(campaign, st) for st in campaign.spec.stages}
            required.update(nmr_cs={"LCHIMAG": True}, nmr_efg={"LEFG": True})
            from superionic.engines.guard import engine_checks

            with engine_checks(), vasp_replay(replay, required) if replay else nullcontext():
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
        files = write_report(campaign.spec.name, planned, store, target)
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


def _stage_incar(campaign: Any, stage: Any) -> dict[str, Any]:
    from superionic.engines import stage_settings

    engine = stage.engine or campaign.spec.engine
    if engine != "vasp":
        return {}
    settings = stage_settings(stage.preset or campaign.spec.preset, "vasp", stage.stage, _overrides(stage))
    required = dict(settings.get("incar", {}))
    if stage.stage == "md":  # what every production segment must say
        required.update(
            IBRION=0,
            MDALGO=3 if settings.get("ensemble", "nvt") == "npt" else 2,
            POTIM=float(settings.get("timestep_fs", 2.0)),
        )
        if not settings.get("ramp_steps") and int(settings.get("production_chunks", 1)) == 1:
            required.update(NSW=int(settings["production_steps"]))
            if len(stage.temperatures_K) == 1:
                required.update(TEBEG=stage.temperatures_K[0], TEEND=stage.temperatures_K[0])
    return required


def _dry_run(campaign: Any) -> None:
    """Write the inputs of every relax job (orderings computed now) under <store>/dry-run/."""
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
                    s, st.engine or spec.engine, st.preset or spec.preset, "relax", folder, _overrides(st)
                )
                n_written += 1
    console.print(f"dry run: inputs of {n_written} relax job(s) written under {target}/ (nothing ran)")


def _overrides(stage: Any) -> dict[str, Any]:
    from superionic.engines import stage_overrides

    return stage_overrides(stage)


@app.command()
@_user_errors
def status(
    file: Annotated[Path | None, typer.Argument(help="Campaign YAML (omit to list a store).")] = None,
    store_dir: Annotated[Path, typer.Option("--store", help="Embedded store folder, without FILE.")] = Path(
        ".superionic"
    ),
) -> None:
    """Show per system and stage how many jobs are done, running, failed, blocked, lost or waiting.

    A job recorded as running whose process is gone (pid not alive on this host) is lost, in
    both views (FILE and --store). In a narrow terminal, state columns with no job are left out.
    """
    _quiet()
    from superionic.report.status import campaign_status, render_status

    if file is None:
        _status_of_store(store_dir)
        return
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.spec import load_campaign

    campaign = load_campaign(file, check_engines="note")
    planned = planned_jobs(build_flows(campaign))
    store = open_campaign_store(campaign, create=False)
    table = campaign_status(planned, store)
    console.print(render_status(f"{campaign.spec.name}: status", table, console.width))
    for name, message in table.failures:
        console.print(f"[red]failed[/red] {name}: {message}", markup=True, highlight=False)
    from superionic.dispatch.fireworks import open_launchpad

    lp = open_launchpad(campaign, create=False)
    if lp is not None:
        from superionic.cli_fireworks import print_fireworks_status

        print_fireworks_status(campaign.spec.name, lp)


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
    from rich.markup import escape

    from superionic.report.status import job_state

    state = JournalStore(path, collection_name="state", key="uuid")
    state.connect()
    with_output: set[str] = set()
    if (store_dir / "outputs.jsonl").is_file():
        outputs = JournalStore(store_dir / "outputs.jsonl", collection_name="outputs")
        outputs.connect()
        with_output = {d["uuid"] for d in outputs.query({}, properties=["uuid"])}
    counts: Counter = Counter()
    for d in state.query({}):
        shown = job_state(d, d.get("uuid") in with_output)  # the same rule as `status FILE`
        counts[(d.get("campaign"), d.get("system"), d.get("stage"), shown)] += 1
    out = Table(title=f"store {store_dir}")
    for col in ("campaign", "system", "stage", "state", "jobs"):
        out.add_column(col, no_wrap=col == "system")  # a sweep's systems differ only at the end
    for (c, sy, st, s), n in sorted(counts.items(), key=lambda kv: tuple(map(str, kv[0]))):
        out.add_row(escape(str(c)), escape(str(sy)), str(st), str(s), str(n))
    console.print(out)


@app.command()
@_user_errors
def report(
    file: CampaignArg,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: report/<campaign> beside the campaign file).")
    ] = None,
) -> None:
    """Write summary.md, CSV tables (orderings, relax, diffusion, arrhenius, ...) and PNG plots.

    The report goes to <campaign dir>/report/<campaign name>/ (beside the store), or --out.
    """
    _quiet()
    from superionic.dispatch.campaign_store import open_campaign_store
    from superionic.flows import build_flows, planned_jobs
    from superionic.report import write_report
    from superionic.spec import load_campaign

    campaign = load_campaign(file, check_engines="note")
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
    files = write_report(campaign.spec.name, planned, store, target)
    console.print(f"report: {target}/", soft_wrap=True)
    for f in files:
        console.print(f"  {f}", soft_wrap=True)
    _print_hull(target)


def _report_dir(campaign: Any, out: Path | None) -> Path:
    """``--out``, else ``<campaign dir>/report/<campaign name>`` (beside the store, whatever the cwd)."""
    return out if out is not None else campaign.directory / "report" / campaign.spec.name


def _print_hull(report_dir: Path) -> None:
    """Print hull.csv (if the campaign has a hull stage), one line per structure."""
    import csv

    path = report_dir / "hull.csv"
    if not path.is_file():
        return
    console.print("energy above hull (E_hull, meV/atom), decomposition:")
    for r in csv.DictReader(path.open()):
        typer.echo(
            f"  E_hull {float(r['e_hull_meV_per_atom']):7.1f} meV/atom  {r['structure']}  "
            f"({r['formula']}) -> {r['decomposition']}"
        )


# an example of each KEY=VALUE option, for its error messages
_PAIR_EXAMPLES = {"--param": "halide=Br", "--oxidation": "Li=1", "--polyanion": "B=BH4"}


def _parse_pairs(values: list[str], option: str, number: bool) -> dict[str, Any]:
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


def _check_supercell(supercell: tuple[int, int, int]) -> None:
    """Refuse a supercell the campaign key ``supercell:`` would refuse (each multiple >= 1)."""
    if any(m < 1 for m in supercell):
        raise SuperionicError.single(
            "--supercell",
            "each multiple must be greater than 0",
            tuple(supercell),
            "three integers >= 1, e.g. --supercell 2 1 1",
        )


def _load_input(
    name: str, params: dict[str, Any], option: str
) -> tuple[Any, dict[str, float], dict[str, dict]]:
    """Read a structure file or build a prototype: (structure, oxidation states, polyanions)."""
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


@app.command()
@_user_errors
def order(
    input: Annotated[str, typer.Argument(help="A CIF/POSCAR with partial occupancies, or a prototype name.")],
    supercell: Annotated[tuple[int, int, int], typer.Option(help="Supercell multiples A B C.")] = (1, 1, 1),
    n: Annotated[int, typer.Option("--n", min=1, help="Number of orderings to keep.")] = 25,
    out: Annotated[Path, typer.Option(help="Output folder for <rank>.cif and summary.csv.")] = Path(
        "orderings"
    ),
    param: Annotated[
        list[str] | None, typer.Option(help="Prototype parameter KEY=VALUE (repeatable).")
    ] = None,
    oxidation: Annotated[
        list[str] | None, typer.Option(help="Oxidation state EL=CHARGE (repeatable).")
    ] = None,
    polyanion: Annotated[
        list[str] | None,
        typer.Option(help="Rigid unit CENTRE=NAME from configs/polyanions.yaml, e.g. B=BH4 (repeatable)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (results are deterministic per seed).")] = 0,
    restarts: Annotated[int, typer.Option(min=1, help="Simulated-annealing restarts.")] = 8,
    round_counts: Annotated[
        bool, typer.Option("--round", help="Round non-integer site counts, keeping neutrality.")
    ] = False,
    group_by: Annotated[
        str,
        typer.Option(
            help="wyckoff: each Wyckoff site keeps its counts; occupancy: equal occupancies pool (pymatgen)."
        ),
    ] = "wyckoff",
    orientation: Annotated[str, typer.Option(help="Molecule orientation: random or aligned.")] = "random",
) -> None:
    """Write the N lowest-Ewald-energy orderings of a disordered cell, distinct under symmetry.

    Examples::

        superionic order argyrodite --param x=0.5 --param site_mixing=0.5 --supercell 2 1 1 --n 25
        superionic order argyrodite_bh4 --param bh4_vacancies=0.25 --param vacancy_site=4a --supercell 2 1 1
        superionic order antiperovskite_amide --param x=0.5 --supercell 3 3 3 --round
        superionic order my_disordered.cif --oxidation Li=1 --oxidation S=-2 --polyanion B=BH4

    Writes OUT/<rank>.cif (1 = lowest energy) and OUT/summary.csv with rank, file, ewald_energy_ev,
    relative_energy_ev, formula and the vacated sites per sublattice. The CIFs of an earlier run
    into OUT (those its summary.csv lists) are removed first; rank CIFs it does not list are
    refused. Without --oxidation for a CIF, the oxidation states assumed are printed.
    """
    import csv
    import time

    from rich.progress import Progress
    from ruamel.yaml import YAML

    from superionic.ordering import count_orderings
    from superionic.ordering.ewald import find_sublattices
    from superionic.paths import configs_dir
    from superionic.stages.order import ordered_structures
    from superionic.structures.polyanions import check_polyanions

    _quiet()
    if orientation not in ("random", "aligned"):
        raise SuperionicError.single("--orientation", "unknown orientation", orientation, "random or aligned")
    _check_supercell(supercell)
    params = _parse_pairs(param or [], "--param", number=False)
    structure, ox, units = _load_input(input, params, "INPUT")
    ox.update({k: float(v) for k, v in _parse_pairs(oxidation or [], "--oxidation", number=True).items()})
    library = YAML(typ="safe").load((configs_dir() / "polyanions.yaml").read_text())
    for centre, name in _parse_pairs(polyanion or [], "--polyanion", number=False).items():
        if name not in library:
            raise SuperionicError.single("--polyanion", "unknown unit", name, ", ".join(library))
        units[centre] = library[name]
        ox.setdefault(centre, float(library[name]["charge"]))
    if not ox:  # a structure file without --oxidation: the Ewald energy needs charges, say which
        from superionic.ordering.ewald import _guess_oxidation_states  # what order_by_ewald would use

        decorated = any(
            getattr(sp, "oxi_state", None) is not None for site in structure for sp in site.species
        )
        ox = _guess_oxidation_states(structure)
        if ox:
            source = "read from the file" if decorated else "pymatgen's guess"
            console.print(
                f"oxidation states assumed ({source}; set with --oxidation EL=CHARGE): "
                + ", ".join(f"{el} {q:+g}" for el, q in ox.items()),
                highlight=False,
            )
    # refuse a folder of someone else's rank CIFs now, not after the search
    previous = _previous_order_outputs(out)
    structure.make_supercell(list(supercell))
    try:
        subs, fixed = find_sublattices(structure, round_counts=round_counts, group_by=group_by)
    except SuperionicError as exc:
        exc.file = f"{input} (supercell {'x'.join(map(str, supercell))})"
        raise
    console.print(f"{structure.composition.formula}: {len(structure)} sites, {len(fixed)} fixed")
    for sub in subs:
        counts = ", ".join(f"{k} {v}" for k, v in sub.counts.items())
        console.print(f"  sublattice {sub.label}: {len(sub.sites)} sites -> {counts}")
    total = count_orderings(subs)
    method = "exact enumeration" if total <= 20000 else f"simulated annealing, {restarts} restarts"
    console.print(f"configurations before symmetry: {total:.3e}; search: {method}")
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ordering", total=restarts if total > 20000 else 1)
        orderings, expanded = ordered_structures(
            structure,
            n,
            ox,
            units,
            seed=seed,
            orientation=orientation,
            n_restarts=restarts,
            round_counts=round_counts,
            group_by=group_by,
            progress=lambda done, tot: progress.update(task, completed=done, total=tot),
        )
    for s in expanded:
        bad = check_polyanions(s, units)
        if bad:
            raise SuperionicError.single(
                "polyanions",
                "a molecule is not whole after expansion",
                bad[0],
                "a larger cell or fewer crowded units",
            )
    out.mkdir(parents=True, exist_ok=True)
    for old in previous:  # our own earlier outputs: a new summary.csv must not sit beside stale CIFs
        old.unlink(missing_ok=True)
    n_cifs = sum(p.suffix == ".cif" for p in previous)
    if n_cifs:
        console.print(f"removed {n_cifs} CIFs of an earlier `superionic order` from {out}/", highlight=False)
    rows = []
    e0 = orderings[0].ewald_energy_ev if orderings else 0.0
    for rank, (o, s) in enumerate(zip(orderings, expanded, strict=True), start=1):
        name = f"{rank}.cif"
        tmp = out / f".{name}.tmp"
        s.to(filename=str(tmp), fmt="cif")
        tmp.replace(out / name)
        rows.append(
            {
                "rank": rank,
                "file": name,
                "ewald_energy_ev": f"{o.ewald_energy_ev:.6f}",
                "relative_energy_ev": f"{o.ewald_energy_ev - e0:.6f}",
                "formula": s.composition.formula.replace(" ", ""),
                "vacated": "; ".join(f"{k}: {len(v)}" for k, v in o.vacated.items()),
            }
        )
    tmp = out / ".summary.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["rank"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(out / "summary.csv")
    console.print(
        f"{len(orderings)} orderings in {time.perf_counter() - t0:.1f} s; "
        f"lowest {e0:.3f} eV, highest kept {orderings[-1].ewald_energy_ev:.3f} eV -> {out}/"
    )
    if len(orderings) < n:
        console.print(
            f"[yellow]note[/yellow]: only {len(orderings)} distinct ordering(s) exist for "
            f"{structure.composition.formula} in this cell, {n} requested (a larger --supercell has more)",
            highlight=False,
        )


def _previous_order_outputs(out: Path) -> list[Path]:
    """Files an earlier ``superionic order`` wrote into ``out``: the rank CIFs its summary.csv lists.

    Refuses (exit 2) a folder holding rank CIFs (``<n>.cif``) that no summary.csv of ours lists, or
    a summary.csv that is not ours, rather than mixing or deleting files we did not write. Other
    files are left alone.
    """
    import csv
    import re

    if not out.is_dir():
        return []
    rank_cif = re.compile(r"\d+\.cif")
    on_disk = {p.name for p in out.iterdir() if rank_cif.fullmatch(p.name)}
    listed: set[str] = set()
    summary = out / "summary.csv"
    if summary.is_file():
        with open(summary, newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"rank", "file"} <= set(reader.fieldnames or []):
                raise SuperionicError.single(
                    "--out",
                    "the folder holds a summary.csv not written by `superionic order` (no rank/file columns)",
                    str(out),
                    "an empty or new folder",
                )
            listed = {r["file"] for r in reader if rank_cif.fullmatch(r.get("file") or "")}
    foreign = sorted(on_disk - listed, key=lambda name: int(name.split(".")[0]))
    if foreign:
        raise SuperionicError.single(
            "--out",
            f"the folder holds {len(foreign)} rank CIF(s) not listed in a summary.csv of ours "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); they would be mixed with "
            "the new ones",
            str(out),
            "an empty or new folder, or remove those files",
        )
    ours = [out / name for name in sorted(listed & on_disk)]
    ours += [p for p in out.glob(".*.tmp") if re.fullmatch(r"\.(\d+\.cif|summary\.csv)\.tmp", p.name)]
    return ours + ([summary] if summary.is_file() else [])


@app.command()
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

    _quiet()
    _check_supercell(supercell)
    s, ox, units = _load_input(structure, _parse_pairs(param or [], "--param", number=False), "STRUCTURE")
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


analyze_app = typer.Typer(
    help=(
        "Analyse existing outputs without a campaign: diffusion, arrhenius, rotation (MD "
        "trajectories), nmr (VASP/CP2K output), structure (local structure), density (ion density)."
    ),
    no_args_is_help=True,
)
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("diffusion")
@_user_errors
def analyze_diffusion_cmd(
    traj: Annotated[
        Path,
        typer.Argument(
            help="vasprun.xml, XDATCAR, .extxyz, ASE .traj, Trajectory .json, .npy; any name containing "
            "XDATCAR or vasprun, gzipped or not (see --format)"
        ),
    ],
    species: Annotated[str, typer.Option(help="Mobile element, e.g. Li or Na.")],
    timestep_fs: Annotated[float, typer.Option("--timestep-fs", help="MD time step in fs.")],
    temperature_K: Annotated[float, typer.Option("--temperature-K", help="Temperature of the run in K.")],
    step_skip: Annotated[int, typer.Option(help="MD steps between stored frames.")] = 1,
    out: Annotated[Path | None, typer.Option(help="Write the full result as JSON here.")] = None,
    skip_ps: Annotated[
        float, typer.Option("--skip-ps", help="Equilibration to drop from the start (ps).")
    ] = 0.0,
    fit_start: Annotated[float, typer.Option(help="Fit window start, fraction of the run.")] = 0.1,
    fit_end: Annotated[float, typer.Option(help="Fit window end, fraction of the run.")] = 0.7,
    charge: Annotated[float, typer.Option(help="Charge of the mobile ion (e).")] = 1.0,
    jump_distance_A: Annotated[
        float | None, typer.Option("--jump-distance-A", help="Hop length for counting jumps.")
    ] = None,
    structure: Annotated[
        Path | None, typer.Option(help="Structure file giving lattice/species for .npy.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="Force the trajectory format: vasprun, xdatcar, extxyz, traj, json or npy "
            "(default: from the file name - XDATCAR or vasprun anywhere in it, or the extension - "
            "else from the file's first bytes).",
        ),
    ] = None,
) -> None:
    r"""Tracer and charge diffusivity, Nernst-Einstein conductivity and Haven ratio of one run.

    Errors: D and sigma from He et al. (npj Comput. Mater. 2018), RSD = 3.43/sqrt(N_jumps) + 0.04;
    D_sigma (collective) and the Haven ratio from time blocks.
    Fewer than 10 jumps, or an error above the value, is reported as "not converged (N jumps)".
    Example::

        superionic analyze diffusion vasprun.xml --species Li --timestep-fs 2 --step-skip 1 \
            --temperature-K 800 --out li_800K.json
    """
    import json

    from superionic.analysis.diffusion import DiffusionInputError, diffusion_from_frac_coords
    from superionic.analysis.trajectory_io import FORMATS, read_trajectory

    if timestep_fs <= 0:
        raise DiffusionInputError(f"--timestep-fs must be positive, got {timestep_fs}")
    if step_skip < 1:
        raise DiffusionInputError(f"--step-skip must be >= 1, got {step_skip}")
    if skip_ps < 0:
        raise DiffusionInputError(f"--skip-ps must be >= 0, got {skip_ps:g}")
    if fmt is not None and fmt.lower() not in FORMATS:
        raise SuperionicError.single(
            "--format", "unknown trajectory format", fmt, ", ".join(FORMATS), file=str(traj)
        )
    data = read_trajectory(traj, structure, fmt.lower() if fmt else None)
    for warning in data.warnings:
        typer.echo(f"warning: {warning}", err=True)
    frame_fs = timestep_fs * step_skip
    skip = round(skip_ps * 1000 / frame_fs)
    if data.n_frames - skip < 4:
        run_ps = (data.n_frames - 1) * frame_fs / 1000
        raise DiffusionInputError(
            f"--skip-ps {skip_ps:g} leaves {max(data.n_frames - skip, 0)} of {data.n_frames} frames: the run "
            f"is {run_ps:.4g} ps ({data.n_frames} frames, {frame_fs:g} fs apart) and a diffusivity needs "
            f"at least 4 frames; give --skip-ps below {max(data.n_frames - 4, 0) * frame_fs / 1000:.4g}"
        )
    frac = data.frac_coords[skip:]
    lat = data.lattices if data.lattices.ndim == 2 else data.lattices[skip:]
    result = diffusion_from_frac_coords(
        frac,
        lat,
        data.species,
        species,
        frame_fs,
        temperature_K,
        charge=charge,
        jump_distance_A=jump_distance_A,
        fit_start=fit_start,
        fit_end=fit_end,
    )
    doc = {
        "file": str(traj),
        "dropped_frames": data.dropped_frames,
        "skipped_frames": skip,
        **result.as_dict(),
    }
    if "drift" in result.notes:
        typer.echo(f"warning: {traj}: {result.notes['drift']}", err=True)
    if out is not None:
        out.write_text(json.dumps(doc, indent=1, allow_nan=False))
    console.print(
        _diffusion_summary(doc) + (f" -> {out}" if out else ""), soft_wrap=True, markup=False, highlight=False
    )


def _diffusion_summary(doc: dict[str, Any]) -> str:
    """One line for `analyze diffusion`: values +- errors (n/a with the reason) and convergence."""

    def num(key: str, err_key: str, fmt: str, unit: str = "") -> str:
        value, err = doc.get(key), doc.get(err_key)
        if value is None:
            return f"n/a ({doc['notes'].get(key, 'undefined')})"
        return format(value, fmt) + (f" +- {err:.2g}" if err is not None else " +- n/a") + unit

    status = "converged" if doc["converged"] else doc["convergence_note"].split(":")[0]
    return (
        f"{doc['species']} at {doc['temperature_K']:g} K ({doc['total_time_ps']:.2f} ps, "
        f"{doc['n_mobile']} ions, {doc['n_jumps']:.0f} jumps): "
        f"D = {num('diffusivity_cm2_s', 'diffusivity_err_cm2_s', '.3e', ' cm2/s')}; "
        f"sigma = {num('conductivity_mS_cm', 'conductivity_err_mS_cm', '.3g', ' mS/cm')} "
        f"({doc['sigma_method']}) at V = {doc['volume_A3']:.1f} A3 ({doc['volume_note']}); "
        f"D_sigma = {num('charge_diffusivity_cm2_s', 'charge_diffusivity_err_cm2_s', '.3e', ' cm2/s')}; "
        f"Haven ratio {num('haven_ratio', 'haven_ratio_err', '.2f')}; {status}"
    )


@analyze_app.command("arrhenius")
@_user_errors
def analyze_arrhenius_cmd(
    files: Annotated[list[Path], typer.Argument(help="JSON files from `superionic analyze diffusion`.")],
    out: Annotated[Path | None, typer.Option(help="Write the fits as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write an Arrhenius plot (PNG) here.")] = None,
    extrapolate_K: Annotated[float, typer.Option("--extrapolate-K", help="Report values at this T.")] = 300.0,
) -> None:
    """Fit D(T) and sigma*T(T) to Arrhenius laws: Ea +- error and the value at 300 K +- error."""
    import json

    from superionic.analysis.diffusion import DiffusionInputError, arrhenius_fit

    results = []
    for f in files:
        try:
            results.append(json.loads(Path(f).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise DiffusionInputError(f"{f}: not a diffusion JSON ({exc})") from None
    needed = (
        "temperature_K",
        "diffusivity_cm2_s",
        "diffusivity_err_cm2_s",
        "conductivity_mS_cm",
        "conductivity_err_mS_cm",
    )
    for f, r in zip(files, results, strict=True):
        if not isinstance(r, dict):
            raise DiffusionInputError(f"{f}: not a diffusion JSON (a {type(r).__name__}, not an object)")
        missing = [k for k in needed if k not in r]
        if missing:
            raise DiffusionInputError(f"{f}: missing {', '.join(missing)} (not from analyze diffusion?)")
        bad = next((k for k in needed if not isinstance(r[k], int | float) or isinstance(r[k], bool)), None)
        if bad is not None:
            raise DiffusionInputError(f"{f}: {bad} is not a number (got {r[bad]!r})")
    t = [float(r["temperature_K"]) for r in results]
    if len(set(t)) < 2:
        runs = ", ".join(f"{f} at {temp:g} K" for f, temp in zip(files, t, strict=True))
        raise DiffusionInputError(f"an Arrhenius fit needs at least two distinct temperatures; got {runs}")
    fit_d = arrhenius_fit(
        t,
        [r["diffusivity_cm2_s"] for r in results],
        [r["diffusivity_err_cm2_s"] for r in results],
        "diffusivity_cm2_s",
        extrapolate_K,
    )
    fit_s = arrhenius_fit(
        t,
        [r["conductivity_mS_cm"] * r["temperature_K"] for r in results],
        [r["conductivity_err_mS_cm"] * r["temperature_K"] for r in results],
        "conductivity_T_mS_K_cm",
        extrapolate_K,
    )
    doc = {
        "diffusivity": fit_d.as_dict(),
        "conductivity_T": fit_s.as_dict(),
        f"conductivity_{extrapolate_K:g}K_mS_cm": fit_s.extrapolated_value / extrapolate_K,
        f"conductivity_{extrapolate_K:g}K_err_mS_cm": fit_s.extrapolated_err / extrapolate_K,
    }
    if out is not None:
        out.write_text(json.dumps(doc, indent=1))
    if plot is not None:
        from superionic.report.writer import plot_arrhenius_points

        plot_arrhenius_points(
            t,
            [r["diffusivity_cm2_s"] for r in results],
            [r["diffusivity_err_cm2_s"] for r in results],
            fit_d.as_dict(),
            "analysis",
            plot,
        )
    console.print(
        f"Ea(D) = {fit_d.activation_energy_eV:.3f} +- {fit_d.activation_energy_err_eV:.3f} eV; "
        f"Ea(sigma T) = {fit_s.activation_energy_eV:.3f} +- {fit_s.activation_energy_err_eV:.3f} eV; "
        f"sigma({extrapolate_K:g} K) = {fit_s.extrapolated_value / extrapolate_K:.3g} "
        f"+- {fit_s.extrapolated_err / extrapolate_K:.2g} mS/cm"
    )


@analyze_app.command("rotation")
@_user_errors
def analyze_rotation_cmd(
    traj: Annotated[Path, typer.Argument(help="Trajectory (same formats as `analyze diffusion`).")],
    unit: Annotated[str, typer.Option(help="Polyanion: BH4, NH2, PS4, TaCl6, ZrCl6, AlH4.")],
    timestep_fs: Annotated[float, typer.Option("--timestep-fs", help="MD time step in fs.")],
    step_skip: Annotated[int, typer.Option(help="MD steps between stored frames.")] = 1,
    cation: Annotated[
        str | None, typer.Option(help="Also correlate this cation's jumps with rotations.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the result as JSON here.")] = None,
    structure: Annotated[Path | None, typer.Option(help="Structure file for .npy trajectories.")] = None,
) -> None:
    """Orientation autocorrelation C(t) = <u(t).u(0)> of a polyanion and its rotation time."""
    import json

    from superionic.analysis.diffusion import DiffusionInputError
    from superionic.analysis.rotation import UNITS, jump_rotation_correlation, orientation_acf
    from superionic.analysis.trajectory_io import read_trajectory

    if unit not in UNITS:
        raise DiffusionInputError(f"--unit {unit!r} is not known; known units: {', '.join(UNITS)}")
    centre, ligand, n_lig = UNITS[unit]
    data = read_trajectory(traj, structure)
    res = orientation_acf(
        data.frac_coords, data.lattices, data.species, centre, ligand, n_lig, timestep_fs * step_skip
    )
    doc: dict[str, Any] = {"file": str(traj), "unit": unit, **res.as_dict()}
    if cation:
        doc["jump_rotation"] = jump_rotation_correlation(
            data.frac_coords, data.lattices, data.species, cation, centre, ligand, n_lig
        )
    if out is not None:
        out.write_text(json.dumps(doc, indent=1))
    from superionic.report.writer import rotation_time_text

    run_ps = res.lag_times_ps[-1] if res.lag_times_ps else None
    tau = rotation_time_text(res.rotation_time_ps, res.extrapolated, run_ps)
    if res.extrapolated and res.rotation_time_ps != float("inf"):
        # "540 (extrapolated: ...)" -> "540 +- 30 ps (extrapolated: ...)"
        value, note = tau.split(" ", 1)
        tau = f"{value} +- {res.rotation_time_err_ps:.2g} ps {note}"
    elif res.rotation_time_ps != float("inf"):
        tau += f" +- {res.rotation_time_err_ps:.2g} ps"
    console.print(f"{unit}: {res.n_units} units; rotation time {tau}" + (f" -> {out}" if out else ""))


@analyze_app.command("nmr")
@_user_errors
def analyze_nmr_cmd(
    path: Annotated[
        Path, typer.Argument(help="VASP OUTCAR (or .gz, or its folder) of an LCHIMAG or LEFG run.")
    ],
    isotope: Annotated[
        list[str] | None, typer.Option("--isotope", help="Isotope for an element, e.g. Li-6 (repeatable).")
    ] = None,
    structure: Annotated[
        Path | None, typer.Option(help="Structure of the run (default: POSCAR/CONTCAR beside the OUTCAR).")
    ] = None,
    out: Annotated[Path, typer.Option(help="CSV, one row per site.")] = Path("nmr.csv"),
) -> None:
    """Shielding (sigma_iso) and/or EFG (C_Q, eta_Q) per site from a VASP NMR OUTCAR.

    CS rows: site, species, isotope, sigma_iso_ppm, sigma_aniso_ppm, sigma_eta. EFG rows add
    cq_mhz (signed, e Q Vzz / h, Q from configs/nmr/quadrupole_moments.yaml) and eta_q, next to
    the values VASP printed itself (vasp_cq_mhz, vasp_eta). Example::

        superionic analyze nmr efg/OUTCAR --isotope Li-6 --out efg.csv
    """
    import csv

    from pymatgen.core import Structure

    from superionic.analysis.nmr import (
        OUTCAR_KIND,
        SiteCountError,
        default_isotope,
        describe_output,
        parse_isotopes,
        vasp_efg,
        vasp_shielding,
    )

    isotopes = parse_isotopes(isotope or [], "--isotope")  # Li-6, Li6 or 6Li -> Li-6; unknown ones refused
    valid_path = (
        "a VASP OUTCAR (or .gz, or its folder) of an LCHIMAG/LEFG run, "
        "or a CP2K *-SHIFT-1.data (or its folder)"
    )
    shift_files = (
        sorted(path.glob("*-SHIFT-1.data"))
        if path.is_dir()
        else ([path] if path.name.endswith("-SHIFT-1.data") else [])
    )
    if shift_files:  # a CP2K NMR run: the SHIFT file carries the species itself
        from superionic.engines.cp2k_nmr import parse_shift_file

        docs = parse_shift_file(shift_files[0])
        keys = [
            "site",
            "species",
            "isotope",
            "sigma_iso_ppm",
            "sigma_aniso_ppm",
            "sigma_eta",
            "cp2k_printed_iso_ppm",
        ]
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            for d in docs:
                w.writerow({**d, "isotope": default_isotope(d["species"], isotopes)})
        console.print(f"{len(docs)} sites (cp2k shielding, {shift_files[0].name}) -> {out}")
        return
    outcar = path
    if path.is_dir():
        outcar = next((path / n for n in ("OUTCAR", "OUTCAR.gz") if (path / n).is_file()), path / "OUTCAR")
        if not outcar.is_file():
            raise SuperionicError.single(
                "PATH", "no VASP OUTCAR or CP2K *-SHIFT-1.data in this folder", None, valid_path, str(path)
            )
    if not outcar.is_file():
        raise SuperionicError.single("PATH", "file not found", None, valid_path, str(path))
    kind = describe_output(outcar)
    if kind != OUTCAR_KIND:  # before looking for its POSCAR: an XDATCAR would ask for one
        raise SuperionicError.single(
            "PATH",
            f"not a VASP OUTCAR or CP2K NMR output: it looks like {kind}",
            None,
            valid_path,
            str(outcar),
        )
    folder = outcar.parent
    if structure is None:
        structure = next(
            (folder / n for n in ("POSCAR", "POSCAR.gz", "CONTCAR", "CONTCAR.gz") if (folder / n).is_file()),
            None,
        )
    if structure is None:
        raise SuperionicError.single(
            "--structure", "no POSCAR/CONTCAR beside the OUTCAR", str(folder), "--structure FILE"
        )
    try:
        species = [site.specie.symbol for site in Structure.from_file(str(structure))]
    except Exception as exc:  # pymatgen raises many types for unreadable files
        raise SuperionicError.single(
            "--structure", f"cannot read the structure ({exc})", str(structure), "a POSCAR, CONTCAR or CIF"
        ) from None
    rows: list[dict] = [
        {"site": i, "species": el, "isotope": default_isotope(el, isotopes)} for i, el in enumerate(species)
    ]
    found = []
    for name, reader in (
        ("cs", lambda: vasp_shielding(outcar, species)),
        ("efg", lambda: vasp_efg(outcar, species, isotopes)),
    ):
        try:
            docs = reader()
        except SiteCountError:
            raise  # the tensors are there, for another structure: say so, not "no output"
        except SuperionicError:
            continue
        found.append(name)
        for row, doc in zip(rows, docs, strict=True):
            row.update(
                {
                    k: v
                    for k, v in doc.items()
                    if not k.endswith("tensor_ppm") and not k.endswith("tensor_V_A2")
                }
            )
    if not found:
        raise SuperionicError.single(
            "PATH",
            "neither chemical shielding nor EFG output in this OUTCAR",
            None,
            "an OUTCAR of a run with LCHIMAG = True or LEFG = True",
            str(outcar),
        )
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    k: (r.get(k) if not isinstance(r.get(k), list) else " ".join(f"{x:.6g}" for x in r[k]))
                    for k in keys
                }
            )
    console.print(f"{len(rows)} sites ({' + '.join(found)}) -> {out}")


@analyze_app.command("structure")
@_user_errors
def analyze_structure_cmd(
    path: Annotated[
        Path, typer.Argument(help="CIF/POSCAR, or a trajectory (XDATCAR, vasprun.xml, extxyz, ASE .traj).")
    ],
    center: Annotated[str, typer.Option(help="Polyhedron centre, e.g. Ta or Zr.")],
    ligand: Annotated[list[str], typer.Option(help="Ligand element (repeatable), e.g. Cl, O.")],
    cutoff_A: Annotated[float, typer.Option("--cutoff-A", help="Centre-ligand bond cutoff (A).")] = 3.0,
    shape: Annotated[str | None, typer.Option(help="octahedron or tetrahedron (default: from CN).")] = None,
    every: Annotated[int, typer.Option(help="For a trajectory: analyse every N-th frame.")] = 1,
    out: Annotated[Path, typer.Option(help="Output folder for tables and plots.")] = Path("structure"),
) -> None:
    """RDF, coordination, bond angles, CSM and polyhedral connectivity of one structure or a trajectory.

    Writes OUT/summary.csv (CN and mean bond length per ligand, CSM mean/std, corner/edge/face
    fractions and bridging species), OUT/rdf.csv and OUT/rdf.png (centre-centre and centre-ligand,
    averaged over frames), OUT/angles.csv. Example::

        superionic analyze structure XDATCAR --center Ta --ligand Cl --every 1000 --out NaTaCl6/
    """
    import csv

    import numpy as np

    from superionic.analysis.local_structure import (
        bond_angles,
        connectivity,
        coordination,
        polyhedra_csm,
        rdf,
    )

    if not path.exists():
        raise SuperionicError.single("PATH", "file not found", str(path), "a structure or trajectory file")
    frames: list[Any]
    name = path.name.lower()
    if any(t in name for t in ("vasprun", "xdatcar", ".traj", ".extxyz", ".xyz", ".npy")):
        from superionic.analysis.trajectory_io import read_trajectory

        traj = read_trajectory(path)
        frames = [traj.structure_at(k) for k in range(0, traj.n_frames, max(1, every))]
    else:
        from pymatgen.core import Structure

        frames = [Structure.from_file(str(path))]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, s in enumerate(frames):
        row: dict[str, Any] = {"frame": k}
        for lig in ligand:
            c = coordination(s, center, lig, cutoff_A)
            row[f"cn_{lig}"], row[f"bond_{lig}_A"] = c["cn_mean"], c["bond_length_mean_A"]
        try:
            cs = polyhedra_csm(s, center, ligand[0], cutoff_A, shape)
            row.update(csm_mean=cs["csm_mean"], csm_std=cs["csm_std"], csm_n=cs["n"])
        except SuperionicError as exc:
            if shape:
                raise
            row["csm_note"] = exc.problems[0].message
        conn = connectivity(s, center, list(ligand), cutoff_A)
        row.update({f"{kind}_sharing": v for kind, v in conn["fractions"].items()})
        row.update({f"corner_via_{el}": v for el, v in conn["corner_bridges"].items()})
        rows.append(row)
    keys = list(dict.fromkeys(key for r in rows for key in r))
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(rows)
    pairs = [(center, center)] + [(center, lig) for lig in ligand]
    curves = {f"{a}-{b}": rdf(frames, a, b, r_max=8.0, bin_A=0.05) for a, b in pairs}
    r_axis = next(iter(curves.values()))["r_A"]
    with open(out / "rdf.csv", "w", newline="") as fh:
        w2 = csv.writer(fh)
        w2.writerow(["r_A", *curves])
        for n, r in enumerate(r_axis):
            w2.writerow([f"{r:.3f}", *(f"{c['g'][n]:.5f}" for c in curves.values())])
    angles = [a for s in frames for a in bond_angles(s, center, ligand[0], cutoff_A)]
    np.savetxt(
        out / "angles.csv",
        np.array(angles),
        fmt="%.3f",
        header=f"{ligand[0]}-{center}-{ligand[0]} angle (deg)",
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, c in curves.items():
        axes[0].plot(c["r_A"], c["g"], label=name)
    axes[0].set_xlabel("r (A)")
    axes[0].set_ylabel("g(r)")
    axes[0].legend()
    axes[1].hist(angles, bins=90, range=(0, 180))
    axes[1].set_xlabel(f"{ligand[0]}-{center}-{ligand[0]} angle (deg)")
    fig.tight_layout()
    fig.savefig(out / "rdf.png", dpi=130)
    plt.close(fig)
    cns = ", ".join(f"{k}={rows[-1][k]:.2f}" for k in rows[-1] if k.startswith("cn_"))
    console.print(f"{len(frames)} frame(s): CN {cns} (last frame) -> {out}/")


@analyze_app.command("density")
@_user_errors
def analyze_density_cmd(
    traj: Annotated[Path, typer.Argument(help="Trajectory (same formats as `analyze diffusion`).")],
    species: Annotated[str, typer.Option(help="Element whose density to map, e.g. Li.")],
    out: Annotated[Path, typer.Option(help="CHGCAR-like output file (open with VESTA).")] = Path(
        "CHGCAR_density"
    ),
    spacing_A: Annotated[float, typer.Option("--spacing-A", help="Grid spacing in A.")] = 0.2,
    structure: Annotated[Path | None, typer.Option(help="Structure file for .npy trajectories.")] = None,
) -> None:
    """Probability density of an ion over the whole run, as a CHGCAR-like grid."""
    from pymatgen.core import Lattice, Structure

    from superionic.analysis.density import probability_density, write_density_chgcar
    from superionic.analysis.trajectory_io import read_trajectory

    data = read_trajectory(traj, structure)
    lat = data.lattices if data.lattices.ndim == 2 else data.lattices[0]
    dens = probability_density(data.frac_coords, data.species, species, lattice=lat, spacing_A=spacing_A)
    first = Structure(Lattice(lat), data.species, data.frac_coords[0] % 1.0)
    write_density_chgcar(dens, first, out)
    console.print(f"{species} density on a {'x'.join(map(str, dens.shape))} grid -> {out}")


def entrypoint() -> None:
    """Console-script entry point."""
    app()


from superionic import cli_fireworks  # noqa: E402,F401  (registers submit/worker/launch/rerun/cancel)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
