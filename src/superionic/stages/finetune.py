"""Finetune stage: DFT single points on perturbed copies of the relaxed orderings -> fine-tuned CHGNet.

Per system: each relaxed ordering is copied (itself, ``n_rattled`` rattled copies, and two
isotropic strains of ``strain_range``), each copy is a single point on the DFT engine (energy,
forces, stress), and one job fine-tunes CHGNet on them (:mod:`superionic.engines.finetune`) and
stores the model in the campaign's store (``models/``, or a GridFS bucket ``<campaign>.models``).

MLIP stages with ``force_field: finetuned`` take the training job's output as their model: their
jobs are built around it (:func:`superionic.engines.mlip.with_model`), so their identity follows
the training job's, which hashes the DFT data's jobs and the training settings. A re-run with
unchanged data and settings re-trains nothing; changed data re-trains and re-runs what used it.
When the fine-tuned model is not better on the held-out single points (force MAE), the stage says
so and those stages use pretrained CHGNet unless ``use_if_worse``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import job
from pymatgen.core import Structure

from superionic.stages.common import engine_for, staged

if TYPE_CHECKING:
    from jobflow import Flow

    from superionic.spec.models import CampaignSpec, FinetuneStage


def copies_per_structure(stage: FinetuneStage) -> int:
    """Return how many single points each relaxed ordering gives (itself, rattles, two strains)."""
    return 1 + stage.n_rattled + (2 if stage.strain_range > 0 else 0)


@job
def perturbed_copies(
    structure: Structure, n_rattled: int, rattle_A: float, strain_range: float, seed: int
) -> list[Structure]:
    """Return the structure, its rattled copies, and two isotropic strains, in that order.

    ``n_rattled`` copies with Gaussian displacements (``rattle_A`` per component); the strained
    cells (-/+ ``strain_range``) are rattled by half as much.
    """
    rng = np.random.default_rng(seed)

    def rattled(s: Structure, sigma: float) -> Structure:
        shift = rng.normal(0.0, sigma, (len(s), 3))
        cart = s.cart_coords + shift
        props = s.site_properties
        return Structure(s.lattice, s.species, cart, coords_are_cartesian=True, site_properties=props)

    out = [structure.copy()]
    for _ in range(n_rattled):
        out.append(rattled(structure, rattle_A))
    if strain_range > 0:
        for eps in (-strain_range, strain_range):
            s = structure.copy()
            s.apply_strain(eps)
            out.append(rattled(s, rattle_A / 2))
    return out


def finetune_flow(
    spec: CampaignSpec,
    stage: FinetuneStage,
    relaxed: dict[str, Any],
    system: str,
    /,
    phases: dict[str, Any] | None = None,
    **metadata: Any,
) -> Flow:
    """Single points on perturbed copies of every relaxed ordering of ``system``, then the training.

    Parameters
    ----------
    spec : CampaignSpec
        The campaign (the relax stage's engine runs the single points unless the stage names one).
    stage : FinetuneStage
        The stage.
    relaxed : dict
        Label -> the relax stage's output (``structure``) of each ordering.
    system : str
        The system's name (job names).
    phases : dict, optional
        Hull phase name -> its relax output (the hull stage's competing phases of this system):
        their relaxations' frames are the model's per-phase test sets, never trained on.
    **metadata
        Tags for every job.

    Returns
    -------
    Flow
        Output: the training job's output (:func:`train_finetuned`).
    """
    from jobflow import Flow

    from superionic.spec.models import RelaxStage

    relax = next((s for s in spec.stages if isinstance(s, RelaxStage)), None)
    engine_stage = stage if stage.engine or relax is None else relax
    engine, settings = engine_for(spec, engine_stage, kind="static")
    jobs: list[Any] = []
    dirs, orderings, relax_dirs = [], [], []
    for i, (label, output) in enumerate(relaxed.items()):
        relax_dirs.append(_run_dir(output["structure"]))
        copies = perturbed_copies(
            output["structure"], stage.n_rattled, stage.rattle_A, stage.strain_range, stage.seed * 1000 + i
        )
        copies.name = f"{label} finetune copies"
        jobs.append(staged(copies, "finetune", **metadata, ordering=i))
        for k in range(copies_per_structure(stage)):
            point = engine.static(copies.output[k], settings, f"{label} single point {k}")
            jobs.append(staged(point, "finetune_dft", **metadata, ordering=i))
            dirs.append(point.output.dir_name)
            orderings.append(i)
    train = train_finetuned(
        dirs,
        {
            "epochs": stage.epochs,
            "learning_rate": stage.learning_rate,
            "batch_size": stage.batch_size,
            "test_fraction": stage.test_fraction,
            "val_fraction": stage.val_fraction,
            "seed": stage.seed,
        },
        stage.use_if_worse,
        orderings,
        relax_dirs,
    )
    train.name = f"{system} finetune"
    jobs.append(staged(train, "finetune", **metadata))
    if phases:
        # a job of its own: the model and what uses it never wait for (or fail with) a phase's
        # relaxation, and it runs with whatever phases did relax
        from jobflow import OnMissing

        score = score_phases(train.output, {n: _run_dir(o["structure"]) for n, o in sorted(phases.items())})
        score.name = f"{system} finetune phases"
        score.config.on_missing_references = OnMissing.NONE
        jobs.append(staged(score, "finetune", **metadata))
    return Flow(jobs, output=train.output, name=f"{system} finetune")


def _run_dir(structure: Any) -> Any:
    """Return a reference to the run folder (``dir_name``) of the job that made ``structure``."""
    from jobflow import OutputReference

    if not isinstance(structure, OutputReference):
        return None
    return OutputReference(structure.uuid, attributes=(("a", "dir_name"),))


@job
def train_finetuned(
    run_dirs: list[str],
    settings: dict[str, Any],
    use_if_worse: bool = False,
    orderings: list[int] | None = None,
    relax_dirs: list[str | None] | None = None,
) -> dict[str, Any]:
    """Fine-tune CHGNet on the single points in ``run_dirs``; store the model; report the errors.

    Returns
    -------
    dict
        ``use`` (``finetuned`` or ``pretrained``), ``weights_sha256``, ``model`` (where the
        store keeps it), ``before`` / ``after`` (test MAEs: energy meV/atom, force meV/A, stress
        GPa), ``improved``, ``splits`` (frames per split), ``split_by`` (``ordering`` with three
        or more orderings, else ``single point``), ``seconds``, ``data_sha256``. The run folders
        are read where the job runs: the single points' folders must be on a shared filesystem.
    """
    from atomate2.utils.path import strip_hostname
    from jobflow import CURRENT_JOB

    from superionic.engines.finetune import FinetuneSettings, finetune_chgnet, read_frames, store_model

    dirs = [strip_hostname(str(d)) for d in run_dirs]
    frames = read_frames(dirs)
    relaxation = _relax_frames(relax_dirs or [], frames)
    # The split is by ordering when there are three or more (the rattled and strained copies of one
    # ordering never straddle train and test); with fewer, by single point, and the test errors
    # are then for new displacements of structures the model was trained on (said in the output).
    # A relaxation's frames only train: with their ordering's (left out if it is held out), or
    # (split by single point) as a run of their own.
    split_by = "single point"
    if orderings is not None and len(set(orderings)) >= 3:
        of_dir = {str(Path(d)): o for d, o in zip(dirs, orderings, strict=True)}
        for frame in frames:
            frame.group = f"ordering {of_dir.get(str(Path(frame.group)), frame.group)}"
        for frame, i in relaxation:
            frame.group = f"ordering {i}"
        split_by = "ordering"
    frames += [f for f, _ in relaxation]
    folder = Path.cwd() / "model"
    result = finetune_chgnet(frames, folder, FinetuneSettings(**settings), log=print)
    meta = json.loads((folder / "superionic_model.json").read_text())
    use = "finetuned" if result.improved or use_if_worse else "pretrained"
    if use == "pretrained":
        print(
            "the fine-tuned model is not better than pretrained CHGNet on the held-out single points "
            f"(force MAE {result.before['force_meV_per_A']:.0f} -> {result.after['force_meV_per_A']:.0f} "
            "meV/A): the campaign continues with pretrained CHGNet (use_if_worse: true to use it anyway)"
        )
    store = CURRENT_JOB.store if CURRENT_JOB.job is not None else None
    model = store_model(folder, store) if store is not None else {"folder": str(folder)}
    return {
        "use": use,
        "weights_sha256": result.weights_sha256,
        "model": model,
        "before": result.before,
        "after": result.after,
        "improved": result.improved,
        "splits": {k: v["frames"] for k, v in result.splits.items()},
        "split_by": split_by,
        "relaxation_frames": len(relaxation),
        "seconds": result.seconds,
        "data_sha256": result.data_sha256,
        "engine": result.engine,
        "base_model": result.base_model,
        "meta": meta,
    }


@job
def score_phases(model: dict[str, Any] | None, phase_dirs: dict[str, str | None]) -> dict[str, Any]:
    """Score the fine-tuned model, and pretrained CHGNet with the same reference refit, on each phase.

    Parameters
    ----------
    model : dict or None
        The training job's output (:func:`train_finetuned`); ``None`` when it failed.
    phase_dirs : dict
        Hull phase name -> its DFT relaxation's run folder (``None`` when it failed).

    Returns
    -------
    dict
        ``scored_model`` (the weights' SHA-256), ``training_dft_settings`` and ``phases``: name
        -> ``frames``, ``dft_settings``, ``before``, ``after``
        (:func:`superionic.engines.finetune.score_test_sets`). Phases that printed no frames or
        ran on another engine are left out (``not_scored``: name -> why).

    Raises
    ------
    RuntimeError
        No model (the training did not finish), or a phase relaxation that did not finish: no
        output is stored, so the job runs again with the rest of the campaign.
    """
    from jobflow import CURRENT_JOB

    from superionic.engines.finetune import (
        describe_test_set,
        model_folder,
        read_model_folder,
        score_test_sets,
    )

    if not isinstance(model, dict) or "model" not in model:
        # no output stored: the job runs again (and scores) once the training has finished
        raise RuntimeError("no fine-tuned model (its training did not finish): the phases are not scored")
    store = CURRENT_JOB.store if CURRENT_JOB.job is not None else None
    folder = model_folder(model["model"], store)
    meta = read_model_folder(folder)
    not_scored: dict[str, str] = {}
    scored = score_test_sets(folder, _phase_frames(phase_dirs, meta["engine"], not_scored))
    for name, result in scored.items():
        print(describe_test_set(f"phase {name}", result))
        if result["dft_settings"] != meta.get("dft_settings"):
            print(f"  its DFT settings: {result['dft_settings']}; the training's: {meta.get('dft_settings')}")
    unfinished = [n for n, why in not_scored.items() if why == UNFINISHED]
    if unfinished:
        # the hull waits for these too: fail, so that this job scores every phase once they relaxed
        names = ", ".join(unfinished)
        raise RuntimeError(f"phase relaxations did not finish: {names} (scored: {len(scored)})")
    settings = meta.get("dft_settings")
    return {
        "scored_model": model["weights_sha256"],
        "training_dft_settings": settings,
        "phases": scored,
        "not_scored": not_scored,
    }


UNFINISHED = "its relaxation did not finish"


def _phase_frames(
    phase_dirs: dict[str, str | None], engine: str, not_scored: dict[str, str] | None = None
) -> dict[str, list]:
    """Return hull phase name -> its DFT relaxation's frames (all of them: none is trained on).

    A phase whose relaxation failed (no folder), printed no frames, or ran on another engine is
    left out; the output says why and so does ``not_scored`` (name -> why). Its k-mesh is its
    own cell's, and a relax preset may differ from the single points' static one: the frames are
    scored, never trained on, and their DFT settings are reported beside the training's
    (``phase_dft_settings`` in finetune.csv).
    """
    from atomate2.utils.path import strip_hostname

    out = {}
    skipped = {} if not_scored is None else not_scored
    for name, d in phase_dirs.items():
        run, why = [], UNFINISHED
        if d is not None:
            run, error = _read_run(strip_hostname(str(d)))
            if error is not None or not run:
                why = f"no frames ({error or 'none printed'})"
            elif {f.engine for f in run} != {engine}:
                why = f"relaxed on {run[0].engine}, the training set is {engine}"
            else:
                why = None
        if why is not None:
            print(f"phase {name}: {why}; not scored")
            skipped[name] = why
            continue
        out[name] = run
    return out


def _read_run(folder: str) -> tuple[list, str | None]:
    """Read one run folder's frames: ``(frames, None)``, or ``([], why)`` in one line."""
    from superionic.engines.finetune import read_frames
    from superionic.errors import SuperionicError

    try:
        return read_frames([folder]), None
    except (SuperionicError, OSError, ValueError) as exc:
        return [], exc.problems[0].message if isinstance(exc, SuperionicError) else str(exc)


def _relax_frames(relax_dirs: list[str | None], points: list) -> list[tuple[Any, int]]:
    """Return the DFT relaxations' own frames as ``(frame, ordering)`` where they match the single points.

    A relaxation's trajectory (CP2K ``-pos/-frc-1.xyz``, VASP's ionic steps) is DFT data the
    campaign already paid for: training data only (``train_only``). It is used when it was run
    with the single points' engine and settings (one energy scale: a coarser relax preset would
    sit beside them as noise) and, when the single points have stresses, has them on every frame
    (CHGNet trains stress on all frames or none). Its last frame
    is left out: the first single point is the same structure. Otherwise, or when it printed no
    forces, it is left out and the output says why.
    """
    from atomate2.utils.path import strip_hostname

    out: list[tuple[Any, int]] = []
    if not points:
        return out
    reference = (points[0].engine, points[0].settings)
    need_stress = all(p.stress_GPa is not None for p in points)
    for i, d in enumerate(relax_dirs):
        if d is None:
            continue
        run, why = _read_run(strip_hostname(str(d)))
        if why is not None:
            print(f"relaxation of ordering {i}: no frames ({why}); left out")
            continue
        run = run[:-1]
        kept = [f for f in run if (f.engine, f.settings) == reference]
        if len(kept) < len(run):
            print(
                f"relaxation of ordering {i}: {len(run) - len(kept)} of {len(run)} frames run with "
                "other DFT settings than the single points; left out"
            )
        if need_stress and any(f.stress_GPa is None for f in kept):
            print(
                f"relaxation of ordering {i}: frames without a stress (the single points have one); left out"
            )
            kept = []
        for f in kept:
            f.train_only = True
        out += [(f, i) for f in kept]
    if out:
        print(f"relaxation frames (training only): {len(out)}")
    return out
