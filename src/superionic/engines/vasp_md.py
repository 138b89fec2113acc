"""VASP MD runs whose frames go into a binary trajectory, streamed from XDATCAR and OSZICAR.

Why this exists: atomate2's ``MDMaker`` parses the trajectory from vasprun.xml into its task
document and stores it as one JSON blob (``store_trajectory: partial``), read whole by every
analysis: at the paper's scale (about 100,000 steps x 270 atoms per run) that is many GB of JSON
per run. Here the run and its task document are atomate2's; the frames VASP wrote to XDATCAR
(every NBLOCK steps) are streamed, a chunk at a time, into the campaign's binary trajectories
(:mod:`superionic.trajectory_store`) with the free energy per frame from OSZICAR, and the task
document keeps the reference where atomate2 keeps its Trajectory. Without XDATCAR (a replayed
run) the frames come from the parsed vasprun.xml. Outside a campaign store the run stays
atomate2's (a Trajectory of every step, which records POTIM as its time step).

vasprun.xml is still parsed whole by atomate2 for the task document; how much memory that takes
grows with the steps of one run (``production_chunks`` splits a long run into several).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from atomate2.vasp.jobs.base import vasp_job
from atomate2.vasp.jobs.md import MDMaker
from monty.io import zopen

_FREE_ENERGY = re.compile(r"\bF=\s*(\S+)")


def _output_file(folder: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``folder`` (atomate2 gzips a run's outputs when it ends)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


class XdatcarFrames:
    """VASP's XDATCAR, read a chunk of frames at a time.

    A constant-cell run (NVT) writes the header once; a variable-cell run (NpT) writes it before
    every frame, and each frame then has its own lattice.

    Parameters
    ----------
    path : Path
        XDATCAR or XDATCAR.gz.
    chunk_frames : int
        Frames per chunk.
    """

    def __init__(self, path: Path, chunk_frames: int = 2000) -> None:
        self.path, self.chunk_frames = Path(path), chunk_frames
        with zopen(self.path, "rt") as fh:
            lattice, symbols = self._header(fh)
            if lattice is None:
                raise ValueError(f"{self.path}: not an XDATCAR (no header)")
            fh.readline()  # the first "Direct configuration" line
            for _ in symbols:
                fh.readline()
            after = fh.readline()
        self.symbols, self.lattice0 = symbols, lattice
        #: VASP writes the header before every frame when the cell varies (NpT)
        self.variable_cell = bool(after.strip()) and not after.lower().lstrip().startswith("direct")

    def count(self) -> int:
        """Return the number of frames (``Direct configuration`` lines, a cut-off last one included)."""
        with zopen(self.path, "rt") as fh:
            return sum(1 for line in fh if line.lower().lstrip().startswith("direct configuration"))

    @staticmethod
    def _header(fh: IO[str], first: str | None = None) -> tuple[np.ndarray | None, list[str]]:
        """Read the 7 header lines (comment, scale, 3 lattice rows, species, counts)."""
        comment = fh.readline() if first is None else first
        if not comment:
            return None, []
        scale = float(fh.readline().split()[0])
        rows = np.array([[float(x) for x in fh.readline().split()[:3]] for _ in range(3)])
        if scale < 0:  # a negative scale is the cell volume (VASP's convention)
            rows *= (-scale / abs(np.linalg.det(rows))) ** (1 / 3)
        else:
            rows *= scale
        names = fh.readline().split()
        counts = [int(x) for x in fh.readline().split()]
        return rows, [name for name, n in zip(names, counts, strict=True) for _ in range(n)]

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(frac (k, n, 3), lattices (k, 3, 3))`` of consecutive frames."""
        n = len(self.symbols)
        with zopen(self.path, "rt") as fh:
            lattice, _ = self._header(fh)
            frac: list[np.ndarray] = []
            lattices: list[np.ndarray] = []
            while True:
                line = fh.readline()
                if not line:
                    break
                if not line.lower().lstrip().startswith("direct configuration"):
                    if not line.strip():
                        continue
                    lattice, _ = self._header(fh, first=line)  # NpT: a header before each frame
                    continue
                block = [fh.readline() for _ in range(n)]
                if len(block[-1].split()) < 3:  # a frame cut off mid-write: stop before it
                    break
                frac.append(np.array([[float(x) for x in ln.split()[:3]] for ln in block]))
                lattices.append(lattice)
                if len(frac) == self.chunk_frames:
                    yield np.array(frac), np.array(lattices)
                    frac, lattices = [], []
            if frac:
                yield np.array(frac), np.array(lattices)


def oszicar_free_energies(path: Path) -> np.ndarray:
    """Free energy ``F`` (eV) of every MD step in OSZICAR (the ``T= ... F= ...`` lines)."""
    values = []
    with zopen(path, "rt") as fh:
        for line in fh:
            if " T=" in line:
                match = _FREE_ENERGY.search(line)
                if match:
                    values.append(float(match.group(1)))
    return np.array(values)


