"""Fine-tune CHGNet on a campaign's own DFT frames, and the model folders it writes.

Why this module: atomate2 has no fine-tuning step (only VASP's on-the-fly force field) and
CHGNet's trainer starts from a dataset, not from DFT outputs. Here DFT frames (structure,
energy, forces, stress) are read from VASP (vasprun.xml, OUTCAR) or CP2K outputs, split by run
(never frames of one trajectory in two splits), CHGNet's per-element reference energies are refit
to the DFT code's energy scale, CHGNet's own :class:`chgnet.trainer.Trainer` fine-tunes the
upper layers (its fine-tuning recipe: embeddings and the first interaction blocks frozen), and
the model is written to a folder with its weights' SHA-256, the data and settings that made it
and the test-set errors before and after. ``force_field: <folder>`` then uses it.

Units (CHGNet's): energy eV/atom, forces eV/A, stress GPa with the sign of ASE's stress
(tension positive), i.e. -0.1 x VASP's kBar (VASP prints pressure-like, compression positive).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Element, Structure

from superionic.errors import SuperionicError

#: files of a model folder
MODEL_FILE = "model.pth.tar"
META_FILE = "superionic_model.json"
MODEL_FORMAT = 1
#: VASP's stress (kBar, compression positive) -> CHGNet's (GPa, tension positive)
VASP_KBAR_TO_CHGNET_GPA = -0.1


@dataclass
class DFTFrame:
    """One DFT calculation of a structure: what a force field is trained on.

    Attributes
    ----------
    structure : Structure
        The cell and positions.
    energy_eV : float
        Total (free) energy of the cell, consistent with the forces.
    forces_eV_per_A : ndarray, shape (n_atoms, 3)
        Forces.
    stress_GPa : ndarray, shape (3, 3) or None
        Stress in CHGNet's convention (tension positive).
    engine : str
        ``vasp`` or ``cp2k`` (one training set holds one engine's energies).
    source : str
        The file it was read from.
    group : str
        The run it belongs to: frames of one group always land in the same split.
    settings : str
        The DFT settings that set the energy scale (VASP: ENCUT, PREC, functional, k-mesh):
        frames of different settings are not trained together.
    train_only : bool
        Training data only (a relaxation's frames): never scored in validation or test.
    """

    structure: Structure
    energy_eV: float
    forces_eV_per_A: np.ndarray
    stress_GPa: np.ndarray | None
    engine: str
    source: str
    group: str
    settings: str = ""
    #: training data only (a relaxation's frames): never scored in validation or test
    train_only: bool = False

    @property
    def elements(self) -> frozenset[str]:
        """Return the elements of the cell."""
        return frozenset(el.symbol for el in self.structure.composition.elements)


def vasp_kbar(stress_GPa: np.ndarray) -> np.ndarray:
    """Return a CHGNet-convention stress (GPa, tension positive) in VASP's kBar.

    CHGNet's ``StructureData`` expects training stresses in VASP's kBar and converts them with
    x -0.1 itself.
    """
    return np.asarray(stress_GPa) / VASP_KBAR_TO_CHGNET_GPA


# -- reading DFT outputs -------------------------------------------------------------------------
def _is_vasprun(path: Path) -> bool:
    return "vasprun" in path.name.lower() or _head(path).lstrip().startswith("<?xml")


def _head(path: Path, n: int = 4000) -> str:
    from monty.io import zopen

    try:
        with zopen(path, "rt", errors="replace") as fh:
            return fh.read(n)
    except (OSError, EOFError):
        return ""


def _kind(path: Path) -> str | None:
    """``vasprun``, ``outcar``, ``cp2k`` or None for a file that is none of them."""
    if _is_vasprun(path):
        return "vasprun"
    head = _head(path)
    if "OUTCAR" in path.name.upper() or head.lstrip().startswith(" vasp."):
        return "outcar"
    if "CP2K|" in head or ("PROGRAM STARTED AT" in head and "CP2K" in head):
        return "cp2k"
    return None


def find_outputs(paths: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Return the DFT output files under ``paths`` (files, or folders searched recursively).

    In a folder, a run's vasprun.xml is read and its OUTCAR left out (the same frames).

    Raises
    ------
    SuperionicError
        A path that does not exist, or holds no VASP/CP2K output.
    """
    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise SuperionicError.single("DATA", "no such file or folder", str(raw), "VASP or CP2K outputs")
        if path.is_file():
            kind = _kind(path)
            if kind is None:
                raise SuperionicError.single(
                    "DATA",
                    "not a VASP or CP2K output",
                    str(path),
                    "vasprun.xml or OUTCAR (any name, .gz ok), or a CP2K output log",
                )
            found.append((path, kind))
            continue
        in_folder: dict[Path, list[tuple[Path, str]]] = {}
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            name = file.name.lower()
            if not ("vasprun" in name or "outcar" in name or name.endswith((".out", ".out.gz", ".log"))):
                continue
            kind = _kind(file)
            if kind is not None:
                in_folder.setdefault(file.parent, []).append((file, kind))
        for files in in_folder.values():
            vaspruns = [f for f in files if f[1] == "vasprun"]
            found.extend(vaspruns or files)
        if not in_folder:
            raise SuperionicError.single(
                "DATA",
                "holds no VASP or CP2K output",
                str(path),
                "a folder with vasprun.xml/OUTCAR or CP2K logs",
            )
    return found


def read_frames(paths: Iterable[str | Path], every: int = 1) -> list[DFTFrame]:
    """Read every DFT frame (every ``every``-th of each run) from VASP or CP2K outputs.

    Parameters
    ----------
    paths : iterable of path
        Files or folders (searched recursively); see :func:`find_outputs`.
    every : int
        Keep every N-th frame of each run (consecutive MD frames are nearly the same).

    Returns
    -------
    list of DFTFrame

    Raises
    ------
    SuperionicError
        Frames without forces or energies, unreadable files.
    """
    frames: list[DFTFrame] = []
    for path, kind in find_outputs(paths):
        reader = {"vasprun": _vasprun_frames, "outcar": _outcar_frames, "cp2k": _cp2k_frames}[kind]
        run = reader(path)
        frames.extend(run[::every] if every > 1 else run)
    return frames


def _no_forces(path: Path) -> SuperionicError:
    return SuperionicError.single(
        str(path),
        "frames without forces",
        "no forces",
        "outputs of runs that print forces (VASP: any ionic run; CP2K: PRINT FORCES ON)",
    )


def vasp_settings_key(encut: Any, prec: Any, gga: Any, n_kpoints: int | None) -> str:
    """Return what sets a VASP run's energy scale, the same from vasprun.xml and OUTCAR.

    Plane-wave cut-off (eV), precision, functional tag and whether the run is Gamma-only: runs
    that differ in these sit on different energy scales (the k-mesh density of a sampled run is
    left out: rattled and strained cells of one setting get slightly different meshes).
    """
    cut = "?" if encut is None else f"{float(encut):.0f}"
    k = "?" if n_kpoints is None else ("Gamma" if int(n_kpoints) == 1 else "k-mesh")
    return f"ENCUT {cut} eV, PREC {str(prec or '?').strip().lower()[:4]}, GGA {gga or '?'}, {k}"


def _vasprun_frames(path: Path) -> list[DFTFrame]:
    from pymatgen.io.vasp.outputs import Vasprun

    try:
        run = Vasprun(
            str(path), parse_dos=False, parse_eigen=False, parse_potcar_file=False, exception_on_bad_xml=False
        )
    except Exception as exc:  # pymatgen raises several kinds on a broken file
        raise SuperionicError.single(
            str(path), "unreadable vasprun.xml", type(exc).__name__, "a VASP vasprun.xml"
        ) from None
    p = run.parameters
    nk = len(run.actual_kpoints)
    key = vasp_settings_key(p.get("ENMAX", p.get("ENCUT")), p.get("PREC"), p.get("GGA"), nk)
    frames = []
    for step in run.ionic_steps:
        if step.get("forces") is None:
            raise _no_forces(path)
        energy = step.get("e_fr_energy", step.get("e_0_energy"))
        if energy is None:
            raise SuperionicError.single(
                str(path), "an ionic step without an energy", "", "a complete vasprun.xml"
            )
        stress = step.get("stress")
        frames.append(
            DFTFrame(
                step["structure"],
                float(energy),
                np.asarray(step["forces"], float),
                None if stress is None else VASP_KBAR_TO_CHGNET_GPA * np.asarray(stress, float),
                "vasp",
                str(path),
                str(path.parent),
                key,
            )
        )
    return frames


def _ase_frames(path: Path, fmt: str, engine: str) -> list[DFTFrame]:
    """Frames ASE reads (energy force-consistent, forces, stress in eV/A^3 -> GPa)."""
    from ase import units
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        images = read(str(path), index=":", format=fmt)
    except Exception as exc:  # ASE raises several kinds on a broken file
        raise SuperionicError.single(
            str(path), f"unreadable {engine} output", type(exc).__name__, ""
        ) from None
    frames = []
    for atoms in images if isinstance(images, list) else [images]:
        calc = atoms.calc
        if calc is None or calc.results.get("forces") is None:
            raise _no_forces(path)
        stress = calc.results.get("stress")
        if stress is not None:
            from ase.stress import voigt_6_to_full_3x3_stress

            stress = np.asarray(stress)
            stress = (voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress) / units.GPa
        energy = calc.results.get("free_energy", calc.results.get("energy"))
        frames.append(
            DFTFrame(
                AseAtomsAdaptor.get_structure(atoms),
                float(energy),
                np.asarray(calc.results["forces"], float),
                stress,
                engine,
                str(path),
                str(path.parent),
            )
        )
    return frames


def _outcar_frames(path: Path) -> list[DFTFrame]:
    import re

    frames = _ase_frames(path, "vasp-out", "vasp")
    head = _head(path, 400_000)

    def first(pattern: str) -> str | None:
        m = re.search(pattern, head, flags=re.M)
        return m.group(1) if m else None

    nk = first(r"NKPTS\s*=\s*(\d+)")
    key = vasp_settings_key(
        first(r"^\s*ENCUT\s*=\s*([\d.]+)\s*eV"),
        first(r"^\s*PREC\s*=\s*(\w+)"),
        first(r"^\s*GGA\s*=\s*(\S+)"),
        int(nk) if nk else None,
    )
    for frame in frames:
        frame.settings = key
    return frames


def _cp2k_frames(path: Path) -> list[DFTFrame]:
    from superionic.engines.cp2k_frames import cp2k_output_frames

    try:
        return cp2k_output_frames(path)
    except (ValueError, IndexError, StopIteration) as exc:  # a log or trajectory cut off mid-write
        why = str(exc)[:80]
        raise SuperionicError.single(str(path), "unreadable CP2K output", why, "a complete run") from None


# -- checks and splits ---------------------------------------------------------------------------
def check_frames(
    frames: Sequence[DFTFrame], allow_mixed_elements: bool = False, allow_mixed_settings: bool = False
) -> None:
    """Refuse a training set that mixes engines (or, unless allowed, element sets or DFT settings).

    Raises
    ------
    SuperionicError
        Mixed engines (their total energies sit on different scales: CP2K GTH about -100 eV/atom,
        VASP PAW about -5), mixed settings (cut-off, precision, k-mesh: another energy scale
        within one engine), mixed element sets, no frames.
    """
    if not frames:
        raise SuperionicError.single("DATA", "no DFT frames found", "", "VASP or CP2K outputs with forces")
    engines: dict[str, str] = {}
    elements: dict[frozenset[str], str] = {}
    settings: dict[str, str] = {}
    for frame in frames:
        engines.setdefault(frame.engine, frame.source)
        elements.setdefault(frame.elements, frame.source)
        settings.setdefault(frame.settings, frame.source)
    label = {frozenset: lambda k: "-".join(sorted(k)), str: str}
    for seen, allowed, what, valid in (
        (engines, False, "mixes DFT engines (energies on different scales)", "frames of one engine"),
        (
            elements,
            allow_mixed_elements,
            "mixes cells with different species sets",
            "cells of one chemical system, or --allow-mixed-elements (e.g. the phases of a hull)",
        ),
        (
            settings,
            allow_mixed_settings,
            "mixes DFT settings that shift the energy scale",
            "runs of one set of settings (or --allow-mixed-settings to train on forces and stresses "
            "across them)",
        ),
    ):
        if len(seen) > 1 and not allowed:
            (a, s1), (b, s2) = list(seen.items())[:2]
            name = label[type(a)]
            raise SuperionicError.single("DATA", what, f"{name(a)} ({s1}) and {name(b)} ({s2})", valid)


def split_by_group(
    frames: Sequence[DFTFrame],
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_groups: Sequence[str] | None = None,
) -> dict[str, list[DFTFrame]]:
    """Split frames into ``train``, ``val`` and ``test`` by run, never one run in two splits.

    Runs are shuffled with ``seed``; runs go to the test split until it holds ``test_fraction``
    of the frames, then to validation until ``val_fraction``; the rest train. ``test_groups``
    names the test runs instead. Frames marked ``train_only`` (relaxation trajectories: many
    correlated frames near one minimum) train with their run and are left out of validation and
    test, and out of the fractions: the held-out errors stay those of independent calculations.
    A run of such frames alone always trains.

    Raises
    ------
    SuperionicError
        Fewer than three runs, or a split left empty.
    """
    groups: dict[str, list[DFTFrame]] = {}
    for frame in frames:
        groups.setdefault(frame.group, []).append(frame)
    always = {g for g, part in groups.items() if all(f.train_only for f in part)}
    names = sorted(g for g in groups if g not in always)
    if len(names) < 3:
        raise SuperionicError.single(
            "DATA",
            "too few runs for a train / validation / test split by run",
            f"{len(names)} run(s), {len(frames)} frames",
            "at least 3 runs (frames of one run never go to two splits)",
        )
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    split: dict[str, list[DFTFrame]] = {"train": [], "val": [], "test": []}
    for g in sorted(always):
        split["train"].extend(groups[g])
    total = sum(1 for g in names for f in groups[g] if not f.train_only)

    def held_out(g: str) -> list[DFTFrame]:
        return [f for f in groups[g] if not f.train_only]

    if test_groups:
        chosen = [g for g in order if g in set(test_groups)]
        for g in chosen:
            split["test"].extend(held_out(g))
        order = [g for g in order if g not in set(chosen)]
    for g in order:
        if not test_groups and len(split["test"]) < test_fraction * total:
            split["test"].extend(held_out(g))
        elif len(split["val"]) < val_fraction * total:
            split["val"].extend(held_out(g))
        else:
            split["train"].extend(groups[g])
    for key, part in split.items():
        if not part:
            raise SuperionicError.single(
                "DATA",
                f"the {key} split is empty",
                f"{len(names)} runs, {total} frames",
                "more runs, or other --test-fraction / --val-fraction",
            )
    return split


# -- metrics -------------------------------------------------------------------------------------
@dataclass
class Errors:
    """Mean absolute errors of a model on frames (energy after the reference refit)."""

    energy_meV_per_atom: float
    force_meV_per_A: float
    stress_GPa: float | None
    n_frames: int


def predict(model: Any, frames: Sequence[DFTFrame], batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    """Return CHGNet's predictions (``e`` eV/atom, ``f`` eV/A, ``s`` GPa) for ``frames``."""
    out = model.predict_structure([f.structure for f in frames], task="efs", batch_size=batch_size)
    return out if isinstance(out, list) else [out]


def errors(frames: Sequence[DFTFrame], predictions: Sequence[dict[str, Any]]) -> Errors:
    """Return the MAEs of ``predictions`` against the DFT ``frames``."""
    de, df, ds = [], [], []
    for frame, p in zip(frames, predictions, strict=True):
        n = len(frame.structure)
        de.append(abs(float(p["e"]) - frame.energy_eV / n))
        df.append(np.abs(np.asarray(p["f"]) - frame.forces_eV_per_A).ravel())
        if frame.stress_GPa is not None:
            ds.append(np.abs(np.asarray(p["s"]) - frame.stress_GPa).ravel())
    return Errors(
        1000 * float(np.mean(de)),
        1000 * float(np.mean(np.concatenate(df))),
        float(np.mean(np.concatenate(ds))) if ds else None,
        len(frames),
    )


def scored_elsewhere(frames: Sequence[DFTFrame], predictions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Return a model's errors on frames of another structure (a hull phase), its energy offset apart.

    When the training frames share one composition, the refit per-element references fix only
    their weighted sum, so a model's absolute energy for another composition is set by how the
    refit splits that sum among the elements. Here the energy error is the MAE after removing
    the mean signed error (the model's energy differences within the structure), and the mean
    signed error is returned beside it.

    Parameters
    ----------
    frames : sequence of DFTFrame
        The DFT frames (one structure's run, say a relaxation).
    predictions : sequence of dict
        The model's predictions for them (:func:`predict`).

    Returns
    -------
    dict
        ``force_meV_per_A``, ``stress_GPa`` (``None`` without DFT stresses), ``n_frames``,
        ``energy_meV_per_atom`` (offset removed; ``None`` for a single frame, where nothing is
        left to compare), ``energy_offset_meV_per_atom`` (mean signed error, model minus DFT) and
        ``energy_abs_meV_per_atom`` (the MAE as it is).
    """
    plain = errors(frames, predictions)
    signed = np.array(
        [float(p["e"]) - f.energy_eV / len(f.structure) for f, p in zip(frames, predictions, strict=True)]
    )
    spread = 1000 * float(np.mean(np.abs(signed - signed.mean()))) if len(signed) > 1 else None
    return {
        **asdict(plain),
        "energy_meV_per_atom": spread,
        "energy_offset_meV_per_atom": 1000 * float(signed.mean()),
        "energy_abs_meV_per_atom": plain.energy_meV_per_atom,
    }


def describe_test_set(name: str, scored: dict[str, Any]) -> str:
    """Return one line on a test set's errors before and after (:func:`score_test_sets`)."""
    b, a = scored["before"] or {}, scored["after"]

    def number(e: dict[str, Any], key: str, fmt: str) -> str:
        value = e.get(key)
        return "n/a" if value is None else format(value, fmt)

    return (
        f"test set {name} ({scored['frames']} frames, never trained on): force "
        f"{number(b, 'force_meV_per_A', '.0f')} -> {number(a, 'force_meV_per_A', '.0f')} meV/A; energy "
        f"with its offset removed {number(b, 'energy_meV_per_atom', '.1f')} -> "
        f"{number(a, 'energy_meV_per_atom', '.1f')} meV/atom (offset "
        f"{number(b, 'energy_offset_meV_per_atom', '.0f')} -> "
        f"{number(a, 'energy_offset_meV_per_atom', '.0f')} meV/atom)"
    )


def score_test_sets(
    folder: str | Path, test_sets: dict[str, Sequence[DFTFrame]], batch_size: int = 16
) -> dict[str, dict[str, Any]]:
    """Score a model folder, and pretrained CHGNet with its reference refit, on extra test sets.

    Parameters
    ----------
    folder : path
        A model folder (:func:`finetune_chgnet`); its metadata holds the reference shift the
        training applied to pretrained CHGNet, which is the "before" model here.
    test_sets : dict
        Name -> frames never trained on (a hull's phases), of the model's DFT engine.
    batch_size : int
        Frames per prediction batch.

    Returns
    -------
    dict
        Name -> ``frames``, ``dft_settings``, ``before`` and ``after``
        (:func:`scored_elsewhere`); ``before`` is ``None`` for a model folder that does not
        record its reference shift (written before 2026-12-03).

    Raises
    ------
    SuperionicError
        A test set without frames or of another engine than the model's training data.
    """
    from chgnet.model import CHGNet

    meta = read_model_folder(folder)
    for name, part in test_sets.items():
        other = {f.engine for f in part} - {meta["engine"]}
        if not part or other:
            raise SuperionicError.single(
                "test set",
                "has no frames" if not part else f"is from another DFT engine ({', '.join(sorted(other))})",
                name,
                f"frames of {meta['engine']}, the engine of the model's training data",
            )
    if not test_sets:
        return {}
    pretrained = None
    if "reference_shift_eV_per_atom" in meta:  # models from before 2026-12-03 did not record it
        pretrained = CHGNet.load(verbose=False)
        shift = np.zeros(94)
        for el, value in meta["reference_shift_eV_per_atom"].items():
            shift[Element(el).Z - 1] = value
        shift_references(pretrained, shift)
    tuned = CHGNet.from_file(str(Path(folder) / MODEL_FILE))

    def scored(model: Any, part: Sequence[DFTFrame]) -> dict[str, Any] | None:
        return None if model is None else scored_elsewhere(part, predict(model, part, batch_size))

    return {
        name: {
            "frames": len(part),
            "dft_settings": part[0].settings,
            "before": scored(pretrained, part),
            "after": scored(tuned, part),
        }
        for name, part in test_sets.items()
    }


def refit_references(model: Any, frames: Sequence[DFTFrame], batch_size: int = 16) -> np.ndarray:
    """Shift CHGNet's per-element reference energies so that it sits on the DFT code's scale.

    The shift is the least-squares (minimum-norm) fit of the per-atom energy residual (DFT minus
    the model) to the frames' element fractions; forces and stresses do not change. Returns the
    shift per element (eV/atom, index Z - 1).
    """
    predictions = predict(model, frames, batch_size)
    residual = np.array(
        [f.energy_eV / len(f.structure) - float(p["e"]) for f, p in zip(frames, predictions, strict=True)]
    )
    features = np.zeros((len(frames), 94))
    for k, frame in enumerate(frames):
        for el, amount in frame.structure.composition.fractional_composition.items():
            features[k, el.Z - 1] = amount
    shift = np.linalg.lstsq(features, residual, rcond=None)[0]
    shift_references(model, shift)
    return shift


def shift_references(model: Any, shift: np.ndarray) -> None:
    """Add ``shift`` (eV/atom per element, index Z - 1) to CHGNet's per-element reference energies."""
    import torch

    fc = model.composition_model.fc
    with torch.no_grad():
        fc.weight += torch.tensor(shift, dtype=fc.weight.dtype).view_as(fc.weight)


# -- fine-tuning ---------------------------------------------------------------------------------
@dataclass
class FinetuneSettings:
    """How a model is fine-tuned (all part of the model's fingerprint)."""

    epochs: int = 5
    learning_rate: float = 1e-3
    batch_size: int = 8
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    every: int = 1
    seed: int = 0
    freeze: str = "embeddings+early"  # CHGNet's fine-tuning recipe; "none" trains every weight
    stress_weight: float = 0.1
    energy_weight: float = 1.0


@dataclass
class FinetuneResult:
    """What a fine-tuning produced (also written to the model folder's metadata)."""

    folder: str
    weights_sha256: str
    data_sha256: str
    settings: dict[str, Any]
    engine: str
    elements: list[str]
    splits: dict[str, dict[str, Any]]
    before: dict[str, Any]
    after: dict[str, Any]
    improved: bool
    seconds: dict[str, float] = field(default_factory=dict)
    base_model: str = ""
    #: what the refit added to pretrained CHGNet's reference energies (eV/atom, by element)
    reference_shift_eV_per_atom: dict[str, float] = field(default_factory=dict)
    #: the DFT settings of the training frames (:attr:`DFTFrame.settings`)
    dft_settings: str = ""


def check_output_folder(out: str | Path) -> None:
    """Refuse an ``--out`` that is not new, empty, or an earlier model folder (it is replaced).

    Raises
    ------
    SuperionicError
        A file, or a folder holding anything but a model (e.g. the training data).
    """
    path = Path(out)
    if not path.exists() or (path.is_dir() and (path / META_FILE).is_file()):
        return
    if path.is_dir() and not any(path.iterdir()):
        return
    raise SuperionicError.single(
        "--out",
        "exists and is not a model folder (it would be replaced)",
        str(out),
        "a new or empty folder, or an earlier `superionic finetune` model folder",
    )


def data_fingerprint(frames: Sequence[DFTFrame]) -> str:
    """Return a SHA-256 of the frames' content (positions, cells, energies, forces, stresses)."""
    h = hashlib.sha256()
    for f in frames:
        h.update(np.round(f.structure.lattice.matrix, 6).tobytes())
        h.update(np.round(f.structure.frac_coords, 6).tobytes())
        h.update(" ".join(s.specie.symbol for s in f.structure).encode())
        h.update(np.round([f.energy_eV], 6).tobytes())
        h.update(np.round(f.forces_eV_per_A, 5).tobytes())
        if f.stress_GPa is not None:
            h.update(np.round(f.stress_GPa, 5).tobytes())
    return h.hexdigest()


def _freeze(model: Any, how: str) -> None:
    if how == "none":
        return
    layers = [
        model.atom_embedding,
        model.bond_embedding,
        model.angle_embedding,
        model.bond_basis_expansion,
        model.angle_basis_expansion,
        model.atom_conv_layers[:-2],
        model.bond_conv_layers,
        model.angle_layers,
    ]
    for layer in layers:
        for param in getattr(layer, "parameters", lambda: [])():
            param.requires_grad = False


def finetune_chgnet(
    frames: Sequence[DFTFrame],
    out: str | Path,
    settings: FinetuneSettings | None = None,
    test_groups: Sequence[str] | None = None,
    allow_mixed_elements: bool = False,
    log: Any = print,
    allow_mixed_settings: bool = False,
) -> FinetuneResult:
    """Fine-tune pretrained CHGNet on ``frames`` and write the model folder ``out``.

    Parameters
    ----------
    frames : sequence of DFTFrame
        DFT frames of one engine (:func:`read_frames`).
    out : path
        The model folder (created; an earlier model there is replaced only when this one is
        written completely).
    settings : FinetuneSettings, optional
        Epochs, learning rate, split fractions, seed.
    test_groups : sequence of str, optional
        Runs (``DFTFrame.group``) held out for the test errors.
    allow_mixed_elements : bool
        Train on cells of different element sets (phases of a hull).
    allow_mixed_settings : bool
        Train on runs of different DFT settings (their energies then disagree).
    log : callable
        Progress lines.

    Returns
    -------
    FinetuneResult
        Errors on the test frames before (pretrained, references refit) and after.

    Raises
    ------
    SuperionicError
        Mixed engines, element sets or settings (see :func:`check_frames`), too few runs to
        split.
    """
    import shutil
    import tempfile

    import torch
    from chgnet.data.dataset import StructureData, get_loader
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer

    s = settings or FinetuneSettings()
    check_output_folder(out)
    check_frames(frames, allow_mixed_elements, allow_mixed_settings)
    split = split_by_group(frames, s.test_fraction, s.val_fraction, s.seed, test_groups)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(s.seed)
    model = CHGNet.load(verbose=False)
    base = f"CHGNet {model.version} pretrained (chgnet {_chgnet_version()})"
    shift = refit_references(model, split["train"], s.batch_size)
    predictions_before = predict(model, split["test"], s.batch_size)
    before = errors(split["test"], predictions_before)
    seconds["refit_and_baseline"] = time.perf_counter() - t0
    log(
        f"before (pretrained, references refit) on {before.n_frames} test frames: energy "
        f"{before.energy_meV_per_atom:.1f} meV/atom, force {before.force_meV_per_A:.0f} meV/A"
        + ("" if before.stress_GPa is None else f", stress {before.stress_GPa:.3f} GPa")
    )
    _freeze(model, s.freeze)
    has_stress = all(f.stress_GPa is not None for f in frames)

    def dataset(part: list[DFTFrame], shuffle: bool) -> Any:
        return StructureData(
            [f.structure for f in part],
            [f.energy_eV / len(f.structure) for f in part],
            [f.forces_eV_per_A.tolist() for f in part],
            # CHGNet's StructureData takes VASP's kBar and multiplies by -0.1 itself: hand it that
            stresses=[vasp_kbar(f.stress_GPa).tolist() for f in part] if has_stress else None,  # type: ignore[arg-type]
            shuffle=shuffle,
        )

    t1 = time.perf_counter()
    trainer = Trainer(
        model=model,
        targets="efs" if has_stress else "ef",
        stress_loss_ratio=s.stress_weight,
        energy_loss_ratio=s.energy_weight,
        optimizer="Adam",
        scheduler="CosLR",
        criterion="MSE",
        epochs=s.epochs,
        learning_rate=s.learning_rate,
        use_device="cpu",
        print_freq=10**6,
        torch_seed=s.seed,
        data_seed=s.seed,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".finetune-", dir=out.parent))
    try:
        trainer.train(
            get_loader(dataset(split["train"], True), batch_size=s.batch_size, pin_memory=False),
            get_loader(dataset(split["val"], False), batch_size=s.batch_size, pin_memory=False),
            save_dir=str(scratch / "checkpoints"),
            train_composition_model=False,
        )
        # the epoch with the lowest validation force error (CHGNet keeps it as bestF_*): forces are
        # what MD needs and what the stage judges the model by (its get_best_model returns the
        # last epoch's weights whatever its name says: best_model is the trained object itself)
        best_f = sorted((scratch / "checkpoints").glob("bestF_*.pth.tar"))
        best = CHGNet.from_file(str(best_f[0])) if best_f else trainer.model
        seconds["training"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        predictions_after = predict(best, split["test"], s.batch_size)
        after = errors(split["test"], predictions_after)
        seconds["test"] = time.perf_counter() - t2
        improved = after.force_meV_per_A < before.force_meV_per_A
        staging = scratch / "model"
        staging.mkdir()
        torch.save({"model": best.as_dict()}, staging / MODEL_FILE)
        digest = sha256_file(staging / MODEL_FILE)
        result = FinetuneResult(
            folder=str(out),
            weights_sha256=digest,
            data_sha256=data_fingerprint(frames),
            settings=asdict(s),
            engine=frames[0].engine,
            elements=sorted({e for f in frames for e in f.elements}),
            splits={k: {"runs": sorted({f.group for f in v}), "frames": len(v)} for k, v in split.items()},
            before=asdict(before),
            after=asdict(after),
            improved=improved,
            seconds={k: round(v, 1) for k, v in seconds.items()},
            base_model=base,
            reference_shift_eV_per_atom={  # lstsq leaves ~1e-17 on elements not trained on
                el: float(shift[Element(el).Z - 1]) for el in sorted({e for f in frames for e in f.elements})
            },
            dft_settings=frames[0].settings,
        )
        (staging / META_FILE).write_text(json.dumps({"format": MODEL_FORMAT, **asdict(result)}, indent=1))
        parity_plot(split["test"], predictions_before, predictions_after, staging / "parity.png")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(
        f"after ({s.epochs} epochs on {len(split['train'])} frames): energy {after.energy_meV_per_atom:.1f} "
        f"meV/atom, force {after.force_meV_per_A:.0f} meV/A"
        + ("" if after.stress_GPa is None else f", stress {after.stress_GPa:.3f} GPa")
    )
    line = worse_after(before, after)
    if line:
        log(line)
    return result


def worse_after(before: Errors, after: Errors) -> str | None:
    """Return a line naming the energy and stress errors that fine-tuning made worse, if any."""
    worse = [
        f"{what} {b:.3g} -> {a:.3g} {unit}"
        for what, b, a, unit in (
            ("energy", before.energy_meV_per_atom, after.energy_meV_per_atom, "meV/atom"),
            ("stress", before.stress_GPa, after.stress_GPa, "GPa"),
        )
        if a is not None and b is not None and a > b
    ]
    if not worse:
        return None
    return f"worse after fine-tuning on the test frames: {', '.join(worse)} (it is judged by its forces)"


def _chgnet_version() -> str:
    from importlib.metadata import version

    return version("chgnet")


def sha256_file(path: Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parity_plot(
    frames: Sequence[DFTFrame], before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], path: Path
) -> None:
    """Energy and force parity (DFT vs model) on the test frames, before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    e_dft = np.array([f.energy_eV / len(f.structure) for f in frames])
    f_dft = np.concatenate([f.forces_eV_per_A.ravel() for f in frames])
    for label, preds, marker in (("pretrained (refs refit)", before, "x"), ("fine-tuned", after, "o")):
        e = np.array([float(p["e"]) for p in preds])
        f = np.concatenate([np.asarray(p["f"]).ravel() for p in preds])
        axes[0].scatter(e_dft, e, s=10, marker=marker, label=label)
        axes[1].scatter(f_dft, f, s=4, marker=marker, alpha=0.5, label=label)
    for ax, unit in zip(axes, ("energy (eV/atom)", "force component (eV/A)"), strict=True):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlabel(f"DFT {unit}")
        ax.set_ylabel(f"model {unit}")
        ax.legend(fontsize=8)
    fig.suptitle(f"test frames ({len(frames)}): parity before and after fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- model folders -------------------------------------------------------------------------------
def read_model_folder(folder: str | Path, where: str = "force_field") -> dict[str, Any]:
    """Return a model folder's metadata, its weights checked against their recorded SHA-256.

    Raises
    ------
    SuperionicError
        Not a folder, no metadata or weights, or weights that are not the ones recorded.
    """
    path = Path(folder).expanduser()
    valid = f"a folder written by `superionic finetune` ({MODEL_FILE} and {META_FILE})"
    if not path.is_dir():
        raise SuperionicError.single(where, "no such model folder", str(folder), valid)
    meta_path, weights = path / META_FILE, path / MODEL_FILE
    if not meta_path.is_file() or not weights.is_file():
        raise SuperionicError.single(where, "not a model folder", str(folder), valid)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise SuperionicError.single(where, "model metadata is not JSON", str(meta_path), valid) from None
    if meta.get("format") != MODEL_FORMAT or "weights_sha256" not in meta:
        raise SuperionicError.single(where, "not a model folder of this version", str(folder), valid)
    if sha256_file(weights) != meta["weights_sha256"]:
        raise SuperionicError.single(
            where,
            "the weights are not the ones its metadata records (changed after fine-tuning)",
            str(weights),
            "the folder as `superionic finetune` wrote it",
        )
    return meta


def finetuned_calculator(model_dir: str, weights_sha256: str, use_device: str = "cpu", **kwargs: Any) -> Any:
    """Return a CHGNet ASE calculator on the fine-tuned model in ``model_dir``.

    atomate2's force-field makers build it from ``force_field_name = {"@module": ..., "@callable":
    "finetuned_calculator"}`` and these keyword arguments. The weights must be those the job was
    built with (``weights_sha256``, part of the job's identity): a model retrained in the same
    folder is refused here, and a rebuilt campaign gives the job a new identity.
    """
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    meta = read_model_folder(model_dir)
    if meta["weights_sha256"] != weights_sha256:
        raise SuperionicError.single(
            "force_field",
            "the model in this folder was retrained after the job was built",
            model_dir,
            "rebuild the campaign (superionic run) so that its jobs use the new weights",
        )
    model = CHGNet.from_file(str(Path(model_dir) / MODEL_FILE))
    return CHGNetCalculator(model=model, use_device=use_device, **kwargs)


_MODEL_FILES = ("model.pth.tar", "superionic_model.json", "parity.png")


def store_model(folder: Path, job_store: Any) -> dict[str, Any]:
    """Copy a model folder's files into the campaign store's model backend; return where."""
    from superionic.trajectory_store import backend_for

    backend = backend_for(job_store, "models")
    if backend is None:
        return {"folder": str(folder)}
    sha = json.loads((folder / "superionic_model.json").read_text())["weights_sha256"]
    for name in _MODEL_FILES:
        path = folder / name
        if not path.is_file():
            continue
        key = f"{sha}-{name}"
        if key in backend.names():
            continue
        stream, token = backend.create(key)
        stream.write(path.read_bytes())
        backend.commit(stream, token, key)
    return {"backend": backend.kind, "weights_sha256": sha}


def add_to_metadata(folder: str | Path, extra: dict[str, Any]) -> None:
    """Add keys to a model folder's metadata (e.g. test sets scored after the training)."""
    path = Path(folder) / META_FILE
    meta = json.loads(path.read_text())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**meta, **extra}, indent=1))
    tmp.replace(path)


def _valid_model(folder: Path, sha: str) -> bool:
    """Whether ``folder`` holds the model whose weights hash to ``sha``."""
    weights = folder / MODEL_FILE
    return (folder / META_FILE).is_file() and weights.is_file() and sha256_file(weights) == sha


def model_folder(model: dict[str, Any], job_store: Any = None) -> Path:
    """Return a local folder holding the model ``model`` refers to (fetched from the store once).

    The embedded store's models are unpacked beside it (``models/<sha>/``); a MongoDB store's
    into ``$SUPERIONIC_MODEL_CACHE`` (default ``~/.cache/superionic/models``) on the node.
    """
    import os

    from superionic.trajectory_store import FileBackend, backend_for

    if "folder" in model:
        return Path(model["folder"])
    sha = model["weights_sha256"]
    backend = backend_for(job_store, "models")
    if backend is None:
        raise ValueError("the model of this campaign's finetune stage is in a store this job cannot read")
    if isinstance(backend, FileBackend):
        target = backend.directory / sha
    else:
        cache = os.environ.get("SUPERIONIC_MODEL_CACHE") or Path.home() / ".cache" / "superionic" / "models"
        target = Path(cache) / sha
    if not _valid_model(target, sha):
        import shutil
        import tempfile

        target.parent.mkdir(parents=True, exist_ok=True)
        part = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}.", dir=target.parent))
        for name in _MODEL_FILES:
            key = f"{sha}-{name}"
            if key in backend.names():
                with backend.open(key) as fin:
                    (part / name).write_bytes(fin.read())
        if not _valid_model(part, sha):
            shutil.rmtree(part, ignore_errors=True)
            raise ValueError(f"the store holds no complete model {sha[:12]} (weights or metadata missing)")
        try:
            part.rename(target)
        except OSError:  # another worker unpacked it first, or a broken copy is in the way
            shutil.rmtree(part, ignore_errors=True)
            if not _valid_model(target, sha):
                raise
    return target
