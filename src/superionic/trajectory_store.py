"""Binary MD trajectories in the campaign's store, written and read in chunks of frames.

Why not the job store's blobs: jobflow's additional stores hold one document per blob, read
whole (gzipped JSON here, GridFS documents on MongoDB). A paper-scale run (study B: about
100,000 frames x 270 atoms) is over 300 MB as float32 and several GB as JSON numbers, and the
analysis needs it frame-chunk by frame-chunk, not whole. Neither jobflow, maggma nor pymatgen
stores an appendable array stream, so this module is one, on the same two backends:

* embedded store: a file ``<store>/trajectories/<id>.sitraj`` (written to a temporary name and
  renamed when closed, so a reader never sees a half-written trajectory);
* MongoDB: a GridFS bucket ``<campaign>.trajectories`` (GridFS splits it into 255 kB chunks;
  ``GridOut`` seeks, so a chunk of frames is read without the rest).

Format: ``MAGIC``, an 8-byte little-endian header length, a JSON header (species, constant
lattice or not, time between frames, what each record holds), then one fixed-size record per
frame: float64 lattice (9 values, when the cell varies) and energy (when given), then float32
fractional coordinates (n_atoms x 3). Frames are appended; their count is the payload size
divided by the record size, so a writer never rewrites the header.

A stored trajectory is referred to by a small dict (:func:`is_reference`), which is what an MD
job outputs in place of a pymatgen ``Trajectory``; :func:`open_trajectory` reads it back in the
job that analyses it (jobflow's ``CURRENT_JOB.store``) or from any store.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

MAGIC = b"SITRAJ1\n"
REFERENCE_KEY = "superionic_trajectory"
DEFAULT_CHUNK_FRAMES = 2000


def record_dtype(n_atoms: int, variable_cell: bool, energies: bool) -> np.dtype:
    """Return the numpy dtype of one frame's record.

    Parameters
    ----------
    n_atoms : int
        Atoms per frame.
    variable_cell : bool
        Whether each frame carries its lattice (float64, 3 x 3).
    energies : bool
        Whether each frame carries an energy (float64).

    Returns
    -------
    numpy.dtype
        Structured: ``lattice``, ``energy`` (when present), ``frac`` (float32, n_atoms x 3).
    """
    fields: list[tuple] = []
    if variable_cell:
        fields.append(("lattice", "<f8", (3, 3)))
    if energies:
        fields.append(("energy", "<f8"))
    fields.append(("frac", "<f4", (n_atoms, 3)))
    return np.dtype(fields)


def is_reference(value: Any) -> bool:
    """Tell whether ``value`` is the dict that names a stored binary trajectory."""
    return isinstance(value, dict) and REFERENCE_KEY in value


# -- backends: where the bytes go ---------------------------------------------------------------
class FileBackend:
    """Trajectory files in a folder of the embedded store."""

    kind = "file"

    def __init__(self, directory: str | Path, suffix: str = ".sitraj") -> None:
        self.directory = Path(directory)
        self.suffix = suffix

    def create(self, name: str) -> tuple[IO[bytes], Any]:
        """Open a new trajectory for writing; return the stream and what :meth:`commit` needs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{name}.part"
        return open(tmp, "wb"), tmp

    def commit(self, stream: IO[bytes], token: Any, name: str) -> None:
        """Close the stream and publish the trajectory under its name."""
        stream.flush()
        os.fsync(stream.fileno())
        stream.close()
        os.replace(token, self.directory / f"{name}{self.suffix}")

    def open(self, name: str) -> IO[bytes]:
        """Open a stored trajectory for reading (seekable)."""
        return open(self.directory / f"{name}{self.suffix}", "rb")

    def names(self) -> list[str]:
        """Return the names of the stored trajectories."""
        return sorted(p.name.removesuffix(self.suffix) for p in self.directory.glob(f"*{self.suffix}"))


class GridFSBackend:
    """Trajectories in a GridFS bucket of the campaign's MongoDB database."""

    kind = "gridfs"

    def __init__(self, database: Any, bucket: str) -> None:
        import gridfs

        self.bucket = gridfs.GridFSBucket(database, bucket_name=bucket)
        self.files = database[f"{bucket}.files"]

    def create(self, name: str) -> tuple[IO[bytes], Any]:
        """Open a GridFS upload stream (its file appears when the stream closes)."""
        stream = self.bucket.open_upload_stream(name)
        return stream, None  # type: ignore[return-value]

    def commit(self, stream: IO[bytes], token: Any, name: str) -> None:
        """Close the upload (GridFS writes the file document last: readers never see part of it)."""
        stream.close()

    def open(self, name: str) -> IO[bytes]:
        """Open the newest upload of ``name`` for reading (GridOut seeks)."""
        return self.bucket.open_download_stream_by_name(name)  # type: ignore[return-value]

    def names(self) -> list[str]:
        """Return the names of the stored trajectories."""
        return sorted(self.files.distinct("filename"))