@dataclass
class StreamingMDMaker(MDMaker):
    """atomate2's VASP ``MDMaker`` whose frames are stored as a binary trajectory.

    Parameters
    ----------
    binary_trajectory : bool
        Stream XDATCAR into a binary trajectory in the campaign's store (the task document's
        ``vasp_objects["trajectory"]`` is then its reference). False, or outside a campaign
        store: atomate2's Trajectory of every step.
    """

    binary_trajectory: bool = True

    @property
    def stride(self) -> int:
        """MD steps between stored frames (the run's NBLOCK)."""
        incar = getattr(self.input_set_generator, "user_incar_settings", None) or {}
        return max(1, int(incar.get("NBLOCK", 1)))

    @vasp_job
    def make(self, structure: Any, prev_dir: str | Path | None = None) -> Any:
        """Run the MD (atomate2's ``make``); then store its frames every NBLOCK steps."""
        from jobflow import CURRENT_JOB

        from superionic.trajectory_store import backend_for

        backend = None if CURRENT_JOB.store is None else backend_for(CURRENT_JOB.store)
        if not self.binary_trajectory or backend is None:
            return MDMaker.make.original(self, structure, prev_dir)
        # the frames are not parsed into the task document (store_trajectory "no" keeps the
        # ionic steps in it instead; they are taken out below once the frames are stored)
        quiet = replace(self, task_document_kwargs={**self.task_document_kwargs, "store_trajectory": "no"})
        response = MDMaker.make.original(quiet, structure, prev_dir)
        doc = response.output
        meta = {"engine": "vasp", "job": str(getattr(CURRENT_JOB.job, "uuid", ""))}
        # the stride and time step the run used (vasprun's parameters), the inputs' if not given
        params = getattr(doc.input, "parameters", None) or {}
        stride = max(1, int(params.get("NBLOCK", self.stride)))
        potim = float(params.get("POTIM", self.time_step_fs / self.stride))
        reference = stream_vasp_frames(Path.cwd(), doc, backend, stride, potim * stride, meta)
        for calc in doc.calcs_reversed or []:
            calc.output.ionic_steps = None
        from emmet.core.vasp.calculation import VaspObject

        doc.vasp_objects = {**(doc.vasp_objects or {}), VaspObject.TRAJECTORY: reference}
        return response

    @property
    def time_step_fs(self) -> float:
        """Time between two stored frames (POTIM x NBLOCK)."""
        gen = self.input_set_generator
        incar = getattr(gen, "user_incar_settings", None) or {}
        potim = incar.get("POTIM", getattr(gen, "time_step", None) or 1.0)
        return float(potim) * self.stride


def stream_vasp_frames(
    folder: Path, doc: Any, backend: Any, stride: int, time_step_fs: float, meta: dict[str, Any]
) -> dict[str, Any]:
    """Write one VASP MD run's frames (every ``stride`` steps) as a binary trajectory.

    Frames come from XDATCAR when the run wrote one, else from the task document's ionic steps
    (every ``stride``-th); energies are OSZICAR's (or the ionic steps') free energy of the same
    steps, left out when their count does not match the frames'.

    Returns
    -------
    dict
        The trajectory's reference.
    """
    from superionic.trajectory_store import TrajectoryWriter, store_arrays

    xdatcar = _output_file(folder, "XDATCAR")
    if xdatcar is None:
        steps = [s for calc in reversed(doc.calcs_reversed or []) for s in (calc.output.ionic_steps or [])]
        if not steps:
            raise FileNotFoundError(f"the VASP MD run in {folder} wrote no XDATCAR and no ionic steps")
        kept = steps[stride - 1 :: stride]
        structures = [s.structure for s in kept]
        energies = [s.e_fr_energy for s in kept]
        return store_arrays(
            backend,
            np.array([s.frac_coords for s in structures]),
            np.array([s.lattice.matrix for s in structures]),
            [site.specie.symbol for site in structures[0]],
            time_step_fs,
            None if any(e is None for e in energies) else np.array(energies, dtype=float),
            meta,
        )
    frames = XdatcarFrames(xdatcar)
    oszicar = _output_file(folder, "OSZICAR")
    free = oszicar_free_energies(oszicar)[stride - 1 :: stride] if oszicar is not None else None
    if free is not None and len(free) < frames.count():
        free = None  # OSZICAR and XDATCAR disagree (a run cut off): keep the positions only
    lattice = None if frames.variable_cell else frames.lattice0
    with TrajectoryWriter(backend, frames.symbols, lattice, time_step_fs, free is not None, meta) as writer:
        for frac, lattices in frames.chunks():
            a = writer.n_frames
            writer.append(
                frac,
                lattices if frames.variable_cell else None,
                None if free is None else free[a : a + len(frac)],
            )
        return writer.close()
