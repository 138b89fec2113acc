"""Shared test helpers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# -- parallel test processes (pytest-xdist) ----------------------------------------------------
# The suite's time is mostly CHGNet and CP2K on tiny cells, which gain nothing from a second
# thread (CHGNet on 80 atoms: 0.19 s per force call on 1 thread, 0.22 s on 2), and single-threaded
# Python. So the cores are split between test processes instead: each gets its own cores (CPU
# affinity, inherited by the workers and engines it starts) and that many threads, so no two
# processes compete for a core (torch and OpenMP would otherwise each take every core).
MAX_TEST_PROCESSES = 4  # each holds torch, pymatgen and CHGNet (~1 GB)


def _cores() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return list(range(os.cpu_count() or 1))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one test process per core, at most :data:`MAX_TEST_PROCESSES`."""
    return max(1, min(len(_cores()), MAX_TEST_PROCESSES))


def pytest_configure(config: pytest.Config) -> None:
    """In a test process of ``-n N``: keep to its share of the cores, with that many threads."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2:
        return
    cores = _cores()
    index = int(worker[2:]) % count
    mine = cores[index::count] or cores  # more processes than cores: they share
    try:
        os.sched_setaffinity(0, mine)  # the main thread, and the threads and processes it starts
    except (AttributeError, OSError):  # not on Linux: threads only
        pass
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(len(mine))


#: the longest tests' modules, started first so that no long test is left for the end of a run
LONG_FIRST = (
    "test_hull",
    "test_fireworks",
    "test_cp2k_engine",
    "test_mongodb",
    "test_studies",
    "test_nmr",
    "test_demo_flow",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the long tests first (the order is the same in every test process)."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__ if item.module else "", len(rank)))


@lru_cache
def _shares_module_fixture(path: str) -> bool:
    """Whether a test file defines a module-scoped fixture (a campaign run once for its tests)."""
    try:
        return 'scope="module"' in Path(path).read_text()
    except OSError:
        return False


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """One test at a time to whichever process is free, except that the tests of a file with a
    module-scoped fixture go to one process together, so that the fixture runs once.

    (xdist's ``--dist loadgroup`` would do this with marks, but with pytest 9 it sends grouped
    tests to different processes.)"""
    from xdist.scheduler import LoadScopeScheduling

    class _Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if _shares_module_fixture(str(ROOT / path)) else nodeid

    return _Scheduling(config, log)


def require_fixtures(sub: str = "") -> Path:
    """Return ``../shared/fixtures/<sub>`` or skip (fail under CI) when it is absent."""
    path = FIXTURES / sub
    if not path.exists():
        if IN_CI:
            pytest.fail(f"CI=true but the shared fixtures are missing: {path}")
        pytest.skip(f"shared fixtures not found at {path} (they live beside the project)")
    return path


def require_executable(name: str) -> str:
    """Return the path of an executable or skip (fail under CI) when it is not installed."""
    exe = shutil.which(name)
    if exe is None:
        if IN_CI:
            pytest.fail(f"CI=true but '{name}' is not installed (.ci/run installs it)")
        pytest.skip(f"'{name}' is not installed on this machine")
    return exe


@pytest.fixture
def campaign_dir(tmp_path: Path) -> Path:
    """A temporary folder to write campaign files into."""
    return tmp_path


@dataclass(frozen=True)
class CliRun:
    """What one ``superionic`` command left, shaped like :class:`subprocess.CompletedProcess`."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Standard output then standard error."""
        return self.stdout + self.stderr


@contextmanager
def _process_state_kept() -> Iterator[None]:
    """Put back what a command run in this process changes for the rest of the process (its job):
    torch's threads, the job environment variables, FireWorks' ping interval, the working folder."""
    import torch

    saved = {var: os.environ.get(var) for var in _PROCESS_VARIABLES}
    threads = torch.get_num_threads()
    cwd = Path.cwd()
    try:
        import fireworks.core.rocket as rocket

        ping = rocket.PING_TIME_SECS
    except ImportError:  # pragma: no cover - fireworks is a dependency
        rocket, ping = None, None
    try:
        yield
    finally:
        os.chdir(cwd)
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        torch.set_num_threads(threads)
        if rocket is not None:
            rocket.PING_TIME_SECS = ping


