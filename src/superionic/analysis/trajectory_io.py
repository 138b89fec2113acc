"""Read MD trajectories into arrays: fractional coordinates, lattices, species.

Formats: VASP ``vasprun.xml`` and ``XDATCAR``; extended XYZ (``.extxyz``/``.xyz``) and ASE
``.traj`` through ASE; pymatgen ``Trajectory`` JSON; numpy ``.npy`` of fractional coordinates with
a structure file beside it (``--structure``) for lattice and species. Any of them may be gzip, bzip2
or xz compressed. The format is taken from the file name (``XDATCAR`` or ``vasprun`` anywhere in
it, or the extension), else from the file's first bytes, or forced with ``fmt``.
"""

from __future__ import annotations

import bz2
import gzip
import itertools
import lzma
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from superionic.analysis.diffusion import DiffusionInputError

#: Trajectory formats ``read_trajectory`` (and ``--format``) accepts, with what each is.
FORMATS: dict[str, str] = {
    "vasprun": "VASP vasprun.xml",
    "xdatcar": "VASP 5+ XDATCAR",
    "extxyz": "extended XYZ (.extxyz, .xyz)",
    "traj": "ASE trajectory (.traj)",
    "json": "pymatgen Trajectory JSON",
    "npy": "numpy fractional coordinates (+ --structure)",
}
SUPPORTED = (
    "vasprun.xml, XDATCAR, .extxyz/.xyz, ASE .traj, pymatgen Trajectory .json, .npy (+ --structure); "
    "gz/bz2/xz compressed too"
)
_EXTENSIONS = {"traj": "traj", "extxyz": "extxyz", "xyz": "extxyz", "json": "json", "npy": "npy"}
_COMPRESSED = {"gz": "gzip", "bz2": "bzip2", "xz": "xz"}
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_OPENERS: dict[str, Any] = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}


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
    dropped_frames : int
        Incomplete frames left out (an XDATCAR cut off mid-frame).
    warnings : list of str
        What the reader changed or could not use, one line each.
    """

    frac_coords: np.ndarray
    lattices: np.ndarray
    species: list[str]
    dropped_frames: int = 0
    warnings: list[str] = field(default_factory=list)

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
    lattices = np.array([np.asarray(a.cell) for a in frames])
    if np.any(np.abs(np.linalg.det(lattices)) < 1e-6):
        raise DiffusionInputError(
            "a frame has no periodic cell (plain XYZ?): diffusion needs the cell; write extended XYZ "
            "with Lattice=, or give an XDATCAR/vasprun.xml/.traj"
        )
    frac = np.array([a.get_scaled_positions(wrap=False) for a in frames])
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


def _compression(path: Path) -> str | None:
    """Return the compression of a file from its magic bytes (``gzip``, ``bzip2``, ``xz``) or None."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _open(path: Path, mode: str = "rt") -> IO[Any]:
    kind = _compression(path)
    if kind is None:
        return open(path, mode) if "b" in mode else open(path, mode, encoding="utf-8", errors="replace")
    if "b" in mode:
        return _OPENERS[kind](path, mode)
    return _OPENERS[kind](path, mode, encoding="utf-8", errors="replace")


def _sniff(path: Path) -> str | None:
    """Guess the format from the first bytes (after decompression), or None."""
    try:
        with _open(path, "rb") as fh:
            head = fh.read(4096)
    except (OSError, EOFError, lzma.LZMAError):
        return None
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"- of Ulm", b"AFFormat", b"PickleTrajectory")):
        return "traj"
    text = head.decode("latin-1")
    stripped = text.lstrip()
    if stripped.startswith("<") and "<modeling" in text:
        return "vasprun"
    if stripped.startswith("{"):
        return "json"
    lines = text.splitlines()
    if any("configuration=" in line for line in lines[7:40]) and _floats(lines[1:2]) is not None:
        return "xdatcar"
    if len(lines) >= 2 and lines[0].strip().isdigit():
        return "extxyz"
    return None


def _floats(lines: list[str]) -> list[float] | None:
    try:
        return [float(x) for line in lines for x in line.split()]
    except ValueError:
        return None


