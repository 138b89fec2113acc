"""The cluster paths a user takes first: submitting without the engine, threads for packed jobs,
the engine checked where the job runs, VASP's wall time from the allocation."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from superionic.cli import app

runner = CliRunner()
EXE = str(Path(sys.executable).parent / "superionic")

VASP_CAMPAIGN = """name: vc
engine: vasp
preset: argyrodite_bh4
systems:
  - name: LiCl
    structure: LiCl.cif
stages:
  - stage: relax
"""


@pytest.fixture
def no_vasp(monkeypatch: pytest.MonkeyPatch) -> None:
    """A login node: VASP named by SUPERIONIC_VASP_CMD but not on PATH."""
    monkeypatch.setenv("SUPERIONIC_VASP_CMD", "srun vasp_std_not_here")


def _licl(folder: Path) -> None:
    from pymatgen.core import Lattice, Structure

    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.13), ["Li", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.to(filename=str(folder / "LiCl.cif"))


def test_vasp_campaign_validates_and_submits_where_vasp_is_missing(tmp_path: Path, no_vasp: None) -> None:
    """validate / submit --dry-run / submit: exit 0 with a note; run (local) still refuses."""
    _licl(tmp_path)
    (tmp_path / "c.yaml").write_text(VASP_CAMPAIGN)
    for args in (["validate"], ["submit", "--dry-run"], ["submit"]):
        r = runner.invoke(app, [*args, str(tmp_path / "c.yaml")])
        assert r.exit_code == 0, (args, r.output)
        assert "note: c.yaml:2: engine:" in r.output and "vasp_std_not_here" in r.output
        assert "needed where the jobs run" in r.output
        assert r.output.count("note:") == 1  # once, at the line of `engine:`
    assert (tmp_path / ".superionic" / "launchpad").is_dir()
    r = runner.invoke(app, ["run", str(tmp_path / "c.yaml")])
    assert r.exit_code == 2 and "vasp_std_not_here" in r.output and "not on PATH" in r.output


def test_vasp_job_fails_where_it_runs_with_the_clear_message(tmp_path: Path, no_vasp: None) -> None:
    """The worker (where VASP is still missing) fails the job before custodian starts, naming the
    executable and the host; the firework is FIZZLED with that message."""
    import socket

    from superionic.dispatch.fireworks import open_launchpad
    from superionic.spec import load_campaign

    _licl(tmp_path)
    (tmp_path / "c.yaml").write_text(VASP_CAMPAIGN)
    assert runner.invoke(app, ["submit", str(tmp_path / "c.yaml")]).exit_code == 0
    r = runner.invoke(app, ["worker", str(tmp_path / "c.yaml"), "--idle-exit", "0", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "threads: 1 per job (1 CPUs from --threads)" in r.output
    lp = open_launchpad(load_campaign(tmp_path / "c.yaml", check_engines="note"), create=False)
    (fw,) = list(lp.fireworks.find({}))
    assert fw["state"] == "FIZZLED"
    launch = lp.launches.find_one({"fw_id": fw["fw_id"]})
    trace = launch["action"]["stored_data"]["_exception"]["_stacktrace"]
    assert "EngineUnavailableError" in trace
    assert "VASP executable 'vasp_std_not_here'" in trace and socket.gethostname() in trace
    assert "custodian" not in trace.split("EngineUnavailableError")[-1].lower()


def test_thread_plan_follows_settings_then_slurm_then_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    from superionic.dispatch.threads import plan_threads

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert plan_threads(4, 2).threads_per_job == 2  # the campaign's resources.threads first
    plan = plan_threads(None, 3)
    assert (plan.cpus, plan.source, plan.threads_per_job) == (8, "SLURM_CPUS_PER_TASK", 2)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert (plan_threads(None, 1).cpus, plan_threads(None, 1).source) == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    plan = plan_threads(None, 64)
    assert plan.cpus == len(os.sched_getaffinity(0)) and plan.threads_per_job == 1  # never 0


def test_threads_are_set_in_the_job_process_and_its_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from superionic.dispatch.threads import configure_process
    from superionic.spec.models import ResourcesSpec

    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SUPERIONIC_VASP_WALLTIME_S"):
        monkeypatch.delenv(var, raising=False)
    try:
        plan = configure_process(ResourcesSpec(threads=1, walltime_s=7200))
        assert plan.threads_per_job == torch.get_num_threads() == 1
        child = subprocess.run(
            ["sh", "-c", "echo $OMP_NUM_THREADS $OPENBLAS_NUM_THREADS $SUPERIONIC_VASP_WALLTIME_S"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert child == ["1", "1", "7200.0"]  # what CP2K/ABINIT runs inherit
    finally:
        torch.set_num_threads(before)


def test_threads_set_before_torch_is_imported_reach_torch() -> None:
    """A worker that has not imported torch yet (ordering jobs only) does not import it to set its
    threads; torch, imported later by an MLIP job, still uses the planned count."""
    code = (
        "import sys\nfrom superionic.dispatch.threads import configure_process\n"
        "from superionic.spec.models import ResourcesSpec\n"
        "configure_process(ResourcesSpec(threads=1))\nassert 'torch' not in sys.modules\n"
        "import torch\nprint(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]


def test_resources_accepts_the_old_profile_string_and_rejects_bad_threads(tmp_path: Path) -> None:
    from superionic.spec import load_campaign

    base = "name: r\nsystems:\n  - prototype: argyrodite\nstages:\n  - stage: order\n"
    (tmp_path / "a.yaml").write_text(base + "resources: local\n")
    assert load_campaign(tmp_path / "a.yaml").spec.resources.profile == "local"
    (tmp_path / "b.yaml").write_text(base + "resources: {threads: 0}\n")
    r = runner.invoke(app, ["validate", str(tmp_path / "b.yaml")])
    assert r.exit_code == 2 and "resources.threads" in r.output and "Traceback" not in r.output


def test_run_and_packed_worker_print_their_threads(tmp_path: Path) -> None:
    """`run` says what it chose; `worker --jobs 2` starts two processes with CPUs / 2 threads each
    (SLURM_CPUS_PER_TASK=4 -> 2), and they drain the LaunchPad together."""
    (tmp_path / "c.yaml").write_text(
        "name: t\nsystems:\n  - prototype: argyrodite\n    params: {site_mixing: [0.0, 0.5, 1.0]}\n"
        "stages:\n  - stage: order\n    n_structures: 1\n    n_restarts: 1\n"
    )
    env = {**os.environ, "SLURM_CPUS_PER_TASK": "4"}
    assert runner.invoke(app, ["submit", str(tmp_path / "c.yaml")]).exit_code == 0
    r = subprocess.run(
        [EXE, "worker", "c.yaml", "--jobs", "2", "--idle-exit", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "worker: 2 processes at once; threads: 2 per job, 2 jobs at once (4 CPUs from SLURM_CPUS_PER_TASK)"
        in (" ".join(r.stdout.split()))
    )
    children = [line for line in r.stdout.splitlines() if "CPUs from --threads" in line]
    assert len(children) == 2 and all("threads: 2 per job" in c for c in children)
    ran = [
        int(line.split("worker ran ")[1].split()[0]) for line in r.stdout.splitlines() if "worker ran" in line
    ]
    assert sorted(ran) != [] and sum(ran) == 3
    r = runner.invoke(app, ["run", str(tmp_path / "c.yaml"), "--no-report"])
    assert "threads: " in r.output and "per job" in r.output


def _inside_slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, time_left: str) -> None:
    """A SLURM job with ``time_left`` (squeue %L, a stand-in squeue) and a stand-in vasp_std."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in (("squeue", f"echo {time_left}"), ("vasp_std", "true")):
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    for var in ("SUPERIONIC_VASP_CMD", "SUPERIONIC_VASP_WALLTIME_S"):
        monkeypatch.delenv(var, raising=False)


