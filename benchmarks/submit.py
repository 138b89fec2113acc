"""Submitting fireworks: superionic's embedded LaunchPad vs FireWorks' stock mongomock mode.

Both in this process. Five-job linear workflows (ScriptTask fireworks), added in one call per
batch (``bulk_add_wfs``, what ``superionic submit`` uses) and, for the stock mode, also one
``add_wf`` per workflow (what most scripts do). Sizes: 1,000 and 10,000 fireworks (ours), and the
stock mode at 1,000 and, unless ``--quick``, 10,000 fireworks (about 100 s). Prints seconds,
the 10k/1k growth (10 = linear) and the stock/ours ratio.

With a MongoDB-protocol server (the cluster path): FireWorks' own LaunchPad on the server, the
same workflows in one ``bulk_add_wfs``; ``--server-uri mongodb://...`` uses a running server (a
real ``mongod``), otherwise the test extra's ``secantusd-py`` is started on a free loopback port
in a temporary folder and stopped at the end (skipped, with a line, when it is not installed).

    .venv/bin/python benchmarks/submit.py [--quick] [--server-uri URI]
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STOCK_FILE = Path(tempfile.mkdtemp(prefix="fw-stock-")) / "mongomock.json"
STOCK_FILE.write_text("{}")
os.environ["MONGOMOCK_SERVERSTORE_FILE"] = str(STOCK_FILE)  # read when fireworks is imported

from fireworks import Firework, LaunchPad, ScriptTask, Workflow  # noqa: E402

from superionic.dispatch.fwstore import EmbeddedLaunchPad  # noqa: E402


def workflows(n_fireworks: int) -> list[Workflow]:
    """``n_fireworks / 5`` linear five-job workflows."""
    out = []
    for k in range(n_fireworks // 5):
        fws = [Firework(ScriptTask.from_str("true"), name=f"wf{k}-job{i}") for i in range(5)]
        out.append(Workflow(fws, {fws[i]: [fws[i + 1]] for i in range(4)}, name=f"wf{k}"))
    return out


def time_ours(n: int) -> float:
    """Seconds to add ``n`` fireworks to a fresh embedded LaunchPad (bulk)."""
    lp = EmbeddedLaunchPad(tempfile.mkdtemp(prefix="fw-ours-"))
    wfs = workflows(n)
    t = time.perf_counter()
    lp.bulk_add_wfs(wfs)
    dt = time.perf_counter() - t
    assert lp.fireworks.count_documents({}) == n
    return dt


def time_stock(n: int, bulk: bool) -> float:
    """Seconds to add ``n`` fireworks to FireWorks' mongomock-persistence LaunchPad."""
    lp = LaunchPad(name=f"bench{n}{bulk}", strm_lvl="ERROR")
    lp.reset("", require_password=False)
    wfs = workflows(n)
    t = time.perf_counter()
    if bulk:
        lp.bulk_add_wfs(wfs)
    else:
        for wf in wfs:
            lp.add_wf(wf)
    dt = time.perf_counter() - t
    assert lp.fireworks.count_documents({}) == n
    return dt


def time_server(uri: str, n: int) -> float:
    """Seconds to add ``n`` fireworks (bulk) to FireWorks' LaunchPad in a fresh database on ``uri``."""
    lp = LaunchPad(host=uri, uri_mode=True, name=f"bench_submit_{n}", strm_lvl="ERROR")
    lp.reset("", require_password=False)
    wfs = workflows(n)
    t = time.perf_counter()
    lp.bulk_add_wfs(wfs)
    dt = time.perf_counter() - t
    assert lp.fireworks.count_documents({}) == n
    lp.connection.drop_database(f"bench_submit_{n}")
    return dt


def start_server() -> tuple[str, subprocess.Popen] | None:
    """Start ``secantusd-py`` on a free loopback port; None when it is not installed."""
    import pymongo

    exe = shutil.which("secantusd-py") or str(Path(sys.executable).parent / "secantusd-py")
    if not Path(exe).is_file():
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="bench-server-"))
    proc = subprocess.Popen(
        [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}"
    for _ in range(300):
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            return uri, proc
        except pymongo.errors.PyMongoError:
            time.sleep(0.2)
    proc.kill()
    return None


def server_rows(ours: dict[int, float]) -> None:
    """Time the server LaunchPad and print its rows beside ours."""
    uri, proc = None, None
    if "--server-uri" in sys.argv:
        uri = sys.argv[sys.argv.index("--server-uri") + 1]
        label = "MongoDB server (bulk)"
    else:
        started = start_server()
        if started is None:
            print("server: secantusd-py not installed (pip install -e .[test]); server rows skipped")
            return
        uri, proc = started
        label = "secantusdb server (bulk)"
    try:
        server = {n: time_server(uri, n) for n in (1000, 10000)}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{label:28s}{server[1000]:11.2f}s{server[10000]:11.2f}s{server[10000] / server[1000]:8.1f}")
    for n in (1000, 10000):
        print(f"  ratio server/embedded at {n:>6,d} fireworks (bulk): {server[n] / ours[n]:.1f}x")


def main() -> None:
    """Run and print the table."""
    quick = "--quick" in sys.argv
    ours = {n: time_ours(n) for n in (1000, 10000)}
    print(f"{'':28s}{'1,000 fws':>12s}{'10,000 fws':>12s}{'10k/1k':>8s}")
    scale = ours[10000] / ours[1000]
    print(f"{'superionic embedded (bulk)':28s}{ours[1000]:11.2f}s{ours[10000]:11.2f}s{scale:8.1f}")
    sizes = (1000,) if quick else (1000, 10000)
    for bulk in (True, False):
        stock = {n: time_stock(n, bulk) for n in sizes}
        label = f"stock mongomock ({'bulk' if bulk else 'add_wf'})"
        if 10000 in stock:
            big = f"{stock[10000]:11.2f}s{stock[10000] / stock[1000]:8.1f}"
        else:
            big = f"{'skipped':>12s}"
        print(f"{label:28s}{stock[1000]:11.2f}s{big}")
        for n in sizes:
            mode = "bulk" if bulk else "add_wf"
            print(f"  ratio stock/ours at {n:>6,d} fireworks ({mode}): {stock[n] / ours[n]:.1f}x")
    server_rows(ours)
    print(f"target: 10,000 fireworks in under 10 s -> {'met' if ours[10000] < 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