def superionic(*args: str, cwd: Path, env: Mapping[str, str | None] | None = None) -> CliRun:
    """Run ``superionic ARGS`` in this process, from ``cwd`` with ``env`` added to the environment.

    The in-process twin of ``subprocess.run([exe, *args], cwd=cwd, env={**os.environ, **env})``
    without the ~8 s of imports a new process pays: the exit status is the one the console script
    would return (an uncaught exception is 1, its traceback in ``stderr``), and the process is left
    as it was (working folder, environment, torch threads).
    """
    from typer.testing import CliRunner

    from superionic.cli import app

    with _process_state_kept():
        os.chdir(cwd)
        result = CliRunner().invoke(app, list(args), env=env, prog_name="superionic")
    stderr = result.stderr
    if result.exc_info is not None and not isinstance(result.exception, SystemExit | None):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return CliRun(tuple(args), result.exit_code, result.stdout, stderr)


RunCampaign = Callable[..., CliRun]


@pytest.fixture
def run_campaign(tmp_path: Path) -> RunCampaign:
    """``run_campaign(file="c.yaml", *options, cwd=tmp_path, env=None)``: ``superionic run`` in-process.

    Returns the :class:`CliRun` (``returncode``, ``stdout``, ``stderr``) of
    ``superionic run FILE OPTIONS`` started from ``cwd``, as the campaign tests used to get from a
    subprocess.
    """

    def run(
        file: str | Path = "c.yaml",
        *options: str,
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> CliRun:
        return superionic("run", str(file), *options, cwd=cwd or tmp_path, env=env)

    return run


_PROCESS_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "SUPERIONIC_CHECKPOINT_DIR",
    "SUPERIONIC_VASP_WALLTIME_S",
)


@pytest.fixture(autouse=True)
def _job_process_settings_restored():  # type: ignore[no-untyped-def]
    """`run` and `worker` invoked in-process set torch's threads and job environment variables for
    the rest of their process (that is their job); undo it after each test so later tests see the
    machine's defaults (a leaked 1-thread setting slowed every later CHGNet test, a leaked
    checkpoint folder moved later tests' checkpoints)."""
    with _process_state_kept():
        yield


def require_slurm() -> None:
    """Skip unless a local SLURM answers ``sinfo`` with a usable node (fail under ``CI=true``)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    if any(s in out for s in ("idle", "mix", "alloc")):
        return
    if IN_CI:
        pytest.fail("CI=true but no SLURM answers sinfo (.ci/run starts slurm/start_local_slurm.sh)")
    pytest.skip("no local SLURM (start it with: sudo slurm/start_local_slurm.sh)")


# -- a MongoDB-compatible server (secantusdb) for the `mongodb` tests -------------------------
class MongoServer:
    """A ``secantusd-py`` process on a free loopback port, stopped and restarted by PID."""

    def __init__(self, exe: str, storage: Path, extra: tuple[str, ...] = ()) -> None:
        self.exe, self.storage, self.extra = exe, storage, extra
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the server and wait until it answers ping."""
        import pymongo

        log = open(self.storage.parent / f"server-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.storage),
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + timeout_s
        while True:
            try:
                pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500).admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"secantusd-py did not start on {self.uri}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mongo_server(folder: Path, *extra: str) -> MongoServer:
    """Start a server storing into ``folder`` (``extra``: more server options, e.g. ``--auth``);
    skip (fail under CI) when secantusdb is missing."""
    exe = shutil.which("secantusd-py") or str(Path(sys.executable).parent / "secantusd-py")
    if not Path(exe).is_file():
        if IN_CI:
            pytest.fail("CI=true but secantusd-py is missing (pip install -e .[test] installs secantusdb)")
        pytest.skip("no MongoDB-compatible server: pip install -e .[test] installs secantusdb")
    folder.mkdir(parents=True, exist_ok=True)
    server = MongoServer(exe, folder / "data", extra)
    server.storage.mkdir(exist_ok=True)
    server.start()
    return server


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    """One server per test process; each test uses its own database (see ``mongo_db``)."""
    server = start_mongo_server(tmp_path_factory.mktemp("mongo"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mongo_db(mongo_server: MongoServer, request: pytest.FixtureRequest) -> str:
    """A database name of this test's own on the session's server."""
    import re as _re

    return "t_" + _re.sub(r"[^A-Za-z0-9]", "_", request.node.name)[:40]


def run_workers(folder: Path, n: int, file: str = "c.yaml") -> list[int]:
    """Start ``n`` ``superionic worker FILE --idle-exit 3`` processes at once in ``folder``; wait for
    all, require exit status 0 from each, and return how many fireworks each says it ran."""
    exe = str(Path(sys.executable).parent / "superionic")
    workers = [
        subprocess.Popen(
            [exe, "worker", file, "--idle-exit", "3"],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(n)
    ]
    outs = [w.communicate(timeout=900)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outs
    return [int(o.rsplit("worker ran ", 1)[1].split()[0]) for o in outs]
