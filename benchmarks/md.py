"""MLIP MD through superionic (atomate2 maker, jobflow, the embedded store) vs a bare ASE loop.

Both run CHGNet MD of the demo's ordered Li6PS5Cl cell (52 atoms) with the same thermostat as the
md stage (ASE NPT class as NVT Nose-Hoover, ttime 50 fs, 2 fs, Maxwell-Boltzmann velocities with
one seed, zero total momentum) for the same number of steps. Every measurement runs in a fresh
process, and its time includes building the CHGNet model, so both sides pay the same set-up.

1. One run alone: superionic's md job (threads as `superionic run` sets them) vs the bare loop
   with torch's default threads: ms/step each and the ratio (target <= 1.1).
2. N runs packed on the machine at once (as a worker with --jobs N does): superionic's aggregate
   steps/s vs N x the bare single-threaded loop's steps/s when run alone (target >= 0.9), and, for
   contrast, N bare loops at once with torch's default threads (each takes every core).

Usage: python benchmarks/md.py [--steps 200] [--packed 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURE_K = 700.0
TIMESTEP_FS = 2.0
SEED = 0


def demo_cell(path: Path) -> None:
    """Write the demo's first Ewald ordering of Li6PS5Cl to ``path`` (CIF)."""
    from superionic.spec import load_campaign
    from superionic.stages.order import ordered_structures

    campaign = load_campaign(ROOT / "workflows" / "demo.yaml")
    system = campaign.systems[0]
    _, structures = ordered_structures(system.structure, 1, system.oxidation_states, system.polyanions)
    structures[0].to(filename=str(path))


def run_superionic(cif: Path, steps: int, jobs_at_once: int) -> dict:
    """The md stage's job for one temperature, run by superionic's local runner into a store."""
    from jobflow import Flow, JobStore
    from pymatgen.core import Structure

    from superionic.dispatch.local import CampaignStore, run_flows
    from superionic.dispatch.stores import BlobDirStore, JournalStore
    from superionic.dispatch.threads import configure_process
    from superionic.engines.mlip import md_maker
    from superionic.spec.models import ResourcesSpec

    plan = configure_process(ResourcesSpec(), jobs_at_once=jobs_at_once)
    structure = Structure.from_file(cif)
    settings = {
        "force_field": "CHGNet",
        "thermostat": "nose-hoover",
        "timestep_fs": TIMESTEP_FS,
        "production_steps": steps,
        "trajectory_interval": 5,
        "seed": SEED,
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = CampaignStore(
            JobStore(
                JournalStore(root / "outputs.jsonl", collection_name="outputs"),
                additional_stores={"data": BlobDirStore(root / "blobs")},
            ),
            JournalStore(root / "state.jsonl", collection_name="state", key="uuid"),
            root,
        )
        job = md_maker(settings, TEMPERATURE_K).make(structure)
        t0 = time.perf_counter()
        summary = run_flows([Flow([job])], store, root / "jobs")
        seconds = time.perf_counter() - t0
    if not summary.ok:
        raise SystemExit(f"the md job failed: {summary.failed}")
    return {"seconds": seconds, "steps": steps, "threads": plan.threads_per_job}


def run_bare(cif: Path, steps: int, threads: int | None) -> dict:
    """The same MD as a plain ASE loop with CHGNet's ASE calculator (``threads`` None: torch's default)."""
    import numpy as np
    import torch
    from ase import units
    from ase.md.npt import NPT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from chgnet.model.dynamics import CHGNetCalculator
    from pymatgen.core import Structure

    if threads is not None:
        torch.set_num_threads(threads)
    atoms = Structure.from_file(cif).to_ase_atoms()
    # ASE's NPT needs an upper-triangular cell; rotate the atoms with it (scale_atoms keeps fractions)
    atoms.set_cell(atoms.cell.standard_form(form="upper")[0], scale_atoms=True)
    t0 = time.perf_counter()
    atoms.calc = CHGNetCalculator()
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(SEED))
    Stationary(atoms)
    dyn = NPT(
        atoms,
        timestep=TIMESTEP_FS * units.fs,
        temperature_K=TEMPERATURE_K,
        externalstress=0.0,
        ttime=50.0 * units.fs,
        pfactor=None,
    )
    frames: list = []
    dyn.attach(lambda: frames.append(atoms.get_positions().copy()), interval=5)
    dyn.run(steps)
    return {"seconds": time.perf_counter() - t0, "steps": steps, "threads": torch.get_num_threads()}