def backend_for(job_store: Any, kind: str = "trajectories") -> FileBackend | GridFSBackend | None:
    """Return the trajectory backend beside a campaign's JobStore (its ``data`` blob store).

    Parameters
    ----------
    job_store : jobflow.JobStore
        The campaign's store.
    kind : str
        ``trajectories``, or ``models`` (fine-tuned force fields: ``models/`` beside the blobs,
        or a bucket ``<campaign>.models``).

    Returns
    -------
    FileBackend, GridFSBackend or None
        The embedded store's blobs are a folder: trajectories go to ``trajectories/`` beside it.
        A MongoDB store's blobs are a GridFS store: trajectories go to a bucket named after it,
        in the same database, through one client per server and settings (shared by every
        trajectory of the process). Any other store (a MemoryStore in a script): None, and the
        MD jobs keep atomate2's pymatgen Trajectory blob.
    """
    blobs = (getattr(job_store, "additional_stores", None) or {}).get("data")
    if type(blobs).__name__ == "BlobDirStore":  # by name: dispatch imports engines, which import this
        suffix = ".sitraj" if kind == "trajectories" else ".bin"
        return FileBackend(Path(blobs.directory).parent / kind, suffix)
    from maggma.stores import GridFSStore

    if isinstance(blobs, GridFSStore) and blobs.uri:
        kwargs = dict(blobs.mongoclient_kwargs or {})
        key = (blobs.uri, json.dumps(kwargs, sort_keys=True, default=str))
        if key not in _CLIENTS:
            import pymongo

            _CLIENTS[key] = pymongo.MongoClient(blobs.uri, **kwargs)
        bucket = blobs.collection_name.removesuffix("blobs") + kind
        return GridFSBackend(_CLIENTS[key][blobs.database], bucket)
    return None


#: MongoClients of this process by (URI, client settings): each opens threads and sockets, so
#: one per server is kept for the process (pymongo's advice), not one per trajectory
_CLIENTS: dict[tuple[str, str], Any] = {}


