"""CP2K NMR: GAPW linear-response shielding (Gamma point only) and a canary for its broken EFG.

Shielding: all-electron GAPW, pob-TZVP-rev2 (``BASIS_pob``) with ``ALL_POTENTIALS``, RUN_TYPE
LINEAR_RESPONSE, diagonalisation + Broyden mixing, Jacobi localisation (MAX_ITER 300,
EPS_LOCALIZATION 1e-3), ``&CURRENT`` GAUGE ATOM / ORBITAL_CENTER ATOM; the tensors come from
``<project>-SHIFT-1.data`` (our parser; pymatgen's ``Cp2kOutput.parse_nmr_shift`` is not
implemented). CP2K's NMR is Gamma-point only: periodic cells shorter than ``min_cell_A``
(10 A default) give nonsense (an 8-atom LiCl cell: Cl sigma_iso = -365 ppm) and are refused; a
molecule in a box is fine and fast. Expensive: a 64-atom LiCl cell took 36 min on one core.

EFG: Debian's cp2k 2023.1 prints wrong GAPW EFG tensors for atoms whose basis has hard l >= 1
functions (``qs_electric_field_gradient.F``, ``vlimit_atom``: ``m_iso = indso(1, iso)`` where
``indso(2, iso)`` is meant), so the one-centre term does not rotate with the structure. At the
start of every CP2K EFG job, :func:`efg_canary` computes HCl along z and along x (in a temporary
folder, removed afterwards): Cl must be axial (eta = 0) with the same |Vzz| both ways; a build that
fails is refused with that reason. The verdict is cached per executable (its resolved path, size
and modification time) under the user's cache folder, so it runs once per CP2K build, and
``validate`` (which runs no executable) reports a cached refusal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from jobflow import job
from pymatgen.core import Lattice, Structure

from superionic.analysis.nmr import efg_parameters, shielding_parameters
from superionic.engines.cp2k import cp2k_command, cp2k_data_dir
from superionic.errors import SuperionicError

BOHR_A = 0.529177210903
# CP2K prints EFG in 1e21 V/m^2 = 10 V/A^2
CP2K_EFG_TO_V_A2 = 10.0
EFG_DEFECT = (
    "this CP2K build computes wrong GAPW EFG tensors for atoms with hard l >= 1 basis functions "
    "(qs_electric_field_gradient.F, vlimit_atom: m_iso = indso(1, iso) where indso(2, iso) is meant): "
    "the canary HCl gives a non-axial Cl tensor that does not rotate with the molecule"
)


def check_cell(structure: Structure, min_cell_A: float = 10.0, where: str = "structure") -> None:
    """Refuse cells with a periodic length below ``min_cell_A`` (CP2K NMR is Gamma only)."""
    abc = structure.lattice.abc
    if min(abc) < min_cell_A:
        raise SuperionicError.single(
            where,
            "CP2K NMR is Gamma-point only: a cell this small gives wrong shieldings "
            f"(lengths {', '.join(f'{x:.2f}' for x in abc)} A)",
            f"min length {min(abc):.2f} A",
            f"a supercell with every length >= {min_cell_A:g} A (or lower min_cell_A knowingly)",
        )


def _kinds(structure: Structure, basis: str) -> str:
    out = []
    for el in sorted({s.specie.symbol for s in structure}):
        out.append(f"    &KIND {el}\n      BASIS_SET {basis}\n      POTENTIAL ALL\n    &END KIND")
    return "\n".join(out)


def _coords(structure: Structure) -> str:
    return "\n".join(f"      {s.specie.symbol} {s.x:.8f} {s.y:.8f} {s.z:.8f}" for s in structure)


def _cell(structure: Structure) -> str:
    m = structure.lattice.matrix
    return "\n".join(f"      {k} {v[0]:.8f} {v[1]:.8f} {v[2]:.8f}" for k, v in zip("ABC", m, strict=True))


def _input(
    structure: Structure,
    project: str,
    run_type: str,
    extra_dft: str,
    properties: str,
    cutoff_Ry: float,
    basis: str,
) -> str:
    return f"""&GLOBAL
  PROJECT {project}
  RUN_TYPE {run_type}
  PRINT_LEVEL LOW
