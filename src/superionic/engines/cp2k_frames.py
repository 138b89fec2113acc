"""DFT frames (energy, forces, stress, structure) from CP2K outputs, in CHGNet's units.

Why not pymatgen's ``Cp2kOutput``: it keeps CP2K's forces in atomic units and its stress in
CP2K's sign, and pairs structures with energies by position in a list, which a geometry
optimisation (several force evaluations per step) breaks. Two cases are read, each unambiguous:

* a single point (RUN_TYPE ENERGY_FORCE): the log's coordinates, cell, energy, forces and stress;
* an MD run or a geometry / cell optimisation that printed forces (``*-frc-1.xyz`` beside
  ``*-pos-1.xyz``): frames paired by their step number ``i =``, energies from the position file,
  the cell from ``*-1.cell`` or the log, and for an optimisation the stress from ``*-1.stress``
  (bar; in MD that file adds the atoms' kinetic pressure, so MD frames carry no stress).

Units: energy Ha -> eV, forces Ha/bohr -> eV/A, stress GPa with CP2K's sign flipped (CP2K prints
compression positive; CHGNet and ASE use tension positive, as ASE's CP2K calculator does).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from monty.io import zopen
from pymatgen.core import Lattice, Structure

from superionic.errors import SuperionicError

HA_TO_EV = 27.211386245988
HA_PER_BOHR_TO_EV_PER_A = HA_TO_EV / 0.529177210903
_STEP = re.compile(r"\bi\s*=\s*(\d+)")
_ENERGY = re.compile(r"\bE\s*=\s*(-?\d+\.\d+)")


def _frame(
    structure: Structure,
    energy: float,
    forces: np.ndarray,
    stress: np.ndarray | None,
    path: Path,
    settings: str,
):
    from superionic.engines.finetune import DFTFrame

    return DFTFrame(structure, energy, forces, stress, "cp2k", str(path), str(path.parent), settings)


#: the functional's name line of a CP2K log (``FUNCTIONAL| PBE:``; not ``FUNCTIONAL| ROUTINE=NEW``)
_FUNCTIONAL = re.compile(r"^\s*FUNCTIONAL\|\s+([A-Za-z0-9_+-]+):\s*$")


def read_log(path: Path) -> dict:
    """Parse a CP2K log: run type, cell, coordinates, settings and its force evaluations.

    Each evaluation holds the energy (eV) and, when printed, forces (eV/A) and stress (GPa,
    tension positive). ``settings`` names what sets the energy scale (functional, cut-off, k-points).
    """
    run_type, cell, coords, evaluations = None, [], [], []
    settings: dict[str, str] = {}
    with zopen(path, "rt") as fh:
        lines = iter(fh)
        for line in lines:
            if "GLOBAL| Run type" in line:
                run_type = line.split()[-1]
            elif "DFT| Exchange-correlation function" in line:
                settings.setdefault("xc", line.split()[-1])
            elif "QS| Multi grid cutoff" in line and "1)" in line:
                settings.setdefault("cutoff_Ha", line.split()[-1])
            elif "QS| Density cutoff" in line:
                settings.setdefault("cutoff_Ha", line.split()[-1])
            elif "BRILLOUIN| K-point scheme" in line:
                settings.setdefault("k", line.split()[-1])
            elif "BRILLOUIN| List of Kpoints" in line:  # the scheme alone ("General") hides the mesh
                settings.setdefault("k_points", line.split()[-1])
            elif (functional := _FUNCTIONAL.match(line)) is not None:
                settings.setdefault("xc", functional.group(1))
            elif line.lstrip().startswith("CELL| Vector") and len(cell) < 3:
                cell.append([float(x) for x in line.split(":")[1].split()[:3]])
            elif "ATOMIC COORDINATES IN ANGSTROM" in line.upper() and not coords:  # CP2K 2023: upper case
                for row in lines:
                    parts = row.split()
                    if coords and not parts:
                        break
                    if len(parts) >= 7 and parts[0].isdigit():
                        coords.append((parts[2], [float(x) for x in parts[4:7]]))
            elif "ENERGY| Total FORCE_EVAL" in line:
                evaluations.append({"energy": float(line.split()[-1]) * HA_TO_EV})
            elif "ATOMIC FORCES in [a.u.]" in line and evaluations:
                forces = []
                for row in lines:
                    if "SUM OF ATOMIC FORCES" in row:
                        break
                    parts = row.split()
                    if len(parts) >= 6 and parts[0].isdigit():
                        forces.append([float(x) for x in parts[3:6]])
                evaluations[-1]["forces"] = np.array(forces) * HA_PER_BOHR_TO_EV_PER_A
            elif "STRESS| Analytical stress tensor [GPa]" in line and evaluations:
                next(lines)  # the x y z header
                rows = [next(lines).split()[-3:] for _ in range(3)]
                evaluations[-1]["stress"] = -np.array(rows, dtype=float)  # CP2K's sign -> tension positive
    key = ", ".join(f"{k} {v}" for k, v in sorted(settings.items()))
    return {"run_type": run_type, "cell": cell, "coords": coords, "evaluations": evaluations, "settings": key}


def cp2k_output_frames(path: Path) -> list:
    """Return the DFT frames of one CP2K run (its log ``path``); see the module docstring.

    Raises
    ------
    SuperionicError
        A run that printed no forces, or frames that cannot be paired with positions.
    """
    log = read_log(path)
    evaluations = log["evaluations"]
    folder = path.parent
    frc = sorted(folder.glob("*-frc-1.xyz*"))
    if log["run_type"] == "ENERGY_FORCE":
        if not evaluations or "forces" not in evaluations[-1]:
            raise SuperionicError.single(
                str(path), "frames without forces", "no ATOMIC FORCES", "CP2K runs with PRINT FORCES ON"
            )
        if len(log["cell"]) != 3 or not log["coords"]:
            raise SuperionicError.single(str(path), "no cell or coordinates in the log", "", "a CP2K log")
        species = [s for s, _ in log["coords"]]
        structure = Structure(
            Lattice(log["cell"]), species, [c for _, c in log["coords"]], coords_are_cartesian=True
        )
        e = evaluations[-1]
        return [_frame(structure, e["energy"], e["forces"], e.get("stress"), path, log["settings"])]
    pos = sorted(folder.glob("*-pos-1.xyz*"))
    if not frc or not pos:
        raise SuperionicError.single(
            str(path),
            "frames without forces",
            f"{log['run_type']} run without *-frc-1.xyz",
            "single points (ENERGY_FORCE), or MD with MOTION/PRINT/FORCES on",
        )
    positions = _xyz_frames(pos[0])
    forces = _xyz_frames(frc[0])
    cells = _cells(folder, log["cell"])
    # *-1.stress holds CP2K's total pressure tensor, with the atoms' kinetic part in MD: only an
    # optimisation's (no velocities) is the DFT stress a single point gives
    stresses = _stresses(folder) if log["run_type"] in ("GEO_OPT", "CELL_OPT") else {}
    frames = []
    for step, (species, cart, energy) in positions.items():
        if step not in forces:
            continue
        lattice = cells.get(step, cells.get(-1))
        if lattice is None:
            raise SuperionicError.single(
                str(path), "no cell for MD step", step, "a *-1.cell file or the log's cell"
            )
        structure = Structure(Lattice(lattice), species, cart, coords_are_cartesian=True)
        force = forces[step][1] * HA_PER_BOHR_TO_EV_PER_A
        frames.append(_frame(structure, energy, force, stresses.get(step), path, log["settings"]))
    if not frames:
        raise SuperionicError.single(str(path), "no MD step has both positions and forces", "", "")
    return frames


def xyz_frames(path: Path) -> Iterator[tuple[int | None, str, list[str], np.ndarray]]:
    """Yield CP2K's xyz trajectory a frame at a time: ``(step, comment, species, values (n, 3))``.

    ``step`` is the comment's ``i =`` (``None`` when CP2K wrote none); a frame cut off mid-write
    (a running or killed job) ends the file. Positions (A) or forces (Ha/bohr), as written.
    """
    with zopen(path, "rt") as fh:
        while True:
            count = fh.readline()
            if not count.strip():
                return
            comment = fh.readline()
            rows = [fh.readline().split() for _ in range(int(count))]
            if len(rows[-1]) < 4:
                return
            step = _STEP.search(comment)
            values = np.array([[float(x) for x in r[1:4]] for r in rows])
            yield (int(step.group(1)) if step else None), comment, [r[0] for r in rows], values


def _xyz_frames(path: Path) -> dict[int, tuple[list[str], np.ndarray, float]]:
    """CP2K's xyz trajectory: ``{step: (species, values (n, 3), energy eV)}``."""
    out = {}
    for step, comment, species, values in xyz_frames(path):
        energy = _ENERGY.search(comment)
        out[len(out) if step is None else step] = (
            species,
            values,
            float(energy.group(1)) * HA_TO_EV if energy else float("nan"),
        )
    return out