# -- writing and reading -----------------------------------------------------------------------
class TrajectoryWriter:
    """Append frames to a new binary trajectory; :meth:`close` publishes it and gives the reference.

    Parameters
    ----------
    backend : FileBackend or GridFSBackend
        Where it goes.
    species : list of str
        Element per atom.
    lattice : ndarray (3, 3), optional
        The constant cell; None when every frame gives its own (NpT).
    time_step_fs : float
        Time between stored frames.
    energies : bool
        Whether frames carry a total energy (eV).
    meta : dict, optional
        Anything else worth keeping in the header (temperature, engine).
    """

    def __init__(
        self,
        backend: FileBackend | GridFSBackend,
        species: list[str],
        lattice: np.ndarray | None,
        time_step_fs: float,
        energies: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.backend, self.name = backend, uuid.uuid4().hex
        self.header = {
            "species": list(species),
            "lattice": None if lattice is None else np.asarray(lattice, float).tolist(),
            "time_step_fs": float(time_step_fs),
            "energies": bool(energies),
            "meta": meta or {},
        }
        self.dtype = record_dtype(len(species), lattice is None, energies)
        self.stream, self.token = backend.create(self.name)
        head = json.dumps(self.header).encode()
        self.stream.write(MAGIC + struct.pack("<Q", len(head)) + head)
        self.n_frames = 0

    def append(
        self, frac_coords: np.ndarray, lattices: np.ndarray | None = None, energies: np.ndarray | None = None
    ) -> None:
        """Append ``k`` frames.

        Fractional coordinates ``(k, n_atoms, 3)``, and per-frame lattices ``(k, 3, 3)`` /
        energies ``(k,)`` when the trajectory has them.
        """
        frac = np.asarray(frac_coords)
        records = np.empty(len(frac), dtype=self.dtype)
        records["frac"] = frac
        if "lattice" in self.dtype.names:
            if lattices is None:
                raise ValueError("this trajectory's cell varies: give a lattice per frame")
            records["lattice"] = lattices
        if "energy" in self.dtype.names:
            if energies is None:
                raise ValueError("this trajectory keeps energies: give one per frame")
            records["energy"] = energies
        self.stream.write(records.tobytes())
        self.n_frames += len(frac)

    def abort(self) -> None:
        """Drop what was written (a failed run leaves no partial trajectory and no open handle)."""
        if hasattr(self.stream, "abort"):  # GridIn: removes the chunks written so far
            self.stream.abort()
        else:
            self.stream.close()
            Path(self.token).unlink(missing_ok=True)

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None:  # an error mid-write; close() is called by the writer's user
            self.abort()

    def close(self) -> dict[str, Any]:
        """Publish the trajectory and return its reference (what an MD job outputs)."""
        self.backend.commit(self.stream, self.token, self.name)
        return {
            REFERENCE_KEY: self.name,
            "backend": self.backend.kind,
            "n_frames": self.n_frames,
            "n_atoms": len(self.header["species"]),
            "species": self.header["species"],
            "time_step_fs": self.header["time_step_fs"],
            "nbytes": self.n_frames * self.dtype.itemsize,
        }


class TrajectoryReader:
    """Read a stored binary trajectory in chunks of frames (memory: one chunk at a time)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        if stream.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a superionic binary trajectory (bad magic bytes)")
        (size,) = struct.unpack("<Q", stream.read(8))
        self.header = json.loads(stream.read(size))
        self.offset = len(MAGIC) + 8 + size
        self.species: list[str] = self.header["species"]
        self.lattice = None if self.header["lattice"] is None else np.asarray(self.header["lattice"])
        self.time_step_fs = float(self.header["time_step_fs"])
        self.dtype = record_dtype(len(self.species), self.lattice is None, self.header["energies"])
        stream.seek(0, os.SEEK_END)
        self.n_frames = (stream.tell() - self.offset) // self.dtype.itemsize

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Return the records of frames ``start:stop`` (structured: ``frac``, ``lattice``, ``energy``)."""
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        if stop <= start:
            return np.empty(0, dtype=self.dtype)
        self.stream.seek(self.offset + start * self.dtype.itemsize)
        return np.frombuffer(self.stream.read((stop - start) * self.dtype.itemsize), dtype=self.dtype)

    def chunks(
        self, start: int = 0, chunk_frames: int = DEFAULT_CHUNK_FRAMES
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(frac (k, n, 3) float32, lattices (3, 3) or (k, 3, 3))`` from frame ``start`` on."""
        for a in range(start, self.n_frames, chunk_frames):
            rec = self.read(a, a + chunk_frames)
            yield rec["frac"], (rec["lattice"] if self.lattice is None else self.lattice)

    def energies(self) -> np.ndarray | None:
        """Every frame's energy (eV), or None when the trajectory keeps none."""
        if not self.header["energies"]:
            return None
        return np.concatenate([self.read(a, a + 50_000)["energy"] for a in range(0, self.n_frames, 50_000)])

    def arrays(self, start: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All frames from ``start`` in memory: ``(frac (float64), lattice(s), species)``."""
        rec = self.read(start)
        lat = rec["lattice"].astype(float) if self.lattice is None else self.lattice
        return rec["frac"].astype(float), lat, list(self.species)

    def close(self) -> None:
        """Close the stream."""
        self.stream.close()

    def __enter__(self) -> TrajectoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_trajectory(reference: dict[str, Any], job_store: Any = None) -> TrajectoryReader:
    """Open the trajectory a reference names.

    Parameters
    ----------
    reference : dict
        What :meth:`TrajectoryWriter.close` returned (an MD job's ``objects["trajectory"]``).
    job_store : jobflow.JobStore, optional
        The campaign's store; by default the running job's (jobflow's ``CURRENT_JOB.store``).

    Returns
    -------
    TrajectoryReader
        Close it (or use it in a ``with`` block).
    """
    if job_store is None:
        from jobflow import CURRENT_JOB

        job_store = CURRENT_JOB.store
        if job_store is None:
            raise ValueError("no store to read the trajectory from: give job_store")
    backend = backend_for(job_store)
    if backend is None:
        raise ValueError(f"the store {type(job_store).__name__} holds no binary trajectories")
    return TrajectoryReader(backend.open(reference[REFERENCE_KEY]))


def store_arrays(
    backend: FileBackend | GridFSBackend,
    frac_coords: np.ndarray,
    lattices: np.ndarray,
    species: list[str],
    time_step_fs: float,
    energies: np.ndarray | None = None,
    meta: dict[str, Any] | None = None,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> dict[str, Any]:
    """Write a trajectory held in arrays as a binary trajectory; return its reference.

    Parameters
    ----------
    backend : FileBackend or GridFSBackend
        Where it goes (:func:`backend_for` the campaign's store).
    frac_coords : ndarray, shape (n, n_atoms, 3)
        Fractional coordinates.
    lattices : ndarray, shape (3, 3) or (n, 3, 3)
        The cell, constant or per frame (per-frame cells that are all equal are kept once).
    species : list of str
        Element per atom.
    time_step_fs : float
        Time between frames.
    energies : ndarray, shape (n,), optional
        Energy per frame (eV).
    meta : dict, optional
        Kept in the header.
    chunk_frames : int
        Frames per write.

    Returns
    -------
    dict
        The reference (:func:`is_reference`).
    """
    lat = np.asarray(lattices, dtype=float)
    if lat.ndim == 3 and np.allclose(lat, lat[0]):
        lat = lat[0]
    with TrajectoryWriter(
        backend, species, lat if lat.ndim == 2 else None, time_step_fs, energies is not None, meta
    ) as writer:
        for a in range(0, len(frac_coords), chunk_frames):
            b = a + chunk_frames
            writer.append(
                frac_coords[a:b],
                lat[a:b] if lat.ndim == 3 else None,
                None if energies is None else energies[a:b],
            )
        return writer.close()