&END GLOBAL
&FORCE_EVAL
  METHOD QS
  &DFT
    BASIS_SET_FILE_NAME BASIS_pob
    POTENTIAL_FILE_NAME ALL_POTENTIALS
    &QS
      METHOD GAPW
    &END QS
    &MGRID
      CUTOFF {cutoff_Ry:g}
      REL_CUTOFF 50
    &END MGRID
    &SCF
      SCF_GUESS ATOMIC
      EPS_SCF 1.0E-7
      MAX_SCF 200
      &DIAGONALIZATION
      &END DIAGONALIZATION
      &MIXING
        METHOD BROYDEN_MIXING
        ALPHA 0.3
      &END MIXING
    &END SCF
{extra_dft}    &XC
      &XC_FUNCTIONAL PBE
      &END XC_FUNCTIONAL
    &END XC
  &END DFT
{properties}  &SUBSYS
    &CELL
{_cell(structure)}
    &END CELL
    &COORD
{_coords(structure)}
    &END COORD
{_kinds(structure, basis)}
  &END SUBSYS
&END FORCE_EVAL
"""


def shielding_input(
    structure: Structure, project: str = "NMR", cutoff_Ry: float = 300.0, basis: str = "pob-TZVP-rev2"
) -> str:
    """CP2K input for GAPW linear-response NMR shielding."""
    props = """  &PROPERTIES
    &LINRES
      PRECONDITIONER FULL_ALL
      EPS 1.0E-8
      &LOCALIZE
        MAX_ITER 300
        EPS_LOCALIZATION 1.0E-3
        METHOD JACOBI
      &END LOCALIZE
      &CURRENT
        GAUGE ATOM
        ORBITAL_CENTER ATOM
      &END CURRENT
      &NMR
        &PRINT
          &SHIELDING_TENSOR
          &END SHIELDING_TENSOR
        &END PRINT
      &END NMR
    &END LINRES
  &END PROPERTIES
