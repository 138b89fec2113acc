"""Read MD trajectories into arrays: fractional coordinates, lattices, species.

Formats: VASP ``vasprun.xml`` (gzipped too) and ``XDATCAR``; extended XYZ (``.extxyz``/``.xyz``)
and ASE ``.traj`` through ASE; pymatgen ``Trajectory`` JSON; numpy ``.npy`` of fractional
coordinates with a structure file beside it (``--structure``) for lattice and species.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superionic.analysis.diffusion import DiffusionInputError

SUPPORTED = (
    "vasprun.xml[.gz], XDATCAR[.gz], .extxyz/.xyz, ASE .traj, pymatgen Trajectory .json[.gz], "
    ".npy (+ --structure)"
)


@dataclass
class TrajectoryArrays:
    """A trajectory as arrays.

    Attributes
    ----------
    frac_coords : ndarray, shape (n_frames, n_atoms, 3)
    lattices : ndarray, shape (3, 3) or (n_frames, 3, 3)
        Lattice vectors as rows, in A.
    species : list of str
        Element symbol per atom.
    """

    frac_coords: np.ndarray
    lattices: np.ndarray
    species: list[str]

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return int(self.frac_coords.shape[0])

    def structure_at(self, frame: int) -> Any:
        """Return the pymatgen Structure of one frame (positions wrapped into the cell)."""
        from pymatgen.core import Lattice, Structure

        lat = self.lattices if self.lattices.ndim == 2 else self.lattices[frame]
        return Structure(Lattice(lat), self.species, self.frac_coords[frame] % 1.0)


def _from_structures(structures: list) -> TrajectoryArrays:
    if not structures:
        raise DiffusionInputError("the trajectory has no frames")
    frac = np.array([s.frac_coords for s in structures])
    lattices = np.array([s.lattice.matrix for s in structures])
    if np.allclose(lattices, lattices[0]):
        lattices = lattices[0]
    return TrajectoryArrays(frac, lattices, [site.specie.symbol for site in structures[0]])


def _from_ase(frames: list) -> TrajectoryArrays:
    if not frames:
        raise DiffusionInputError("the trajectory has no frames")
    frac = np.array([a.get_scaled_positions(wrap=False) for a in frames])
    lattices = np.array([np.asarray(a.cell) for a in frames])
    if np.allclose(lattices, lattices[0]):
        lattices = lattices[0]
    return TrajectoryArrays(frac, lattices, list(frames[0].get_chemical_symbols()))


def from_pymatgen_trajectory(traj: object) -> TrajectoryArrays:
    """Return the arrays of a pymatgen ``Trajectory`` (or its dict), coordinates as positions."""
    from pymatgen.core.trajectory import Trajectory

    if isinstance(traj, dict):
        traj = Trajectory.from_dict(traj)
    if traj.coords_are_displacement:  # type: ignore[attr-defined]
        traj.to_positions()  # type: ignore[attr-defined]
    return TrajectoryArrays(
        np.asarray(traj.coords, dtype=float),  # type: ignore[attr-defined]
        np.asarray(traj.lattice, dtype=float),  # type: ignore[attr-defined]
        [getattr(sp, "symbol", str(sp)) for sp in traj.species],  # type: ignore[attr-defined]
    )


def read_trajectory(path: str | Path, structure: str | Path | None = None) -> TrajectoryArrays:
    """Read a trajectory file.

    Parameters
    ----------
    path : str or Path
        The trajectory.
    structure : str or Path, optional
        For ``.npy`` fractional-coordinate arrays: a structure file giving lattice and species.

    Raises
    ------
    DiffusionInputError
        Unknown format, unreadable file, or no frames.
    """
    p = Path(path)
    if not p.exists():
        raise DiffusionInputError(f"{p}: no such file")
    name = p.name.lower()
    try:
        if name.startswith("vasprun") and (name.endswith(".xml") or name.endswith(".xml.gz")):
            from pymatgen.io.vasp import Vasprun

            run = Vasprun(str(p), parse_dos=False, parse_eigen=False, parse_potcar_file=False)
            return _from_structures(run.structures)
        if name.startswith("xdatcar"):
            from pymatgen.io.vasp import Xdatcar

            return _from_structures(Xdatcar(str(p)).structures)
        if name.endswith((".extxyz", ".xyz", ".traj")):
            from ase.io import read

            return _from_ase(read(str(p), index=":"))
        if name.endswith((".json", ".json.gz")):
            from monty.serialization import loadfn

            return from_pymatgen_trajectory(loadfn(str(p)))
        if name.endswith(".npy"):
            if structure is None:
                raise DiffusionInputError(
                    f"{p}: a .npy trajectory holds only fractional coordinates; give the structure "
                    "(lattice and species) with --structure FILE"
                )
            from pymatgen.core import Structure

            ref = Structure.from_file(str(structure))
            frac = np.load(p)
            if frac.ndim != 3 or frac.shape[1:] != (len(ref), 3):
                raise DiffusionInputError(
                    f"{p}: shape {frac.shape} does not match {len(ref)} atoms of {structure}"
                )
            return TrajectoryArrays(frac, np.asarray(ref.lattice.matrix), [s.specie.symbol for s in ref])
    except DiffusionInputError:
        raise
    except Exception as exc:  # parsers raise many types on malformed files
        raise DiffusionInputError(f"{p}: cannot read as a trajectory ({type(exc).__name__}: {exc})") from None
    raise DiffusionInputError(f"{p}: unsupported trajectory format; supported: {SUPPORTED}")
