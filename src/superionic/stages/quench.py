"""Quench stage: melt-quench MD per (T_melt, replica), then local-structure analysis of each result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jobflow import job
from pymatgen.core import Structure

from superionic.analysis.local_structure import local_structure_summary


def _s(x: Structure | dict) -> Structure:
    return x if isinstance(x, Structure) else Structure.from_dict(x)


@job
def analyze_local_structure(
    structure: Structure | dict,
    label: str,
    center: str | None,
    ligands: list[str],
    cutoff_A: float,
    shape: str | None = None,
    reference: Structure | dict | None = None,
    melt_temperature_K: float | None = None,
    replica: int | None = None,
) -> dict[str, Any]:
    """CN, bond lengths, CSM, connectivity, RDFs, X-ray G(r) and similarity to the crystal."""
    summary = local_structure_summary(
        _s(structure), center, ligands, cutoff_A, shape, _s(reference) if reference is not None else None
    )
    return {"label": label, "melt_temperature_K": melt_temperature_K, "replica": replica, **summary}


@job
def analyze_snapshots(
    trajectory: Any,
    label: str,
    center: str,
    ligands: list[str],
    cutoff_A: float,
    shape: str | None,
    every_frames: int,
    skip_frames: int,
    temperature_K: float,
    reference: Structure | dict | None = None,
    melt_temperature_K: float | None = None,
    replica: int | None = None,
) -> dict[str, Any]:
    """Local structure pooled over MD snapshots every ``every_frames`` stored frames (study C).

    ``trajectory`` is the md stage's run (one trajectory or its chunks); the first
    ``skip_frames`` (heating ramp) are not sampled.
    """
    from superionic.analysis.trajectory_io import TrajectoryArrays
    from superionic.stages.md import concatenate_chunks

    chunks = trajectory if isinstance(trajectory, list) else [trajectory]
    frac, lattice, symbols = concatenate_chunks(chunks, skip_frames)
    data = TrajectoryArrays(frac_coords=frac, lattices=lattice, species=symbols)
    frames = [data.structure_at(k) for k in range(0, data.n_frames, max(1, int(every_frames)))]
    summary = local_structure_summary(
        frames, center, ligands, cutoff_A, shape, _s(reference) if reference is not None else None
    )
    return {
        "label": label,
        "melt_temperature_K": melt_temperature_K,
        "replica": replica,
        "snapshot_temperature_K": temperature_K,
        **summary,
    }


def density_jobs(maker: Any, structure: Any, method: str, name: str, strain: float = 0.2) -> tuple[list, Any]:
    """Return the density step before a quench: ``(jobs, structure reference at the new density)``.

    ``npt``: ``maker`` (an engine's NpT MD maker) runs once and its final structure is taken.
    ``mpmorph``: atomate2's MPMorph ``EquilibriumVolumeMaker`` runs ``maker`` (NVT) at linear
    strains of -``strain``, 0 and +``strain``, fits a P-V equation of state, adds volumes while
    the zero-pressure volume lies outside those tried, and returns the structure scaled to it.
    """
    if method == "npt":
        job = maker.make(structure)
        return [job], job.output.structure
    from atomate2.common.flows.mpmorph import EquilibriumVolumeMaker

    eos = EquilibriumVolumeMaker(md_maker=maker, name=f"{name} density", initial_strain=float(strain))
    job = eos.make(structure)
    return [job], job.output["structure"]


def add_quench_jobs(
    stage: Any,
    settings: dict[str, Any],
    engine: str,
    structure: Any,
    name: str,
    add: Callable[..., None],
    ordering: int,
    relax_maker: Callable[[], Any] | None = None,
) -> list[tuple[Any, str]]:
    """Add the melt-quench and analysis jobs of one structure; return (quenched structure, variant).

    Per (T_melt, replica): the optional density step (``density``: ``npt`` or ``mpmorph``, at
    T_melt), the engine's heat/hold/cool runs (``quench_jobs`` of :mod:`superionic.engines.mlip`,
    ``.vasp`` or ``.cp2k``; the replica number seeds the initial velocities), an optional
    relaxation (``relax_maker()``, the campaign engine's relax maker; MLIP without it), and the
    local-structure analysis against the starting crystal.
    """
    import importlib

    merged = {
        **settings,
        **{
            k: getattr(stage, k)
            for k in (
                "start_temperature_K",
                "heat_ps",
                "hold_ps",
                "quench_ps",
                "timestep_fs",
                "trajectory_interval",
                "density_ps",
                "quench_segments",
            )
        },
    }
    engine_module = importlib.import_module(f"superionic.engines.{engine}")
    crystal = analyze_local_structure(
        structure, "crystal", stage.center, list(stage.ligands), stage.cutoff_A, stage.shape, None
    )
    crystal.name = f"{name} structure (crystal)"
    add(crystal, "structure", ordering=ordering, variant="crystal")
    results = []
    for t_melt in stage.melt_temperatures_K:
        for k in range(stage.replicas):
            variant = f"quench {t_melt:g} K #{k}"
            tags = {"ordering": ordering, "variant": variant, "melt_temperature_K": t_melt}
            start = structure
            if stage.density != "none":
                label = f"{name} {variant}"
                maker = engine_module.density_maker({**merged, "seed": k}, t_melt, label, stage.density)
                dens, start = density_jobs(maker, structure, stage.density, label, stage.density_strain)
                for dj in dens:
                    add(dj, "quench", **tags)
                    # runs the EOS search creates later inherit the tags (and the replay's segment)
                    dj.update_metadata({**dj.metadata, "segment": "density"}, dynamic=True)
            segs, final = engine_module.quench_jobs(merged, t_melt, start, f"{name} {variant}", seed=k)
            for sj in segs:
                add(sj, "quench", **tags)
            if stage.relax_after:
                if relax_maker is None:
                    from superionic.engines.mlip import relax_maker as mlip_relax

                    rmaker = mlip_relax({**settings, "relax_cell": True})
                else:
                    rmaker = relax_maker()
                rmaker.name = f"{name} {variant} relax"
                rj = rmaker.make(final)
                add(rj, "quench", **tags)
                final = rj.output.structure
            ana = analyze_local_structure(
                final,
                variant,
                stage.center,
                list(stage.ligands),
                stage.cutoff_A,
                stage.shape,
                structure,
                t_melt,
                k,
            )
            ana.name = f"{name} structure ({variant})"
            add(ana, "structure", ordering=ordering, variant=variant)
            results.append((final, variant))
    return results