def test_vasp_run_gets_the_time_left_in_the_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a SLURM job, a VASP run without a wall time gets the allocation's time left (squeue
    %L) so custodian stops it cleanly; a shorter resources.walltime_s wins."""
    from superionic.engines import guard

    _inside_slurm_job(tmp_path, monkeypatch, "1-02:03:04")
    assert guard.parse_slurm_time("1-02:03:04") == 93784
    assert guard.parse_slurm_time("05:00") == 300 and guard.parse_slurm_time("UNLIMITED") is None
    seen: list[dict] = []
    checked = guard._checked("vasp", lambda **kw: seen.append(kw))
    checked(vasp_cmd="vasp_std")
    assert seen[-1]["wall_time"] == 93784
    monkeypatch.setenv("SUPERIONIC_VASP_WALLTIME_S", "3600")
    checked(vasp_cmd="vasp_std")
    assert seen[-1]["wall_time"] == 3600
    with pytest.raises(guard.EngineUnavailableError, match="'vasp_gam_missing'"):
        checked(vasp_cmd="srun vasp_gam_missing")


def test_preset_md_settings_are_not_overridden_by_stage_defaults(tmp_path: Path, no_vasp: None) -> None:
    """Study B's preset says NpT + Langevin at 0.5 fs; an md stage that does not set them must run
    that, not the stage model's defaults (NVT Nose-Hoover, 2 fs), on VASP and on the MLIP; a value
    written in the campaign still wins."""
    from superionic.flows import build_flows
    from superionic.spec import load_campaign

    _licl(tmp_path)
    text = (
        "name: b\nengine: {engine}\npreset: antiperovskite_amide\nsystems:\n  - name: LiCl\n"
        "    structure: LiCl.cif\nstages:\n  - stage: md\n    temperatures_K: [500]\n"
        "    production_steps: 10\n{extra}"
    )
    makers = {}
    for engine, extra in (("vasp", ""), ("mlip", ""), ("mlip", "    timestep_fs: 1.0\n")):
        (tmp_path / "c.yaml").write_text(text.format(engine=engine, extra=extra))
        campaign = load_campaign(tmp_path / "c.yaml", check_engines="note")
        job = next(j for j, _ in build_flows(campaign)[0].iterflow() if j.metadata.get("stage") == "md")
        makers[(engine, extra)] = job.function.__self__
    gen = makers[("vasp", "")].input_set_generator
    assert (gen.ensemble, gen.time_step, type(gen).__name__) == ("npt", 0.5, "FrictionMDSet")
    mlip = makers[("mlip", "")]
    assert (mlip.time_step, mlip.dynamics) == (0.5, "langevin")
    assert makers[("mlip", "    timestep_fs: 1.0\n")].time_step == 1.0


def test_engine_commands_behind_mpi_launchers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The program is found past the launcher and its options; each MPI rank gets
    SLURM_CPUS_PER_TASK (or 1) threads, not the whole job's share; a bare command keeps it."""
    from superionic.engines.guard import engine_thread_count, engine_threads, executable_of
    from superionic.engines.vasp import vasp_available

    assert executable_of("srun -n 64 vasp_std") == "vasp_std"
    assert executable_of("mpirun -np 4 --bind-to core vasp_gam") == "vasp_gam"
    ok, why = vasp_available("srun -n 64 vasp_std_not_here")
    assert not ok and "'vasp_std_not_here'" in why
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert engine_thread_count("srun -n 64 vasp_std") == 1
    assert engine_thread_count("cp2k.psmp") is None
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    with engine_threads("mpirun -np 16 cp2k.psmp"):
        assert os.environ["OMP_NUM_THREADS"] == "4"
    assert os.environ["OMP_NUM_THREADS"] == "64"


