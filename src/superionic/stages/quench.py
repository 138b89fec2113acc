"""Quench stage: melt-quench MD per (T_melt, replica), then local-structure analysis of each result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobflow import job
from pymatgen.core import Structure

from superionic.analysis.local_structure import local_structure_summary
from superionic.stages.common import engine_for, jobs_of, staged

if TYPE_CHECKING:
    from jobflow import Flow

    from superionic.spec.models import CampaignSpec, QuenchStage


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
    # only the snapshots are held (a binary trajectory is read a chunk at a time)
    frac, lattice, symbols = concatenate_chunks(chunks, skip_frames, every=max(1, int(every_frames)))
    data = TrajectoryArrays(frac_coords=frac, lattices=lattice, species=symbols)
    frames = [data.structure_at(k) for k in range(data.n_frames)]
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


def quench_flow(
    spec: CampaignSpec, stage: QuenchStage, structure: Any, name: str, /, **metadata: Any
) -> tuple[Flow, list[tuple[Any, str]]]:
    """Build the melt-quench and analysis jobs of one structure.

    Returns the flow and the (quenched structure, variant) pairs.

    Per (T_melt, replica): the optional density step (``density``: ``npt`` or ``mpmorph``, at
    T_melt), the engine's heat/hold/cool runs (the replica number seeds the initial velocities),
    an optional relaxation on the stage's engine (its ``relax`` preset section, cell free), and
    the local-structure analysis against the starting crystal. ``metadata`` (campaign, system,
    ordering) goes on every job; jobs of a quenched structure carry its ``variant``.
    """
    from jobflow import Flow

    engine, settings = engine_for(spec, stage)
    merged = {**settings, **{k: getattr(stage, k) for k in _QUENCH_FIELDS}}
    crystal = analyze_local_structure(
        structure, "crystal", stage.center, list(stage.ligands), stage.cutoff_A, stage.shape, None
    )
    crystal.name = f"{name} structure (crystal)"
    jobs: list[Any] = [staged(crystal, "structure", **metadata, variant="crystal")]
    results = []
    for t_melt in stage.melt_temperatures_K:
        for k in range(stage.replicas):
            variant = f"quench {t_melt:g} K #{k}"
            tags = {**metadata, "variant": variant, "melt_temperature_K": t_melt}
            label = f"{name} {variant}"
            start = structure
            if stage.density != "none":
                dens = engine.density(
                    structure, {**merged, "seed": k}, t_melt, label, stage.density, stage.density_strain
                )
                for dj in jobs_of(staged(dens, "quench", **tags)):
                    # runs the EOS search creates later inherit the tags (and the replay's segment)
                    dj.update_metadata({**dj.metadata, "segment": "density"}, dynamic=True)
                jobs.append(dens)
                start = dens.output
            quench = engine.quench(start, merged, t_melt, label, seed=k)
            jobs.append(staged(quench, "quench", **tags))
            final = quench.output
            if stage.relax_after:
                own = {"force_field": stage.force_field} if stage.force_field else {}
                _, relax_settings = engine_for(spec, stage, kind="relax", relax_cell=True, **own)
                relax = engine.relax(final, relax_settings, f"{label} relax")
                jobs.append(staged(relax, "quench", **tags))
                final = relax.output["structure"]
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
            jobs.append(staged(ana, "structure", **metadata, variant=variant))
            results.append((final, variant))
    return Flow(jobs, output=[r[0] for r in results], name=f"{name} quench"), results


#: quench stage fields that replace the preset's md settings of the same name
_QUENCH_FIELDS = (
    "start_temperature_K",
    "heat_ps",
    "hold_ps",
    "quench_ps",
    "timestep_fs",
    "trajectory_interval",
    "density_ps",
    "quench_segments",
)
