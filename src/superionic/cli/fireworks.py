"""FireWorks/SLURM dispatch commands: submit, worker, launch, init-site, rerun, cancel."""

from __future__ import annotations

import atexit
import itertools
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from superionic.cli.common import (
    CampaignArg,
    ForceFieldOpt,
    ScaleOpt,
    _user_errors,
    console,
    print_engine_notes,
    quiet,
)
from superionic.errors import SuperionicError


def _campaign_and_pad(
    file: Path, create: bool = True, scale: str | None = None, force_field: str | None = None
) -> tuple[Any, Any]:
    from superionic.dispatch.fireworks import open_launchpad
    from superionic.spec import load_campaign

    # engines are checked where jobs run
    campaign = load_campaign(file, check_engines="note", scale=scale, force_field=force_field)
    lp = open_launchpad(campaign, create=create)
    if lp is None:
        raise SuperionicError.single(
            "launchpad",
            "nothing submitted yet",
            str(campaign.store_path / "launchpad"),
            f"superionic submit {file}",
        )
    return campaign, lp


@_user_errors
def submit(
    file: CampaignArg,
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be added; add nothing.")
    ] = False,
) -> None:
    """Add the campaign's jobs to the FireWorks LaunchPad (jobs already there are skipped).

    The LaunchPad is <store>/launchpad (embedded, safe for concurrent workers) or the campaign's
    MongoDB URI. Then run workers: ``superionic worker FILE`` here, or ``superionic launch FILE
    --slurm`` to queue SLURM jobs that run them. Example::

        superionic submit workflows/demo.yaml --dry-run
        superionic submit workflows/demo.yaml && superionic launch workflows/demo.yaml --slurm --jobs 2
    """
    quiet()
    from superionic.dispatch.fireworks import submit as do_submit
    from superionic.spec import load_campaign

    campaign = load_campaign(file, check_engines="note", scale=scale, force_field=force_field)
    print_engine_notes(campaign)
    s = do_submit(campaign, dry_run=dry_run)
    verb = "would add" if dry_run else "added"
    console.print(
        f"{verb} {s.workflows_added} workflow(s), {s.fireworks_added} firework(s); "
        f"{s.fireworks_present} already on the LaunchPad"
        + (f"; {s.fireworks_done} already done in the store" if s.fireworks_done else "")
        + (
            f"; {'would revive' if dry_run else 'revived'} {s.fireworks_revived} cancelled"
            if s.fireworks_revived
            else ""
        )
    )
    for name in s.names:
        console.print(f"  {name}")


@_user_errors
def worker(
    file: CampaignArg,
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
    max_fireworks: Annotated[
        int, typer.Option("--max", help="Stop after N fireworks (0: until none is ready).")
    ] = 0,
    idle_exit_s: Annotated[
        float, typer.Option("--idle-exit", help="Keep polling this long (s) when nothing is ready.")
    ] = 10.0,
    ping_s: Annotated[
        float, typer.Option("--ping", help="Alive signal interval of a running firework (s).")
    ] = 60.0,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            min=1,
            help="Fireworks to run at once (that many worker processes); each gets CPUs / jobs threads.",
        ),
    ] = 1,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Threads per job (default: resources.threads, SLURM_CPUS_PER_TASK, OMP_NUM_THREADS or "
            "the cores, divided by --jobs).",
        ),
    ] = None,
    server_wait_s: Annotated[
        float,
        typer.Option(
            "--server-wait",
            min=0,
            help="MongoDB store: how long (s) an operation waits for a server that stopped answering "
            "(a restart, a network blip) before the worker gives up; it says when it waits and when "
            "the server is back.",
        ),
    ] = 600.0,
) -> None:
    """Run the campaign's READY fireworks (rlaunch rapidfire; job packing).

    Inside a SLURM allocation the worker names itself slurm-<job id>; ``superionic status`` shows
    it next to the fireworks it runs. Several workers may share one embedded LaunchPad. With
    ``--jobs N`` the worker starts N worker processes, each limited to its share of the CPUs
    (torch and OpenMP otherwise take every core, and packed jobs slow each other down). Example::

        SLURM_CPUS_PER_TASK=8 superionic worker study.yaml --jobs 4   # 4 fireworks at once, 2 threads each
    """
    quiet()
    from superionic.dispatch.fireworks import run_worker
    from superionic.dispatch.mongo import ride_out_outages
    from superionic.dispatch.threads import configure_process, plan_threads

    ride_out_outages(server_wait_s)  # before any client opens (no effect on the embedded store)
    campaign, lp = _campaign_and_pad(file, create=False, scale=scale, force_field=force_field)
    if jobs > 1:
        if threads is not None:
            plan = plan_threads(threads * jobs, jobs, source="--threads x --jobs")
        else:
            plan = plan_threads(campaign.spec.resources.threads, jobs)
        console.print(f"worker: {jobs} processes at once; {plan.describe()}")
        _run_worker_processes(
            file,
            jobs,
            plan.threads_per_job,
            max_fireworks,
            idle_exit_s,
            ping_s,
            scale,
            server_wait_s,
            force_field,
        )
        return
    if campaign.spec.store.uri:
        import jobflow

        from superionic.dispatch.campaign_store import open_campaign_store

        # the fireworks carry no store for a MongoDB campaign (its URI would carry the password):
        # jobflow's JobFiretask then uses SETTINGS.JOB_STORE, this campaign's store
        jobflow.SETTINGS.JOB_STORE = open_campaign_store(campaign).job_store  # type: ignore[union-attr]
    else:
        from superionic.dispatch.netfs import register_worker_host, unregister_worker_host

        register_worker_host(campaign.store_path)
        atexit.register(unregister_worker_host, campaign.store_path)
    plan = configure_process(campaign.spec.resources, threads=threads)
    console.print(f"worker {os.getpid()}: {plan.describe()}")
    # a rerun firework gets a new launch folder: MLIP MD checkpoints live by job uuid in the store
    os.environ.setdefault("SUPERIONIC_CHECKPOINT_DIR", str(campaign.store_path / "checkpoints"))
    n = run_worker(
        lp,
        campaign.store_path / "launches",
        max_fireworks=max_fireworks,
        idle_exit_s=idle_exit_s,
        ping_s=ping_s,
        campaign=campaign.spec.name,
    )
    console.print(f"worker ran {n} firework(s)")