def detect_format(path: str | Path) -> str:
    """Return the trajectory format of a file: one of :data:`FORMATS`.

    The name decides first: its extension (ignoring ``.gz``/``.bz2``/``.xz``) when it is one of
    ``.traj .extxyz .xyz .json .npy``, else ``XDATCAR`` or ``vasprun`` anywhere in it (any case:
    ``Li6PS5Cl_XDATCAR.gz``, ``run1.xdatcar``, ``vasprun.xml.600K.gz``), else one of those
    extensions anywhere among its dot-separated parts. Failing that, the file's first bytes.

    Raises
    ------
    DiffusionInputError
        When neither the name nor the content tells.
    """
    p = Path(path)
    parts = p.name.lower().split(".")
    while len(parts) > 1 and parts[-1] in _COMPRESSED:
        parts.pop()
    if len(parts) > 1 and parts[-1] in _EXTENSIONS:
        return _EXTENSIONS[parts[-1]]
    stem = ".".join(parts)
    if "xdatcar" in stem:
        return "xdatcar"
    if "vasprun" in stem:
        return "vasprun"
    for part in parts[1:]:
        if part in _EXTENSIONS:
            return _EXTENSIONS[part]
    sniffed = _sniff(p)
    if sniffed is None:
        raise DiffusionInputError(
            f"{p}: cannot tell the trajectory format from the name or the first bytes; name the file "
            f"(XDATCAR, vasprun.xml, .extxyz, .traj, .json, .npy) or give --format, one of: "
            + ", ".join(FORMATS)
        )
    return sniffed


