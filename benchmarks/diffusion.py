"""All-lags FFT MSD vs pymatgen-analysis-diffusion's DiffusionAnalyzer (smoothed="constant").

Part 1, same synthetic random walk with a known D (20,000 frames x 200 atoms by default): both
codes' D, the analytic D, wall times and the speed ratio, in one run. Both fit lags 1..k (the
first 10 % of the run) by uniform least squares; pymatgen's "constant" mode is run in its
all-origins configuration (avg_nsteps = n - k - 1: every lag averaged over n - k - 1 origins),
so the two MSDs sample the same data and "equal D" compares methods, not sampling noise.
Part 2, ours alone on 100,000 frames x 500 atoms: wall time and peak memory.

Usage: python benchmarks/diffusion.py [--frames 20000 --atoms 200] [--big-frames 100000 --big-atoms 500]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from superionic.analysis.diffusion import diffusion_from_frac_coords

TRUE_D = 1.0e-5  # cm^2/s
DT_FS = 2.0
BOX_A = 20.0


def walk(n_frames: int, n_atoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(2 * (TRUE_D / 0.1) * DT_FS)  # A per step per direction
    pos = np.empty((n_frames, n_atoms + 4, 3))
    pos[:, :n_atoms] = rng.random((n_atoms, 3)) * BOX_A
    pos[1:, :n_atoms] += np.cumsum(rng.normal(0.0, sigma, (n_frames - 1, n_atoms, 3)), axis=0)
    pos[:, n_atoms:] = rng.random((4, 3)) * BOX_A  # fixed framework
    frac = (pos / BOX_A) % 1.0
    return frac, np.eye(3) * BOX_A, ["Li"] * n_atoms + ["S"] * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--atoms", type=int, default=200)
    parser.add_argument("--big-frames", type=int, default=100000)
    parser.add_argument("--big-atoms", type=int, default=500)
    parser.add_argument("--skip-pymatgen", action="store_true")
    args = parser.parse_args()

    frac, lattice, species = walk(args.frames, args.atoms)
    n = args.frames
    k = n // 10  # common fit window: lags 1 .. k
    t0 = time.perf_counter()
    ours = diffusion_from_frac_coords(
        frac, lattice, species, "Li", DT_FS, 800.0, fit_start=0.0, fit_end=(k + 0.5) / (n - 1)
    )
    t_ours = time.perf_counter() - t0
    print(
        f"random walk: {n} frames x {args.atoms} atoms, analytic D = {TRUE_D:.4e} cm2/s; "
        f"fit window lags 1..{k} ({k * DT_FS / 1000:.0f} ps)"
    )
    print(
        f"  superionic (all origins, all lags, FFT): D = {ours.diffusivity_cm2_s:.4e} cm2/s "
        f"({(ours.diffusivity_cm2_s / TRUE_D - 1) * 100:+.2f} % vs analytic), {t_ours:.2f} s"
    )
    if not args.skip_pymatgen:
        from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer, get_diffusivity_from_msd
        from pymatgen.core import Lattice, Structure

        lat = Lattice(lattice)
        t0 = time.perf_counter()
        structures = [Structure(lat, species, f) for f in frac]
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        # all-origins configuration of "constant": lags 0..k, each averaged over n - k - 1 origins
        pmg = DiffusionAnalyzer.from_structures(
            structures, "Li", 800, DT_FS, 1, smoothed="constant", avg_nsteps=n - k - 1
        )
        t_pmg = time.perf_counter() - t0
        d_pmg, _ = get_diffusivity_from_msd(pmg.msd[1 : k + 1], pmg.dt[1 : k + 1], smoothed=False)
        print(
            f"  pymatgen DiffusionAnalyzer(smoothed='constant'): D = {d_pmg:.4e} cm2/s on the same window "
            f"({(d_pmg / TRUE_D - 1) * 100:+.2f} % vs analytic; "
            f"its own full-range fit {pmg.diffusivity:.4e}), "
            f"{t_pmg:.2f} s (+ {t_build:.1f} s building Structures)"
        )
        print(
            f"  D ours / D pymatgen = {ours.diffusivity_cm2_s / d_pmg:.4f}; speed-up = {t_pmg / t_ours:.1f}x"
        )
    del frac
    frac, lattice, species = walk(args.big_frames, args.big_atoms, seed=1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    big = diffusion_from_frac_coords(frac, lattice, species, "Li", DT_FS, 800.0)
    t_big = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"superionic alone: {args.big_frames} frames x {args.big_atoms} atoms: "
        f"D = {big.diffusivity_cm2_s:.4e} cm2/s, {t_big:.1f} s, peak RSS {peak:.0f} MB "
        f"(input array {frac.nbytes / 2**20:.0f} MB; peak before analysis {before:.0f} MB)"
    )


if __name__ == "__main__":
    main()
