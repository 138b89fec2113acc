"""The ``finetune`` command: fine-tune CHGNet on DFT outputs into a model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from superionic.cli.common import _user_errors, console, quiet
from superionic.errors import SuperionicError


@_user_errors
def finetune(
    data: Annotated[
        list[str],
        typer.Argument(
            help="VASP outputs (vasprun.xml or OUTCAR, any name, .gz ok) or folders searched for them."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Model folder to write (force_field: <this folder>).")] = Path(
        "finetuned-chgnet"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 5,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per batch.")] = 8,
    every: Annotated[int, typer.Option(min=1, help="Keep every N-th frame of each run.")] = 1,
    test_fraction: Annotated[
        float,
        typer.Option(min=0.0, max=0.9, help="Share of frames held out for the test errors (whole runs)."),
    ] = 0.2,
    val_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of frames for validation (picks the best epoch).")
    ] = 0.1,
    test: Annotated[
        list[str] | None,
        typer.Option(help="A run (its folder, as found under DATA) to hold out for testing (repeatable)."),
    ] = None,
    test_set: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH: DFT runs of another structure (a hull phase) scored before and after, "
            "never trained on (outside DATA; --every applies); its energy error is given with its "
            "mean offset removed, the offset beside it (repeatable)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the training.")] = 0,
    freeze: Annotated[
        str, typer.Option(help="embeddings+early: CHGNet's fine-tuning recipe; none: train every weight.")
    ] = "embeddings+early",
    allow_mixed_elements: Annotated[
        bool, typer.Option(help="Train on cells with different element sets (e.g. the phases of a hull).")
    ] = False,
    allow_mixed_settings: Annotated[
        bool, typer.Option(help="Train on runs of different DFT settings (cut-off, precision, k-mesh).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads (default: SLURM/OMP_NUM_THREADS, else all cores).")
    ] = None,
) -> None:
    """Fine-tune pretrained CHGNet on DFT frames and write a model folder.

    Reads every ionic step (energy, forces, stress) of the runs under DATA, splits them by run
    into train / validation / test (never frames of one run in two splits), refits CHGNet's
    per-element reference energies to the DFT code's energy scale, fine-tunes with CHGNet's
    own trainer on the CPU, and writes OUT/model.pth.tar, OUT/superionic_model.json (weights
    SHA-256, data fingerprint, settings, the test errors before and after) and OUT/parity.png.
    A campaign uses the model with ``force_field: OUT`` in an MLIP stage.

    Stresses: VASP's kBar (compression positive) become CHGNet's GPa (tension positive), x -0.1.

    Examples::

        superionic finetune runs/ --out models/lps-ft --epochs 5
        superionic finetune md1/vasprun.xml md2/vasprun.xml relax/OUTCAR --every 5 --test md2
        superionic finetune runs/ --test-set Li2S=phases/Li2S --test-set LiBH4=phases/LiBH4
    """
    quiet()
    from superionic.dispatch.threads import apply_threads, plan_threads
    from superionic.engines.finetune import (
        FinetuneSettings,
        add_to_metadata,
        check_output_folder,
        describe_test_set,
        finetune_chgnet,
        read_frames,
        score_test_sets,
    )

    if freeze not in ("embeddings+early", "none"):
        raise SuperionicError.single("--freeze", "unknown choice", freeze, "embeddings+early or none")
    check_output_folder(out)  # before reading anything: never replace a folder of data
    plan = plan_threads(threads, source="--threads")
    apply_threads(plan.threads_per_job)
    console.print(f"threads: {plan.threads_per_job} ({plan.source})")
    frames = read_frames(data, every=every)
    runs = sorted({f.group for f in frames})
    test_groups = None
    if test:
        test_groups = [g for g in runs if any(Path(g) == Path(t) or Path(g).parent == Path(t) for t in test)]
        if not test_groups:
            raise SuperionicError.single(
                "--test", "names no run under DATA", ", ".join(test), ", ".join(runs)
            )
    console.print(f"{len(frames)} frames from {len(runs)} runs ({frames[0].engine if frames else '-'})")
    test_sets = _test_sets(test_set or [], every, frames)
    settings = FinetuneSettings(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        every=every,
        seed=seed,
        freeze=freeze,
    )
    result = finetune_chgnet(
        frames,
        out,
        settings,
        test_groups,
        allow_mixed_elements,
        log=lambda line: console.print(line),
        allow_mixed_settings=allow_mixed_settings,
    )
    b, a = result.before, result.after
    console.print("splits (frames): " + ", ".join(f"{k} {v['frames']}" for k, v in result.splits.items()))
    console.print(
        f"force MAE on test frames: {b['force_meV_per_A']:.0f} -> {a['force_meV_per_A']:.0f} meV/A; "
        f"energy {b['energy_meV_per_atom']:.1f} -> {a['energy_meV_per_atom']:.1f} meV/atom"
    )
    if not result.improved:
        console.print(
            "[yellow]the fine-tuned model is not better than pretrained CHGNet on the test frames "
            "(force MAE): think twice before pointing force_field at it[/yellow]"
        )
    if test_sets:
        scored = score_test_sets(out, test_sets, batch_size)
        for name, errors in scored.items():
            console.print(describe_test_set(name, errors), highlight=False, markup=False)
        add_to_metadata(out, {"test_sets": scored})
    console.print(
        f"model: {result.folder} (weights sha256 {result.weights_sha256[:12]}); parity plot: parity.png"
    )


def _test_sets(values: list[str], every: int, training: list) -> dict[str, list]:
    """``NAME=PATH`` options -> name -> frames (one error naming ``--test-set`` when one is wrong).

    Refused: not NAME=PATH, a name given twice, a path without DFT runs, runs that are also
    training data (under DATA), runs of another DFT engine than DATA's.
    """
    from superionic.engines.finetune import read_frames

    sources = {Path(f.source).resolve() for f in training}
    engine = training[0].engine if training else None
    out: dict[str, list] = {}
    for value in values:

        def bad(why: str, valid: str, value: str = value) -> SuperionicError:
            return SuperionicError.single("--test-set", why, value, valid)

        name, sep, path = value.partition("=")
        if not sep or not name or not path or name in out:
            why = "names a test set twice" if name in out else "is not NAME=PATH"
            raise bad(why, "NAME=PATH, one per name (e.g. Li2S=phases/Li2S)")
        try:
            frames = read_frames([path], every=every)
        except SuperionicError as exc:
            raise bad(exc.problems[0].message, exc.problems[0].valid) from None
        if not frames:
            raise bad("holds no frames", "a VASP or CP2K run with forces")
        if {Path(f.source).resolve() for f in frames} & sources:
            raise bad("its runs are also training data (under DATA)", "runs outside DATA")
        other = sorted({f.engine for f in frames} - {engine})
        if engine is not None and other:
            raise bad(f"holds {', '.join(other)} runs, DATA is {engine}", f"{engine} runs")
        out[name] = frames
    return out
