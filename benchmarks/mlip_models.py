"""CHGNet (pretrained, or a fine-tuned model folder) vs SevenNet-0 on the study A demo cell.

The cell: the lowest-Ewald ordering of Li5PS4(BH4)2 (``argyrodite_bh4``, no BH4 vacancies, 80
atoms) at the refined a = 10.03 A. For each model, in one process: a cell relaxation (ASE FIRE on
a FrechetCellFilter, fmax 0.05 eV/A, at most 400 steps) giving a, the volume change and the
density; then NVT MD at 600 K (Langevin, 1 fs, 50 steps after 10 warm-up steps) giving ms/step.
Prints one row per model and the ratios to CHGNet's.

``--cell FILE`` takes another ordered cell instead (e.g. the lowest-Ewald ordering of the 20-atom
primitive cell of issue 17's CP2K demonstration); ``a_conv`` is the cubic lattice constant of the
Z = 4 argyrodite cell with the same volume per formula unit, so cells of any size compare.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/mlip_models.py [--threads 1] [--model FOLDER ...] [--cell FILE]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def demo_cell() -> object:
    """Return the ordered Li5PS4(BH4)2 cell (80 atoms) from ``superionic order``."""
    from pymatgen.core import Structure

    out = Path(tempfile.mkdtemp()) / "orderings"
    exe = Path(sys.executable).with_name("superionic")
    cmd = [str(exe), "order", "argyrodite_bh4", "--param", "bh4_vacancies=0", "--n", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return Structure.from_file(str(out / "1.cif"))


def calculators(models: list[str]) -> dict[str, object]:
    """Return name -> ASE calculator (CPU) for CHGNet, SevenNet-0 and any model folders."""
    from chgnet.model.dynamics import CHGNetCalculator
    from sevenn.calculator import SevenNetCalculator

    from superionic.engines.finetune import finetuned_calculator, read_model_folder

    out: dict[str, object] = {
        "CHGNet 0.3.0": CHGNetCalculator(use_device="cpu"),
        "SevenNet-0": SevenNetCalculator(model="7net-0", device="cpu"),
    }
    for folder in models:
        meta = read_model_folder(folder)
        out[f"fine-tuned {Path(folder).name}"] = finetuned_calculator(folder, meta["weights_sha256"])
    return out


def run(structure: object, calc: object) -> dict[str, float]:
    """Relax cell and positions, then time MD; return a (A), volume change (%), density, ms/step."""
    from ase import units
    from ase.filters import FrechetCellFilter
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import FIRE

    atoms = structure.to_ase_atoms()  # type: ignore[attr-defined]
    v0 = atoms.get_volume()
    atoms.calc = calc
    t0 = time.perf_counter()
    opt = FIRE(FrechetCellFilter(atoms), logfile=None)
    converged = opt.run(fmax=0.05, steps=400)
    relax_s = time.perf_counter() - t0
    volume = atoms.get_volume()
    density = sum(atoms.get_masses()) / volume * 1.66053906660
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    md = Langevin(atoms, 1.0 * units.fs, temperature_K=600, friction=0.01, rng=np.random.default_rng(0))
    md.run(10)
    t1 = time.perf_counter()
    md.run(50)
    ms = (time.perf_counter() - t1) / 50 * 1000
    n_fu = structure.composition.get_reduced_composition_and_factor()[1]  # type: ignore[attr-defined]
    return {
        "a_A": (4 * volume / n_fu) ** (1 / 3),
        "dV_pct": 100 * (volume / v0 - 1),
        "density_g_cm3": density,
        "ms_per_step": ms,
        "relax_s": relax_s,
        "relax_steps": opt.nsteps,
        "converged": bool(converged),
    }


def main() -> None:
    """Run every model on the demo cell and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", action="append", default=[], help="a fine-tuned model folder")
    parser.add_argument("--cell", help="an ordered cell (CIF/POSCAR) instead of the 80-atom demo cell")
    args = parser.parse_args()
    import torch
    from pymatgen.core import Structure

    torch.set_num_threads(args.threads)
    cell = Structure.from_file(args.cell) if args.cell else demo_cell()
    if not cell.is_ordered:
        sys.exit(f"error: --cell {args.cell}: a disordered cell; valid: an ordered one (superionic order)")
    n_fu = cell.composition.get_reduced_composition_and_factor()[1]
    a0 = (4 * cell.volume / n_fu) ** (1 / 3)
    print(f"cell: {cell.composition.reduced_formula}, {len(cell)} atoms, a_conv = {a0:.3f} A")
    rows = {name: run(cell, calc) for name, calc in calculators(args.model).items()}
    ref = rows["CHGNet 0.3.0"]
    print(f"{'model':28s} {'a_conv':>7s} {'dV %':>6s} {'g/cm3':>6s} {'ms/step':>8s} {'x CHGNet':>8s} relax")
    for name, r in rows.items():
        print(
            f"{name:28s} {r['a_A']:7.3f} {r['dV_pct']:+6.1f} {r['density_g_cm3']:6.3f} "
            f"{r['ms_per_step']:8.1f} "
            f"{r['ms_per_step'] / ref['ms_per_step']:8.2f} {r['relax_steps']} steps, {r['relax_s']:.0f} s"
            + ("" if r["converged"] else " (not converged)")
        )


if __name__ == "__main__":
    main()