"""
    return _input(structure, project, "LINEAR_RESPONSE", "", props, cutoff_Ry, basis)


def efg_input(
    structure: Structure, project: str = "EFG", cutoff_Ry: float = 300.0, basis: str = "pob-TZVP-rev2"
) -> str:
    """CP2K input that prints GAPW electric field gradients into the output."""
    extra = "    &PRINT\n      &ELECTRIC_FIELD_GRADIENT\n      &END ELECTRIC_FIELD_GRADIENT\n    &END PRINT\n"
    return _input(structure, project, "ENERGY", extra, "", cutoff_Ry, basis)


_NUM = r"(-?\d+\.\d+)"


def parse_shift_file(path: Path) -> list[dict[str, Any]]:
    """Per-atom total shielding tensors from a CP2K ``*-SHIFT-1.data`` file.

    Returns documents with ``site``, ``species``, ``position_bohr``, the tensor quantities of
    :func:`superionic.analysis.nmr.shielding_parameters` (from SIGMA TOTAL) and
    ``cp2k_printed_iso_ppm`` (CP2K's ISOTROPY line).
    """
    text = Path(path).read_text()
    blocks = re.split(r"\n\s*(\d+)([A-Z][a-z]?)\s+([A-Z][a-z]?)\s+", "\n" + text.split("\n", 1)[1])
    docs = []
    for k in range(1, len(blocks) - 3, 4):
        index, _label, element, body = int(blocks[k]), blocks[k + 1], blocks[k + 2], blocks[k + 3]
        pos = [float(x) for x in body.split("\n", 1)[0].split()[:3]]
        total = body.split("SIGMA TOTAL", 1)[1]
        vals = [float(v) for v in re.findall(r"=\s*" + _NUM, total)]
        tensor = np.array(vals[:9]).reshape(3, 3)
        iso_printed = float(re.search(r"ISOTROPY =\s*" + _NUM, total).group(1))  # type: ignore[union-attr]
        docs.append(
            {
                "site": index - 1,
                "species": element,
                "position_bohr": pos,
                **shielding_parameters(tensor),
                "cp2k_printed_iso_ppm": iso_printed,
            }
        )
    if not docs:
        raise SuperionicError.single(
            str(path), "no shielding tensors in this file", str(path), "a CP2K *-SHIFT-1.data"
        )
    return docs


def parse_efg_output(path: Path) -> list[dict[str, Any]]:
    """EFG tensors (V/A^2) printed in a CP2K output (PRINT_LEVEL LOW or higher)."""
    text = Path(path).read_text()
    out = []
    pattern = re.compile(r"^\s*(\d+)\s+([A-Z][a-z]?)\s+EFG Tensor\s+" + r"\s+".join([_NUM] * 9), re.M)
    for m in pattern.finditer(text):
        t = np.array([float(x) for x in m.groups()[2:]]).reshape(3, 3) * CP2K_EFG_TO_V_A2
        out.append({"site": int(m.group(1)) - 1, "species": m.group(2), **efg_parameters(t, 0.0)})
    return out


def run_cp2k(inp: str, workdir: Path, project: str) -> Path:
    """Write ``{project}.inp``, run CP2K there and return the output file."""
    from superionic.engines.guard import require_engine

    require_engine("cp2k")  # where the job runs (submit does not need CP2K)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / f"{project}.inp").write_text(inp)
    env = {**os.environ, "CP2K_DATA_DIR": str(cp2k_data_dir())}
    cmd = [*cp2k_command().split(), "-i", f"{project}.inp", "-o", f"{project}.out"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    out = workdir / f"{project}.out"
    if proc.returncode != 0 or not out.is_file() or "PROGRAM ENDED" not in out.read_text():
        tail = out.read_text()[-1500:] if out.is_file() else proc.stderr[-1500:]
        raise RuntimeError(f"CP2K failed in {workdir} (exit {proc.returncode}):\n{tail}")
    return out


def cp2k_shielding(
    structure: Structure, workdir: Path, min_cell_A: float = 10.0, cutoff_Ry: float = 300.0
) -> list[dict[str, Any]]:
    """Run CP2K linear-response NMR on a structure and return per-site shielding documents."""
    check_cell(structure, min_cell_A)
    run_cp2k(shielding_input(structure, "NMR", cutoff_Ry), workdir, "NMR")
    return parse_shift_file(workdir / "NMR-SHIFT-1.data")


def _hcl(axis: int) -> Structure:
    coords = np.full((2, 3), 4.0)
    coords[0, axis], coords[1, axis] = 3.36, 4.64
    return Structure(Lattice.cubic(8.0), ["H", "Cl"], coords, coords_are_cartesian=True)


def efg_cache_dir() -> Path:
    """Return the folder of superionic's per-machine cache.

    ``SUPERIONIC_CACHE_DIR`` if set (tests point it at a temporary folder), else
    ``$XDG_CACHE_HOME/superionic``, else ``~/.cache/superionic``.
    """
    if os.environ.get("SUPERIONIC_CACHE_DIR"):
        return Path(os.environ["SUPERIONIC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "superionic"


def efg_verdict_file(command: str | None = None) -> Path | None:
    """Return the file caching the EFG canary's verdict for a CP2K command's executable.

    The key is the executable's resolved path, size and modification time, so a rebuilt or
    replaced CP2K is checked again. None when the executable is not found.
    """
    from superionic.engines.guard import executable_of

    found = shutil.which(executable_of(command or cp2k_command()))
    if found is None:
        return None
    exe = Path(found).resolve()
    info = exe.stat()
    key = hashlib.sha1(f"{exe}:{info.st_size}:{info.st_mtime_ns}".encode()).hexdigest()[:16]
    return efg_cache_dir() / f"cp2k_efg_{key}.json"


def cached_efg_verdict(command: str | None = None) -> tuple[bool, str] | None:
    """Return the cached ``(ok, reason)`` of the EFG canary for this CP2K, or None (never runs CP2K)."""
    path = efg_verdict_file(command)
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return bool(data["ok"]), str(data["reason"])
    except (OSError, ValueError, KeyError, TypeError):  # unreadable: run the canary again
        return None


def efg_canary(workdir: Path | None = None, tol: float = 0.05) -> tuple[bool, str]:
    """Check the installed CP2K's GAPW EFG on HCl along z and along x (cached per executable).

    Parameters
    ----------
    workdir : Path, optional
        Where to run the two CP2K calculations (kept); default a temporary folder, removed.
    tol : float
        Largest eta_Q, and relative |Vzz| difference between the orientations, that passes.

    Returns
    -------
    tuple of (bool, str)
        ``(ok, reason)``: Cl must be axial (eta_Q < tol) and |Vzz| must not depend on the
        molecule's orientation; ``reason`` is empty when it passes.

    """
    cached = cached_efg_verdict()
    if cached is not None:
        return cached
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="superionic-efg-canary-") as tmp:
            return efg_canary(Path(tmp), tol)
    results = []
    for axis, name in ((2, "z"), (0, "x")):
        out = run_cp2k(
            efg_input(_hcl(axis), f"CANARY{name.upper()}"),
            workdir / f"canary_{name}",
            f"CANARY{name.upper()}",
        )
        cl = next(d for d in parse_efg_output(out) if d["species"] == "Cl")
        results.append(cl)
    etas = [r["eta_q"] for r in results]
    vzz = [abs(r["efg_principal_V_A2"][2]) for r in results]
    ok = max(etas) < tol and abs(vzz[0] - vzz[1]) < tol * max(vzz)
    reason = (
        ""
        if ok
        else (
            f"{EFG_DEFECT} (HCl along z: Cl eta = {etas[0]:.2f}, |Vzz| = {vzz[0]:.1f} V/A^2; "
            f"along x: eta = {etas[1]:.2f}, |Vzz| = {vzz[1]:.1f} V/A^2)"
        )
    )
    cache = efg_verdict_file()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps({"ok": ok, "reason": reason}))
        partial.replace(cache)  # atomic: a worker reading at the same time sees all of it or nothing
    return ok, reason


def require_trustworthy_efg(workdir: Path | None = None) -> None:
    """Raise when the installed CP2K fails the EFG canary (at the start of every CP2K EFG job).

    The canary runs in ``workdir`` (default: a temporary folder, removed) unless its verdict for
    this executable is cached.
    """
    ok, reason = efg_canary(workdir)
    if not ok:
        raise SuperionicError.single(
            "nmr.efg (engine cp2k)", reason, "cp2k", "engine vasp for the EFG, or a fixed CP2K build"
        )


@job
def cp2k_nmr(
    structure: Structure | dict,
    label: str,
    efg: bool = False,
    min_cell_A: float = 10.0,
    cutoff_Ry: float = 300.0,
) -> dict[str, Any]:
    """CP2K GAPW shielding of one structure (Gamma point only), as a job.

    With ``efg``, the EFG canary runs first and refuses a CP2K build that computes wrong tensors.
    """
    s = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
    here = Path.cwd()
    if efg:
        require_trustworthy_efg()  # cached per CP2K executable; run in a temporary folder
    sites = cp2k_shielding(s, here / "cp2k_nmr", min_cell_A=min_cell_A, cutoff_Ry=cutoff_Ry)
    return {"label": label, "sites": sites, "structure": s.as_dict(), "engine": "cp2k"}