@_user_errors
def launch(
    file: CampaignArg,
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
    slurm: Annotated[bool, typer.Option("--slurm", help="Queue SLURM jobs that each run a worker.")] = False,
    jobs: Annotated[int, typer.Option(help="How many SLURM jobs (workers) to queue.")] = 1,
    qadapter: Annotated[
        Path | None,
        typer.Option(help="FireWorks qadapter YAML (default: <store>/my_qadapter.yaml or init-site's)."),
    ] = None,
) -> None:
    """Start workers: here (default) or as SLURM jobs through FireWorks' queue adapter."""
    quiet()
    if not slurm:
        worker(file, scale=scale, force_field=force_field)
        return
    from superionic.dispatch.site import queue_workers, write_site
    from superionic.spec import load_campaign

    campaign = load_campaign(file, check_engines="note", scale=scale, force_field=force_field)
    print_engine_notes(campaign)
    rocket = _worker_cmd(file, campaign.scale, force_field)
    path = qadapter or campaign.store_path / "my_qadapter.yaml"
    if not path.is_file():
        write_site(campaign.store_path, sys.prefix, rocket_launch=rocket)
    else:
        _check_rocket(path, rocket, campaign)
    ids = queue_workers(path, campaign.store_path / "queue", jobs)
    console.print(f"queued SLURM job(s): {', '.join(str(i) for i in ids)}")