def test_no_vasp_run_starts_at_the_end_of_an_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With less than MIN_VASP_WALLTIME_S left, the run is refused (rerun later) instead of being
    stopped by custodian after a step and passing as a finished MD part."""
    from superionic.engines import guard

    _inside_slurm_job(tmp_path, monkeypatch, "04:00")
    ran: list[dict] = []
    with pytest.raises(guard.EngineUnavailableError, match="only 240 s left"):
        guard._checked("vasp", lambda **kw: ran.append(kw))(vasp_cmd="vasp_std")
    assert ran == []


def test_force_field_option_reaches_the_fireworks_commands(tmp_path: Path) -> None:
    """submit / cancel / worker take --force-field: the campaign on SevenNet is another campaign on
    the same LaunchPad (its own name), and a worker started for it carries the option."""
    from superionic.cli.fireworks import _worker_cmd

    _licl(tmp_path)
    (tmp_path / "c.yaml").write_text(
        "name: ffw\nengine: mlip\nsystems:\n  - name: LiCl\n    structure: LiCl.cif\n"
        "stages:\n  - stage: relax\n"
    )
    c = str(tmp_path / "c.yaml")
    r = runner.invoke(app, ["submit", c])
    assert r.exit_code == 0 and "added 1 workflow(s)" in r.output, r.output
    r = runner.invoke(app, ["submit", c, "--force-field", "SevenNet"])
    assert r.exit_code == 0 and "added 1 workflow(s)" in r.output and "0 already" in r.output, r.output
    r = runner.invoke(app, ["cancel", c, "--force-field", "SevenNet"])
    assert r.exit_code == 0 and "defused 1 firework(s)" in r.output, r.output
    r = runner.invoke(app, ["cancel", c])  # the pretrained campaign's firework was left alone
    assert r.exit_code == 0 and "defused 1 firework(s)" in r.output, r.output
    r = runner.invoke(app, ["submit", c, "--force-field", "Foo"])
    assert r.exit_code == 2 and "--force-field" in r.output and "Traceback" not in r.output
    # the SLURM worker command names the model folder absolutely (the job starts elsewhere)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pth.tar").write_bytes(b"weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        assert f"--force-field {model} --idle-exit 30" in _worker_cmd(Path(c), None, "model")
    assert _worker_cmd(Path(c), None, "SevenNet").endswith("--force-field SevenNet --idle-exit 30")
    _packed_workers_and_qadapters_follow_the_force_field(tmp_path, Path(c))


def _packed_workers_and_qadapters_follow_the_force_field(tmp_path: Path, c: Path) -> None:
    import subprocess

    from superionic.cli import fireworks as fw
    from superionic.dispatch.site import write_site
    from superionic.errors import SuperionicError
    from superionic.spec import load_campaign

    started: list[list[str]] = []

    class Done:
        def __init__(self, cmd: list[str]) -> None:
            started.append(cmd)

        def wait(self) -> int:
            return 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess, "Popen", Done)
        fw._run_worker_processes(c, 2, 1, 0, 1.0, 60.0, None, 600.0, "SevenNet")
    assert len(started) == 2 and all(cmd[cmd.index("--force-field") + 1] == "SevenNet" for cmd in started)
    # the store's qadapter, written for the pretrained campaign, is brought in line; a user's
    # qadapter whose workers run the pretrained campaign is refused for the SevenNet one
    plain, seven = (load_campaign(c, check_engines="note", force_field=f) for f in (None, "SevenNet"))
    (own,) = [f for f in write_site(seven.store_path, sys.prefix, fw._worker_cmd(c)) if "qadapter" in f.name]
    user = tmp_path / "site" / "my_qadapter.yaml"
    write_site(user.parent, sys.prefix, fw._worker_cmd(c))
    rocket = fw._worker_cmd(c, None, "SevenNet")
    fw._check_rocket(own, rocket, seven)
    from ruamel.yaml import YAML

    assert YAML().load(own.read_text())["rocket_launch"] == rocket
    fw._check_rocket(user, fw._worker_cmd(c), plain)  # the same campaign: fine
    with pytest.raises(SuperionicError) as err:
        fw._check_rocket(user, rocket, seven)
    assert "would run campaign ffw, not ffw-ff-sevennet" in str(err.value.problems[0].message)
    # a command of the user's own making (a wrapper script) is left as it is, in either file
    YAML().dump({**YAML().load(own.read_text()), "rocket_launch": "run_my_worker.sh"}, own.open("w"))
    fw._check_rocket(own, rocket, seven)
    assert YAML().load(own.read_text())["rocket_launch"] == "run_my_worker.sh"
    # the worker command's options are found wherever they sit
    command = f"{sys.prefix}/bin/superionic worker {c} --idle-exit 30 --force-field SevenNet"
    assert fw._campaign_of(command) == "ffw-ff-sevennet"