def child(kind: str, cif: Path, steps: int, arg: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--cif",
        str(cif),
        "--steps",
        str(steps),
        "--arg",
        str(arg),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def results(procs: list[subprocess.Popen]) -> list[dict]:
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a benchmark process failed (exit {p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=200, help="MD steps per run (default 200)")
    parser.add_argument("--packed", type=int, default=2, help="runs at once in part 2 (default 2)")
    parser.add_argument("--child", choices=["superionic", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--cif", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--arg", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # ASE's NPT rename and CHGNet's tensor notices, in every process
    if args.child == "superionic":
        print(json.dumps(run_superionic(args.cif, args.steps, max(1, args.arg))))
        return
    if args.child == "bare":
        print(json.dumps(run_bare(args.cif, args.steps, args.arg or None)))
        return

    n, steps = args.packed, args.steps
    with tempfile.TemporaryDirectory() as tmp:
        cif = Path(tmp) / "Li6PS5Cl.cif"
        demo_cell(cif)
        print(f"CHGNet NVT Nose-Hoover MD, demo Li6PS5Cl (52 atoms), {TEMPERATURE_K:g} K, {steps} steps/run")
        (ours,) = results([child("superionic", cif, steps, 1)])
        (bare,) = results([child("bare", cif, steps, 0)])
        (bare1,) = results([child("bare", cif, steps, 1)])
        ms = {
            k: 1e3 * r["seconds"] / r["steps"] for k, r in (("ours", ours), ("bare", bare), ("bare1", bare1))
        }
        print("\n1. one run alone (ms/step, model set-up included)")
        print(f"   superionic md job ({ours['threads']} threads)        {ms['ours']:8.1f}")
        print(f"   bare ASE loop (torch default, {bare['threads']} threads) {ms['bare']:8.1f}")
        print(f"   bare ASE loop (1 thread)                {ms['bare1']:8.1f}")
        print(f"   ratio superionic / bare default          {ms['ours'] / ms['bare']:8.2f}   (target <= 1.1)")

        t0 = time.perf_counter()
        packed_ours = results([child("superionic", cif, steps, n) for _ in range(n)])
        wall_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        packed_bare = results([child("bare", cif, steps, 0) for _ in range(n)])
        wall_bare = time.perf_counter() - t0
        rate_ours = n * steps / max(r["seconds"] for r in packed_ours)
        rate_bare = n * steps / max(r["seconds"] for r in packed_bare)
        rate_ref = n * steps / bare1["seconds"]  # N x the single-threaded loop alone
        print(f"\n2. {n} runs at once (aggregate steps/s; process start-up excluded)")
        threads = packed_ours[0]["threads"]
        print(f"   superionic, {threads} thread(s) each (as worker --jobs {n})   {rate_ours:8.2f}")
        print(f"   bare loops, torch default threads each   {rate_bare:8.2f}")
        print(f"   {n} x bare single-threaded loop alone      {rate_ref:8.2f}")
        print(f"   ratio superionic / (N x bare 1-thread)    {rate_ours / rate_ref:8.2f}   (target >= 0.9)")
        print(f"   ratio superionic / bare default packed    {rate_ours / rate_bare:8.2f}")
        print(f"   wall incl. start-up: superionic {wall_ours:.0f} s, bare {wall_bare:.0f} s")


if __name__ == "__main__":
    main()
