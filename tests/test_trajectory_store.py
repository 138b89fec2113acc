"""Binary trajectories in the campaign's store: written and read in chunks, on the embedded
folder and on GridFS; the streamed diffusion analysis equals the in-memory one."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from superionic.analysis.diffusion import (
    _nearest_neighbour,
    diffusion_from_chunks,
    diffusion_from_displacements,
    diffusion_from_frac_coords,
    remove_drift,
    unwrap_displacements,
)
from superionic.trajectory_store import (
    FileBackend,
    GridFSBackend,
    TrajectoryReader,
    TrajectoryWriter,
    store_arrays,
)


def _walk(n_frames: int = 600, seed: int = 0, npt: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A random walk of 8 Li in a 16-atom cell (wrapped fractional coordinates)."""
    rng = np.random.default_rng(seed)
    species = ["Li"] * 8 + ["S"] * 8
    steps = rng.normal(0, 0.01, (n_frames, 16, 3))
    steps[:, 8:] *= 0.1
    frac = (rng.random((1, 16, 3)) + np.cumsum(steps, axis=0)) % 1.0
    lat = np.diag([10.0, 10.0, 10.0])
    if npt:
        lat = lat[None] * (1 + 0.01 * np.sin(np.arange(n_frames) / 20))[:, None, None]
    return frac, lat, species


@pytest.mark.parametrize("npt", [False, True])
def test_chunked_diffusion_equals_the_in_memory_analysis(npt: bool) -> None:
    frac, lat, species = _walk(npt=npt)
    # the independent route: whole-array unwrapping and drift removal, then the same MSD fits
    disp = remove_drift(unwrap_displacements(frac, lat), np.array(species) != "Li")
    mobile = np.array(species) == "Li"
    volume = float(np.mean(np.abs(np.linalg.det(lat)))) if npt else float(np.linalg.det(lat))
    first = lat[0] if npt else lat
    jump = _nearest_neighbour(frac[0][mobile], first)
    whole = diffusion_from_displacements(disp, mobile, 10.0, 600.0, volume, "Li", jump_distance_A=jump)
    cuts = [0, 7, 100, 101, 350, len(frac)]  # uneven chunks, one of a single frame
    parts = [(frac[a:b], lat[a:b] if npt else lat) for a, b in itertools.pairwise(cuts)]
    streamed = diffusion_from_chunks(parts, len(frac), species, "Li", 10.0, 600.0)
    for key in ("diffusivity_cm2_s", "charge_diffusivity_cm2_s", "conductivity_mS_cm", "n_jumps"):
        assert getattr(streamed, key) == pytest.approx(getattr(whole, key), rel=1e-10), key
    assert streamed.volume_A3 == pytest.approx(volume, rel=1e-12)


def _roundtrip(backend, npt: bool) -> None:  # type: ignore[no-untyped-def]
    frac, lat, species = _walk(n_frames=5003, npt=npt)
    energies = -100.0 - np.arange(len(frac)) * 1e-6
    writer = TrajectoryWriter(backend, species, None if npt else lat, 20.0, energies=True)
    for a in range(0, len(frac), 999):
        writer.append(frac[a : a + 999], lat[a : a + 999] if npt else None, energies[a : a + 999])
    ref = writer.close()
    assert ref["n_frames"] == 5003 and ref["backend"] == backend.kind
    assert ref["nbytes"] == 5003 * ((9 if npt else 0) * 8 + 8 + 16 * 3 * 4)
    with TrajectoryReader(backend.open(ref["superionic_trajectory"])) as reader:
        assert reader.n_frames == 5003 and reader.species == species
        np.testing.assert_array_equal(reader.read(4000, 4010)["frac"], frac[4000:4010].astype(np.float32))
        np.testing.assert_array_equal(reader.energies(), energies)
        got = np.concatenate([f for f, _ in reader.chunks(3, chunk_frames=700)])
        np.testing.assert_array_equal(got, frac[3:].astype(np.float32))
        if npt:
            np.testing.assert_array_equal(reader.arrays()[1], lat)
        # float32 positions: the diffusivity moves by rounding only
        whole = diffusion_from_frac_coords(frac, lat, species, "Li", 20.0, 600.0)
        streamed = diffusion_from_chunks(reader.chunks(), reader.n_frames, species, "Li", 20.0, 600.0)
        assert streamed.diffusivity_cm2_s == pytest.approx(whole.diffusivity_cm2_s, rel=1e-4)


@pytest.mark.parametrize("npt", [False, True])
def test_embedded_trajectory_round_trips_in_chunks(tmp_path: Path, npt: bool) -> None:
    backend = FileBackend(tmp_path / "traj")
    _roundtrip(backend, npt)
    assert len(backend.names()) == 1 and not list((tmp_path / "traj").glob(".*.part"))


@pytest.mark.mongodb
def test_gridfs_trajectory_round_trips_in_chunks(mongo_server) -> None:  # type: ignore[no-untyped-def]
    import pymongo

    db = pymongo.MongoClient(mongo_server.uri)["trajtest"]
    _roundtrip(GridFSBackend(db, "c.trajectories"), npt=True)
    assert db["c.trajectories.chunks"].count_documents({}) > 1  # GridFS split it


def test_bad_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "x.sitraj").write_bytes(b"not a trajectory at all")
    with (
        open(tmp_path / "x.sitraj", "rb") as fh,
        pytest.raises(ValueError, match="not a superionic binary trajectory"),
    ):
        TrajectoryReader(fh)
    frac, _lat, species = _walk(n_frames=10, npt=True)
    with pytest.raises(ValueError, match="give a lattice per frame"):
        with TrajectoryWriter(FileBackend(tmp_path / "w"), species, None, 1.0) as writer:
            writer.append(frac)
    assert not list((tmp_path / "w").iterdir())  # aborted: no partial file left


def test_store_arrays_keeps_a_constant_cell_once(tmp_path: Path) -> None:
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    from superionic.dispatch.stores import BlobDirStore
    from superionic.trajectory_store import backend_for, open_trajectory

    frac, lat, species = _walk(n_frames=50)
    assert backend_for(JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})) is None
    store = JobStore(MemoryStore(), additional_stores={"data": BlobDirStore(tmp_path / "blobs")})
    ref = store_arrays(backend_for(store), frac, np.repeat(lat[None], 50, axis=0), species, 2.0)

    with open_trajectory(ref, store) as reader:
        assert reader.lattice is not None and reader.dtype.names == ("frac",)
        np.testing.assert_allclose(reader.arrays()[0], frac, atol=1e-7)