def _run_worker_processes(
    file: Path,
    jobs: int,
    threads: int,
    max_fireworks: int,
    idle_exit_s: float,
    ping_s: float,
    scale: str | None = None,
    server_wait_s: float = 600.0,
    force_field: str | None = None,
) -> None:
    """Start ``jobs`` single-job worker processes with ``threads`` threads each and wait for them."""
    import subprocess

    exe = Path(sys.executable).parent / "superionic"
    cmd = [str(exe), "worker", str(file), "--threads", str(threads), "--idle-exit", str(idle_exit_s)]
    cmd += ["--ping", str(ping_s), "--server-wait", str(server_wait_s)]
    cmd += ["--scale", scale] if scale else []
    cmd += ["--force-field", _absolute(force_field)] if force_field else []
    # --max M is shared out: M // jobs each, the remainder to the first ones (0: no limit)
    shares = [max_fireworks // jobs + (1 if k < max_fireworks % jobs else 0) for k in range(jobs)]
    if max_fireworks:
        shares = [m for m in shares if m > 0]
    procs = [subprocess.Popen([*cmd, "--max", str(m)]) for m in shares]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise typer.Exit(max(codes))


def _worker_cmd(file: Path, scale: str | None = None, force_field: str | None = None) -> str:
    exe = Path(sys.executable).parent / "superionic"
    scaled = f" --scale {shlex.quote(scale)}" if scale else ""
    scaled += f" --force-field {shlex.quote(_absolute(force_field))}" if force_field else ""
    return f"{shlex.quote(str(exe))} worker {shlex.quote(str(Path(file).resolve()))}{scaled} --idle-exit 30"


def _absolute(force_field: str) -> str:
    """Return a model folder as an absolute path (a SLURM job starts elsewhere), a name as it is."""
    from superionic.engines.mlip import is_model_folder

    return str(Path(force_field).expanduser().resolve()) if is_model_folder(force_field) else force_field


def _check_rocket(path: Path, rocket: str, campaign: Any) -> None:
    """Make sure the qadapter's workers run this campaign (its scale and force field included).

    The scales and force fields of one campaign file are campaigns of their own on one LaunchPad
    (a worker takes only its campaign's fireworks). The store's own qadapter gets this
    campaign's worker command (the rest of the file, partition, walltime, modules, is kept); a
    qadapter given with ``--qadapter`` whose ``superionic worker`` command runs another campaign
    is refused.
    """
    from ruamel.yaml import YAML

    yaml = YAML()
    data = yaml.load(path.read_text())
    current = str(data.get("rocket_launch", ""))
    theirs = _campaign_of(current)
    if current == rocket or theirs == campaign.spec.name or theirs is None:
        return  # this campaign's workers, or a command of the user's own making
    if path.resolve() != (campaign.store_path / "my_qadapter.yaml").resolve():
        raise SuperionicError.single(
            "--qadapter",
            f"its workers would run campaign {theirs}, not {campaign.spec.name}",
            str(path),
            f"a qadapter whose rocket_launch is: {rocket}",
        )
    data["rocket_launch"] = rocket
    with path.open("w") as f:
        yaml.dump(data, f)
    console.print(f"{path}: rocket_launch is now {rocket}", highlight=False, markup=False)


def _campaign_of(command: str) -> str | None:
    """Return the campaign name a ``superionic worker FILE [--scale S] [--force-field F]`` runs."""
    from superionic.spec import load_campaign

    try:
        words = shlex.split(command)
        pairs = itertools.pairwise(words)
        at = 1 + next(i for i, (a, b) in enumerate(pairs) if a.endswith("superionic") and b == "worker")
        rest = words[at + 2 :]

        def value(option: str) -> str | None:
            return rest[rest.index(option) + 1] if option in rest else None

        scale, force_field = value("--scale"), value("--force-field")
        theirs = load_campaign(words[at + 1], check_engines=False, scale=scale, force_field=force_field)
        return theirs.spec.name
    except (StopIteration, IndexError, ValueError, SuperionicError, OSError):
        return None


@_user_errors
def init_site(
    out: Annotated[Path, typer.Option(help="Folder for the three FireWorks config files.")] = Path("site"),
    campaign_file: Annotated[
        Path | None, typer.Option("--campaign", help="Campaign the workers run.")
    ] = None,
    partition: Annotated[str | None, typer.Option(help="SLURM partition.")] = None,
    walltime: Annotated[str, typer.Option(help="SLURM walltime HH:MM:SS.")] = "01:00:00",
    ntasks: Annotated[int, typer.Option(help="Tasks per job (cores for VASP/CP2K).")] = 1,
    gpus: Annotated[int, typer.Option(help="GPUs per job (MLIP on GPU nodes).")] = 0,
    module: Annotated[list[str] | None, typer.Option(help="Environment module to load (repeatable).")] = None,
) -> None:
    """Write my_qadapter.yaml (SLURM), my_fworker.yaml and my_launchpad.yaml for your cluster.

    The qadapter re-activates this Python environment in pre_rocket (FireWorks' SLURM template
    starts a login shell, which resets PATH) and runs ``superionic worker CAMPAIGN``. Edit
    my_launchpad.yaml to point at your MongoDB for multi-node sites. Example::

        superionic init-site --out site --campaign study.yaml --partition cpu --ntasks 32 --module vasp/6.4
    """
    from superionic.dispatch.site import write_site

    rocket = _worker_cmd(campaign_file) if campaign_file else "superionic worker CAMPAIGN.yaml --idle-exit 30"
    files = write_site(out, sys.prefix, rocket, partition, walltime, 1, ntasks, module, gpus)
    for f in files:
        console.print(f"wrote {f}")


@_user_errors
def rerun(
    file: CampaignArg,
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
    lost_after_s: Annotated[
        float,
        typer.Option(
            "--lost-after",
            help="A RUNNING firework silent this long (s) is lost; a RESERVED one without a launch this "
            "long is stuck.",
        ),
    ] = 300.0,  # dispatch.fireworks.LOST_AFTER_S (not imported: keeps FireWorks out of CLI start-up)
    failed: Annotated[bool, typer.Option(help="Also rerun FIZZLED (failed) fireworks.")] = True,
) -> None:
    """Put lost, stuck and failed fireworks back to READY.

    Lost: a killed worker's run. Stuck: a reservation a worker could not turn into a launch (it
    lost the server mid-checkout). Failed: FIZZLED.
    """
    quiet()
    from superionic.dispatch.fireworks import rerun as do_rerun

    campaign, lp = _campaign_and_pad(file, create=False, scale=scale, force_field=force_field)
    result = do_rerun(lp, campaign.spec.name, lost_after_s, failed)
    console.print(
        f"lost: {len(result['lost'])} {result['lost']}; failed: {len(result['failed'])} {result['failed']}"
        + (f"; stuck reservations: {len(result['stuck'])} {result['stuck']}" if result["stuck"] else "")
    )


@_user_errors
def cancel(file: CampaignArg, scale: ScaleOpt = None, force_field: ForceFieldOpt = None) -> None:
    """Defuse every firework of the campaign that has not completed (``submit`` again to revive)."""
    quiet()
    from superionic.dispatch.fireworks import cancel as do_cancel

    campaign, lp = _campaign_and_pad(file, create=False, scale=scale, force_field=force_field)
    ids = do_cancel(lp, campaign.spec.name)
    console.print(f"defused {len(ids)} firework(s)")