def read_cells(path: Path) -> dict[int, np.ndarray]:
    """Cell per step from CP2K's ``*-1.cell`` (step, time, Ax Ay Az Bx By Bz Cx Cy Cz, volume)."""
    rows = np.atleast_2d(np.loadtxt(path, comments="#"))  # loadtxt reads .gz itself
    return {int(r[0]): r[2:11].reshape(3, 3) for r in rows}


def _cells(folder: Path, log_cell: list[list[float]]) -> dict[int, np.ndarray]:
    """Cell per MD step from ``*-1.cell`` (``-1``: the log's cell, used when the file is absent)."""
    out: dict[int, np.ndarray] = {}
    if len(log_cell) == 3:
        out[-1] = np.array(log_cell)
    for path in sorted(folder.glob("*-1.cell*")):
        out.update(read_cells(path))
    return out


def _stresses(folder: Path) -> dict[int, np.ndarray]:
    """Stress per step (GPa, tension positive) from ``*-1.stress`` (CP2K: bar, compression positive)."""
    out: dict[int, np.ndarray] = {}
    for path in sorted(folder.glob("*-1.stress*")):
        rows = np.atleast_2d(np.loadtxt(path, comments="#"))
        out.update({int(r[0]): -1e-4 * r[2:11].reshape(3, 3) for r in rows})
    return out
