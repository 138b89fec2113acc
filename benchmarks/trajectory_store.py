"""Binary trajectories: a >= 1 GB run written and analysed on both stores, memory measured.

Paper scale (study B: ~100,000 frames x 270 atoms per run, more for the longest) is beyond what
a trajectory read whole can hold. Here a random walk of 270 atoms (54 mobile, the rest a
vibrating framework) is written chunk by chunk as a binary trajectory
(:mod:`superionic.trajectory_store`) into

* the embedded store's folder, and
* GridFS on a MongoDB-protocol server (``--server-uri URI``, or secantusdb started here),

then the diffusion analysis streams it back (``diffusion_from_chunks``). Each part runs in its own
process so that its peak resident memory (``ru_maxrss``) is its own. The D it finds is checked
against the walk's known D.

Peer, in this process at a size it can hold: today's blob route, a pymatgen ``Trajectory``
stored as gzipped JSON and read whole (``BlobDirStore``), against the binary trajectory of the
same frames: seconds and peak traced memory (tracemalloc), and the ratio.

    .venv/bin/python benchmarks/trajectory_store.py [--frames 320000] [--server-uri URI] [--no-server]
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

N_ATOMS, N_MOBILE, DT_FS, SIGMA_FRAC = 270, 54, 100.0, 0.004  # 10 A cell: 0.04 A per step and axis
CELL_A = 10.0


def walk_chunks(n_frames: int, chunk: int = 2000, seed: int = 0):  # type: ignore[no-untyped-def]
    """Yield ``(frac float32 (k, 270, 3))`` of a random walk: 54 mobile atoms, a vibrating rest."""
    rng = np.random.default_rng(seed)
    start = rng.random((N_ATOMS, 3))
    pos = start.copy()
    for a in range(0, n_frames, chunk):
        k = min(chunk, n_frames - a)
        steps = rng.normal(0.0, SIGMA_FRAC, (k, N_MOBILE, 3))
        mobile = pos[:N_MOBILE] + np.cumsum(steps, axis=0)
        pos[:N_MOBILE] = mobile[-1]
        frame = rng.normal(0.0, 0.002, (k, N_ATOMS - N_MOBILE, 3)) + start[N_MOBILE:]
        yield (np.concatenate([mobile, frame], axis=1) % 1.0).astype(np.float32)


def species() -> list[str]:
    """Li for the mobile atoms, S for the framework."""
    return ["Li"] * N_MOBILE + ["S"] * (N_ATOMS - N_MOBILE)


def expected_d_cm2_s() -> float:
    """D of the walk: <dr^2> per step = 3 (sigma a)^2 over 6 dt."""
    step_a = SIGMA_FRAC * CELL_A
    return 3 * step_a**2 / (6 * DT_FS) * 0.1  # A^2/fs -> cm^2/s


def backend(kind: str, where: str):  # type: ignore[no-untyped-def]
    """The file or GridFS backend named on the command line of a child process."""
    from superionic.trajectory_store import FileBackend, GridFSBackend

    if kind == "file":
        return FileBackend(where)
    import pymongo

    return GridFSBackend(pymongo.MongoClient(where)["bench_traj"], "bench.trajectories")


def child_write(kind: str, where: str, n_frames: int) -> None:
    """Write the walk; print JSON (name, bytes, seconds, peak RSS)."""
    from superionic.trajectory_store import TrajectoryWriter

    t = time.perf_counter()
    writer = TrajectoryWriter(backend(kind, where), species(), np.eye(3) * CELL_A, DT_FS)
    for frac in walk_chunks(n_frames):
        writer.append(frac)
    ref = writer.close()
    out = {"name": ref["superionic_trajectory"], "bytes": ref["nbytes"], "seconds": time.perf_counter() - t}
    print(json.dumps({**out, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_analyse(kind: str, where: str, name: str) -> None:
    """Stream the trajectory into the diffusion analysis; print JSON (D, seconds, peak RSS)."""
    from superionic.analysis.diffusion import diffusion_from_chunks
    from superionic.trajectory_store import TrajectoryReader

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # imports, before any frame
    t = time.perf_counter()
    with TrajectoryReader(backend(kind, where).open(name)) as reader:
        result = diffusion_from_chunks(
            reader.chunks(), reader.n_frames, reader.species, "Li", DT_FS, 600.0, fit_start=0.05, fit_end=0.5
        )
    print(
        json.dumps(
            {
                "D_cm2_s": result.diffusivity_cm2_s,
                "D_err_cm2_s": result.diffusivity_err_cm2_s,
                "seconds": time.perf_counter() - t,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "base_rss_mb": base_mb,
            }
        )
    )


def run_child(*args: str) -> dict:
    """Run this script as a child in one mode and return what it printed."""
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def peer_comparison(n_frames: int = 5_000) -> None:
    """Today's gzipped-JSON Trajectory blob read whole vs the binary trajectory, same frames."""
    from pymatgen.core import Lattice
    from pymatgen.core.trajectory import Trajectory

    from superionic.analysis.diffusion import diffusion_from_chunks, diffusion_from_frac_coords
    from superionic.analysis.trajectory_io import from_pymatgen_trajectory
    from superionic.dispatch.stores import BlobDirStore
    from superionic.trajectory_store import FileBackend, TrajectoryReader, TrajectoryWriter

    frac = np.concatenate(list(walk_chunks(n_frames)))
    tmp = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    lattice = Lattice.cubic(CELL_A)
    traj = Trajectory(species(), frac.astype(float), lattice=lattice, constant_lattice=True, time_step=DT_FS)
    blobs = BlobDirStore(tmp / "blobs")
    blobs.connect()
    rows = {}
    tracemalloc.start()
    t = time.perf_counter()
    blobs.update([{"blob_uuid": "x", "data": traj.as_dict()}], key="blob_uuid")
    write_json = time.perf_counter() - t
    tracemalloc.reset_peak()
    t = time.perf_counter()
    arrays = from_pymatgen_trajectory(Trajectory.from_dict(blobs.query_one({"blob_uuid": "x"})["data"]))
    d_json = diffusion_from_frac_coords(
        arrays.frac_coords, arrays.lattices, arrays.species, "Li", DT_FS, 600.0
    )
    rows["gzipped JSON blob, read whole"] = (
        write_json,
        time.perf_counter() - t,
        tracemalloc.get_traced_memory()[1],
    )
    del arrays
    tracemalloc.reset_peak()
    t = time.perf_counter()
    writer = TrajectoryWriter(FileBackend(tmp / "traj"), species(), lattice.matrix, DT_FS)
    for a in range(0, n_frames, 2000):
        writer.append(frac[a : a + 2000])
    ref = writer.close()
    write_bin = time.perf_counter() - t
    tracemalloc.reset_peak()
    t = time.perf_counter()
    with TrajectoryReader(FileBackend(tmp / "traj").open(ref["superionic_trajectory"])) as reader:
        d_bin = diffusion_from_chunks(reader.chunks(), reader.n_frames, reader.species, "Li", DT_FS, 600.0)
    rows["binary trajectory, chunks"] = (
        write_bin,
        time.perf_counter() - t,
        tracemalloc.get_traced_memory()[1],
    )
    tracemalloc.stop()
    json_mb = sum(p.stat().st_size for p in (tmp / "blobs").glob("*")) / 1e6
    bin_mb = ref["nbytes"] / 1e6
    print(f"\npeer: {n_frames:,} frames x {N_ATOMS} atoms, in this process (tracemalloc peak while reading)")
    print(f"{'':32s}{'write s':>9s}{'analyse s':>11s}{'peak MB':>9s}{'size MB':>9s}")
    for (label, (w, r, peak)), size in zip(rows.items(), (json_mb, bin_mb), strict=True):
        print(f"{label:32s}{w:9.1f}{r:11.1f}{peak / 1e6:9.0f}{size:9.0f}")
    (jw, jr, jp), (bw, br, bp) = rows.values()
    print(f"  ratio JSON/binary: write {jw / bw:.1f}x, analyse {jr / br:.1f}x, memory {jp / bp:.1f}x")
    print(
        f"  same D: {d_json.diffusivity_cm2_s:.4e} vs {d_bin.diffusivity_cm2_s:.4e} cm2/s (float32 rounding)"
    )
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Run the parts and print the table."""
    args = sys.argv[1:]
    if args and args[0] == "--child-write":
        child_write(args[1], args[2], int(args[3]))
        return
    if args and args[0] == "--child-analyse":
        child_analyse(args[1], args[2], args[3])
        return
    n_frames = int(args[args.index("--frames") + 1]) if "--frames" in args else 320_000
    targets: list[tuple[str, str, str]] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-traj-"))
    targets.append(("embedded folder", "file", str(folder)))
    proc = None
    if "--server-uri" in args:
        targets.append(("MongoDB GridFS", "gridfs", args[args.index("--server-uri") + 1]))
    elif "--no-server" not in args:
        sys.path.insert(0, str(Path(__file__).parent))
        from submit import start_server

        started = start_server()
        if started is None:
            print("server: secantusd-py not installed (pip install -e .[test]); GridFS row skipped")
        else:
            uri, proc = started
            targets.append(("secantusdb GridFS", "gridfs", uri))
    per_frame = N_ATOMS * 3 * 4
    print(
        f"{n_frames:,} frames x {N_ATOMS} atoms ({N_MOBILE} mobile), float32: "
        f"{n_frames * per_frame / 1e9:.2f} GB; bound on the analysis: 24 B x frames x mobile atoms "
        f"= {24 * n_frames * N_MOBILE / 1e6:.0f} MB kept, plus one chunk and the FFT work arrays"
    )
    print(f"expected D of the walk: {expected_d_cm2_s():.4e} cm2/s")
    print("RSS: peak resident MB of the process (analysis: after imports -> peak)")
    print(f"{'store':22s}{'GB':>6s}{'write s':>9s}{'RSS MB':>8s}{'analyse s':>11s}{'RSS MB':>12s}  D (cm2/s)")
    try:
        for label, kind, where in targets:
            w = run_child("--child-write", kind, where, str(n_frames))
            a = run_child("--child-analyse", kind, where, w["name"])
            print(
                f"{label:22s}{w['bytes'] / 1e9:6.2f}{w['seconds']:9.1f}{w['peak_rss_mb']:8.0f}"
                f"{a['seconds']:11.1f}{a['base_rss_mb']:6.0f}->{a['peak_rss_mb']:4.0f}  "
                f"{a['D_cm2_s']:.4e} +- {a['D_err_cm2_s']:.1e}"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
    peer_comparison()


if __name__ == "__main__":
    main()