@contextmanager
def _named_for(path: Path, suffix: str) -> Iterator[Path]:
    """Yield a path whose name tells a name-driven parser (pymatgen, ASE) how to open the file.

    Those parsers choose decompression from the file name; a renamed file (``vasprun.xml.600K``
    that is gzipped, ``run1.dat``) is decompressed to a temporary file with the plain ``suffix``.
    """
    kind = _compression(path)
    if kind is None and not path.name.lower().endswith(tuple(f".{c}" for c in _COMPRESSED)):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="superionic-") as tmp:
        target = Path(tmp) / f"trajectory{suffix}"
        with _open(path, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        yield target


_CONFIG = re.compile(r"^\s*(direct|cartesian)\b.*configuration", re.IGNORECASE)


def _is_coordinate_line(line: str) -> bool:
    """Whether a line starts with three numbers (writers may append a species label)."""
    tokens = line.split()
    return len(tokens) >= 3 and _floats([" ".join(tokens[:3])]) is not None


def _xdatcar_header(lines: list[str], first: int, path: Path) -> tuple[np.ndarray, list[str], list[int]]:
    """Parse a 7-line cell header (``first`` = its 1-based line number): lattice, species, counts."""
    from pymatgen.core.periodic_table import Element

    scale = _floats(lines[1:2])
    rows = _floats(lines[2:5])
    if scale is None or len(scale) not in (1, 3) or rows is None or len(rows) != 9:
        raise DiffusionInputError(
            f"{path}: line {first}: not an XDATCAR cell header (comment, scale, 3 lattice vectors, species, "
            f"counts): {' | '.join(line.strip() for line in lines[:5])!r}"
        )
    lattice = np.array(rows).reshape(3, 3)
    if len(scale) == 3:  # VASP: three factors scale the x, y and z components
        lattice = lattice * np.array(scale)[None, :]
    elif scale[0] < 0:  # VASP: a negative scale is the cell volume
        lattice = lattice * (-scale[0] / abs(np.linalg.det(lattice))) ** (1 / 3)
    else:
        lattice = lattice * scale[0]
    species_line, counts_line = lines[5].strip(), lines[6].strip()
    if _floats([species_line]) is not None:
        raise DiffusionInputError(
            f"{path}: line {first + 5}: expected the species line (e.g. 'Li P S Cl'), got {species_line!r}; "
            "VASP 4 XDATCARs without element names are not supported: add the species line"
        )
    # VASP 6 may write POTCAR labels such as 'Li_sv/...'; the element is the part before '_' or '/'
    species = [re.split(r"[_/]", tok)[0] for tok in species_line.split()]
    bad = [s for s in species if not Element.is_valid_symbol(s)]
    if bad:
        raise DiffusionInputError(
            f"{path}: line {first + 5}: species line {species_line!r} names unknown elements {bad}"
        )
    try:
        counts = [int(tok) for tok in counts_line.split()]
    except ValueError:
        counts = []
    if len(counts) != len(species) or any(c <= 0 for c in counts):
        raise DiffusionInputError(
            f"{path}: line {first + 6}: counts line {counts_line!r} does not match the species line "
            f"(line {first + 5}) {species_line!r}: need {len(species)} positive atom counts, one per element"
        )
    return lattice, species, counts


def read_xdatcar(path: str | Path) -> TrajectoryArrays:
    """Read a VASP 5+ XDATCAR (constant or per-frame cell), gzip/bzip2/xz compressed or not.

    Written here rather than taken from pymatgen's ``Xdatcar`` or ASE's reader because a run
    killed at walltime leaves a frame cut off mid-way (pymatgen raises IndexError, losing every
    complete frame), and a counts line that disagrees with the species line must be refused
    (pymatgen zips them and silently drops the unmatched species). The file is streamed: memory
    holds the coordinates, not the text.

    Returns
    -------
    TrajectoryArrays
        All complete frames; ``dropped_frames`` (0 or 1) and ``warnings`` say whether an
        incomplete last frame (fewer atom lines, or a last line without its newline) was left out.

    Raises
    ------
    DiffusionInputError
        A malformed header, species/counts mismatch, a changed atom list between frames, a
        malformed coordinate line, or no complete frame.
    """
    p = Path(path)
    frames: list[np.ndarray] = []
    lattices: list[np.ndarray] = []
    incomplete = ""
    with _open(p) as fh:
        lineno = 0

        def take(k: int) -> list[str]:
            nonlocal lineno
            got = list(itertools.islice(fh, k))
            lineno += len(got)
            return got

        header = take(7)
        if len(header) < 7:
            raise DiffusionInputError(
                f"{p}: an XDATCAR starts with a 7-line header; the file has {len(header)} lines"
            )
        lattice, species, counts = _xdatcar_header(header, 1, p)
        counts_line = header[6].strip()
        n_atoms = sum(counts)
        while line := next(iter(take(1)), ""):
            if not line.strip():
                continue
            start = lineno
            m = _CONFIG.match(line)
            if m is None:  # a repeated header: variable-cell (NpT) XDATCAR
                if _is_coordinate_line(line):
                    raise DiffusionInputError(
                        f"{p}: line {start}: expected 'Direct configuration=' or a new cell header after "
                        f"the {n_atoms} atoms of frame {len(frames)}, got a coordinate line "
                        f"{line.strip()!r}; the counts line (line 7: {counts_line!r}) does not add up to "
                        "the atoms per frame"
                    )
                rest = take(6)
                if len(rest) < 6 or not rest[-1].endswith("\n"):
                    incomplete = f"the cell header at line {start} is cut off"
                    break
                lattice, sp, cn = _xdatcar_header([line, *rest], start, p)
                if sp != species or cn != counts:
                    raise DiffusionInputError(
                        f"{p}: line {start + 5}: the atoms change between frames ({' '.join(sp)} / "
                        f"{' '.join(map(str, cn))} after {' '.join(species)} / {counts_line})"
                    )
                continue
            block = take(n_atoms)
            # a file may just lack its final newline: the last line is cut only if it is shorter
            # than its (fixed-width) neighbour or is not three numbers
            last_cut = (
                bool(block)
                and not block[-1].endswith("\n")
                and (
                    not _is_coordinate_line(block[-1])
                    or (len(block) > 1 and len(block[-1].rstrip()) < len(block[-2].rstrip()))
                )
            )
            if len(block) < n_atoms or last_cut:
                cut = len(block) == n_atoms
                incomplete = (
                    f"frame {len(frames) + 1} (line {start}) has {len(block) - cut} of {n_atoms} atom lines"
                    + (" and its last line is cut" if cut else "")
                )
                break
            try:
                coords = np.array([row.split()[:3] for row in block], dtype=float)
            except ValueError:
                bad = next(k for k, row in enumerate(block) if not _is_coordinate_line(row))
                raise DiffusionInputError(
                    f"{p}: line {start + 1 + bad}: expected 3 fractional coordinates, "
                    f"got {block[bad].strip()!r}"
                ) from None
            if m.group(1).lower() == "cartesian":
                coords = coords @ np.linalg.inv(lattice)
            frames.append(coords)
            lattices.append(lattice)
    if not frames:
        raise DiffusionInputError(
            f"{p}: no complete frame" + (f" ({incomplete})" if incomplete else " after the header")
        )
    lat = np.array(lattices)
    symbols = [s for s, c in zip(species, counts, strict=True) for _ in range(c)]
    out = TrajectoryArrays(np.array(frames), lat[0] if np.allclose(lat, lat[0]) else lat, symbols)
    if incomplete:
        out.dropped_frames = 1
        out.warnings.append(
            f"{p}: the file ends inside a frame ({incomplete}; a run cut off at walltime?): "
            f"using the {len(frames)} complete frames, dropped 1 incomplete frame"
        )
    return out


def read_trajectory(
    path: str | Path, structure: str | Path | None = None, fmt: str | None = None
) -> TrajectoryArrays:
    """Read a trajectory file.

    Parameters
    ----------
    path : str or Path
        The trajectory, compressed or not.
    structure : str or Path, optional
        For ``.npy`` fractional-coordinate arrays: a structure file giving lattice and species.
    fmt : str, optional
        Force the format, one of :data:`FORMATS`; by default :func:`detect_format` decides.

    Raises
    ------
    DiffusionInputError
        Unknown format, unreadable file, or no frames.
    """
    p = Path(path)
    if not p.exists():
        raise DiffusionInputError(f"{p}: no such file")
    if fmt is not None and fmt not in FORMATS:
        raise DiffusionInputError(
            f"--format {fmt!r} is not a known trajectory format; valid: {', '.join(FORMATS)}"
        )
    kind = fmt or detect_format(p)
    try:
        if kind == "vasprun":
            from pymatgen.io.vasp import Vasprun

            with _named_for(p, ".xml") as f, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # a run killed at walltime leaves the XML unterminated: keep the complete ionic steps
                try:
                    run = Vasprun(
                        str(f),
                        parse_dos=False,
                        parse_eigen=False,
                        parse_potcar_file=False,
                        exception_on_bad_xml=False,
                    )
                except Exception:
                    if any("malformed" in str(w.message).lower() for w in caught):
                        raise DiffusionInputError(
                            f"{p}: malformed XML before the first complete ionic step (not a vasprun.xml, "
                            "or cut off before the first step ended)"
                        ) from None
                    raise
            out = _from_structures(run.structures)
            if any("malformed" in str(w.message).lower() for w in caught):
                with _open(p) as fh:
                    started = fh.read().count("<calculation>")
                out.dropped_frames = max(started - out.n_frames, 0)
                out.warnings.append(
                    f"{p}: the XML ends early (a run cut off at walltime?): using the {out.n_frames} "
                    f"complete ionic steps, dropped {out.dropped_frames} incomplete"
                )
            return out
        if kind == "xdatcar":
            return read_xdatcar(p)
        if kind in ("extxyz", "traj"):
            from ase.io import read

            with _named_for(p, f".{kind}") as f:
                return _from_ase(read(str(f), index=":", format=kind))
        if kind == "json":
            from monty.serialization import loadfn

            with _named_for(p, ".json") as f:
                return from_pymatgen_trajectory(loadfn(str(f)))
        if structure is None:
            raise DiffusionInputError(
                f"{p}: a .npy trajectory holds only fractional coordinates; give the structure "
                "(lattice and species) with --structure FILE"
            )
        from pymatgen.core import Structure

        ref = Structure.from_file(str(structure))
        with _open(p, "rb") as fh:
            frac = np.load(fh)
        if frac.ndim != 3 or frac.shape[1:] != (len(ref), 3):
            raise DiffusionInputError(
                f"{p}: shape {frac.shape} does not match {len(ref)} atoms of {structure}"
            )
        return TrajectoryArrays(frac, np.asarray(ref.lattice.matrix), [s.specie.symbol for s in ref])
    except DiffusionInputError:
        raise
    except Exception as exc:  # parsers raise many types on malformed files
        raise DiffusionInputError(
            f"{p}: cannot read as a {FORMATS[kind]} trajectory ({type(exc).__name__}: {exc})"
            + ("" if fmt else "; if that is the wrong format, give --format, one of: " + ", ".join(FORMATS))
        ) from None
