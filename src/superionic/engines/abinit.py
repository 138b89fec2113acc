"""ABINIT EFG: the local route to quadrupolar couplings that works (PAW, ``prtefg 2``).

Debian's abinit 9.6.2 computes EFGs in seconds to minutes for small PAW cells. Datasets: the
JTH v1.0 PBE PAW files in ``/usr/share/abinit/psp/Pseudodojo_paw_pbe_standard/`` (or
``$SUPERIONIC_ABINIT_PAW_DIR``); they exist for N, O, Al, Na, P, Si and a few others, not for B,
S or Li. Elements without a dataset are refused with a clear message; JTH is never mixed with
older atompaw files. Keywords: ``prtefg 2`` and ``quadmom`` (barn), not ``nucefg``.
alpha-Al2O3 (10 atoms, ecut 20 Ha, 4x4x4): 27Al C_Q 2.03 MHz, eta 0, about 30 s on one core.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import job
from pymatgen.core import Element, Structure

from superionic.analysis.nmr import default_isotope, efg_parameters, quadrupole_table
from superionic.engines.base import Engine, SystemView
from superionic.engines.settings import AbinitNMRSettings
from superionic.errors import Problem, SuperionicError

if TYPE_CHECKING:
    from jobflow import Flow

# 1 atomic unit of EFG (Ha / (e bohr^2)) in V/A^2
EFG_AU_TO_V_A2 = 97.1736242922


def paw_dir() -> Path:
    """Folder of the JTH PAW datasets."""
    return Path(
        os.environ.get("SUPERIONIC_ABINIT_PAW_DIR", "/usr/share/abinit/psp/Pseudodojo_paw_pbe_standard")
    )


def abinit_available() -> tuple[bool, str]:
    """Whether ``abinit`` and its PAW datasets are installed."""
    if shutil.which("abinit") is None:
        return False, "abinit is not on PATH (Debian: apt-get install abinit abinit-data)"
    if not paw_dir().is_dir():
        return (
            False,
            f"no PAW datasets in {paw_dir()} (apt-get install abinit-data, or SUPERIONIC_ABINIT_PAW_DIR)",
        )
    return True, "abinit"


def datasets(elements: list[str]) -> dict[str, Path]:
    """PAW dataset file per element, or an error naming every element without one."""
    folder = paw_dir()
    found = {el: folder / f"{el}.xml" for el in elements}
    missing = [el for el, p in found.items() if not p.is_file()]
    if missing:
        have = sorted(p.stem for p in folder.glob("*.xml"))
        raise SuperionicError.single(
            "engine abinit",
            f"no JTH PAW dataset for {', '.join(missing)} in {folder}",
            missing,
            f"structures made of {', '.join(have)} (or engine vasp for the EFG)",
        )
    return found


def efg_input(
    structure: Structure,
    isotopes: list[str] | None = None,
    ecut_Ha: float = 20.0,
    pawecutdg_Ha: float = 40.0,
    kpoint_spacing_per_A: float = 0.3,
) -> str:
    """ABINIT input for a PAW ground state that prints EFGs (``prtefg 2``) with ``quadmom`` per type."""
    els = list(dict.fromkeys(s.specie.symbol for s in structure))
    paths = datasets(els)
    moments = quadrupole_table()["moments_mb"]
    quad = [moments.get(default_isotope(el, isotopes or []), 0.0) / 1000.0 for el in els]  # mb -> barn
    # ABINIT picks a symmetric k-lattice whose real-space supercell is at least this long (bohr)
    kptrlen_bohr = 2 * np.pi / kpoint_spacing_per_A / 0.529177210903
    lines = ["# superionic: EFG (prtefg 2)", "acell 3*1.0 Angstrom", "rprim"]
    lines += ["  " + " ".join(f"{x:.10f}" for x in v) for v in structure.lattice.matrix]
    lines += [
        f"natom {len(structure)}",
        f"ntypat {len(els)}",
        "znucl " + " ".join(str(Element(el).Z) for el in els),
        "typat " + " ".join(str(els.index(s.specie.symbol) + 1) for s in structure),
        "xred",
    ]
    lines += ["  " + " ".join(f"{c:.10f}" for c in s.frac_coords) for s in structure]
    lines += [
        f"ecut {ecut_Ha:g}",
        f"pawecutdg {pawecutdg_Ha:g}",
        f"kptrlen {kptrlen_bohr:.4f}",
        "occopt 1",
        "toldfe 1.0d-10",
        "nstep 80",
        "prtefg 2",
        "quadmom " + " ".join(f"{q:.6f}" for q in quad),
        f'pp_dirpath "{paw_dir()}"',
        'pseudos "' + ", ".join(paths[el].name for el in els) + '"',
        "prtwf 0",
        "prtden 0",
        "prteig 0",
    ]
    return "\n".join(lines) + "\n"


_ATOM = re.compile(r"Atom\s+(\d+), typat\s+(\d+): Cq =\s*(-?[\d.Ee+-]+) MHz\s+eta =\s*(-?[\d.Ee+-]+)")
_TOTAL = re.compile(r"total efg :\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)")


def parse_efg(abo: Path, structure: Structure, isotopes: list[str] | None = None) -> list[dict[str, Any]]:
    """Per-site EFG documents from an ABINIT output, with ABINIT's own printed C_Q and eta."""
    text = Path(abo).read_text()
    if "Electric Field Gradient Calculation" not in text:
        raise SuperionicError.single(
            str(abo), "no EFG section in this ABINIT output", str(abo), "a prtefg 2 run"
        )
    section = text.split("Electric Field Gradient Calculation", 1)[1]
    blocks = _ATOM.split(section)[1:]
    docs = []
    moments = quadrupole_table()["moments_mb"]
    for k in range(0, len(blocks), 5):
        index, _typat, cq, eta, body = blocks[k : k + 5]
        rows = [[float(x) for x in m] for m in _TOTAL.findall(body)[:3]]
        i = int(index) - 1
        el = structure[i].specie.symbol
        iso = default_isotope(el, isotopes or [])
        tensor = np.array(rows) * EFG_AU_TO_V_A2
        doc = {"site": i, "species": el, "isotope": iso, **efg_parameters(tensor, moments.get(iso, 0.0))}
        doc.update(abinit_cq_mhz=float(cq), abinit_eta=float(eta))
        docs.append(doc)
    return docs


def abinit_efg(
    structure: Structure, workdir: Path, isotopes: list[str] | None = None, **kwargs: Any
) -> list[dict]:
    """Run ABINIT (``prtefg 2``) in ``workdir`` and return per-site EFG documents."""
    from superionic.engines.guard import require_engine

    require_engine("abinit")  # where the job runs (submit does not need ABINIT)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "run.abi").write_text(efg_input(structure, isotopes, **kwargs))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(workdir / "log", "w") as log:
        proc = subprocess.run(
            ["abinit", "run.abi"], cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    abo = workdir / "run.abo"
    if proc.returncode != 0 or not abo.is_file():
        tail = (workdir / "log").read_text()[-1500:]
        raise RuntimeError(f"ABINIT failed in {workdir} (exit {proc.returncode}):\n{tail}")
    return parse_efg(abo, structure, isotopes)


@job
def abinit_efg_job(
    structure: Structure | dict, isotopes: list[str], settings: dict[str, Any]
) -> dict[str, Any]:
    """ABINIT PAW EFG of one structure (``prtefg 2``), run in the job's folder."""
    struct = structure if isinstance(structure, Structure) else Structure.from_dict(structure)
    s = AbinitNMRSettings.of(settings)
    kwargs = {
        k: getattr(s, k)
        for k in ("ecut_Ha", "pawecutdg_Ha", "kpoint_spacing_per_A")
        if getattr(s, k) is not None
    }
    return {
        "sites": abinit_efg(struct, Path.cwd() / "abinit_efg", list(isotopes), **kwargs),
        "engine": "abinit",
    }


class AbinitEngine(Engine):
    """ABINIT: the local EFG route (PAW ``prtefg 2``) where JTH datasets exist."""

    name = "abinit"
    install_hint = "an installed ABINIT (apt-get install abinit abinit-data), or engine vasp"

    def available(self) -> tuple[bool, str]:
        """See :func:`abinit_available`."""
        return abinit_available()

    def check(self, stage: str, settings: dict[str, Any], systems: list[SystemView]) -> list[Problem]:
        """EFG only (no shielding), and only for elements with a JTH PAW dataset."""
        if stage != "nmr":
            return []
        problems = []
        if AbinitNMRSettings.of(settings).shielding:
            problems.append(
                Problem(
                    "shielding",
                    "the ABINIT route computes EFGs only",
                    True,
                    "shielding: false with engine abinit (shielding on vasp or cp2k in another campaign)",
                )
            )
        have = {p.stem for p in paw_dir().glob("*.xml")}
        for system in systems:
            label = system.label
            missing = sorted(set(system.elements) - have)
            if missing:
                problems.append(
                    Problem(
                        label,
                        f"no JTH PAW dataset for {', '.join(missing)} in {paw_dir()} (ABINIT EFG)",
                        missing,
                        f"elements among {', '.join(sorted(have)) or '(none installed)'}, or engine vasp",
                    )
                )
        return problems

    def nmr(self, structure: Any, settings: dict[str, Any], label: str) -> Flow:
        """One ABINIT EFG job; output ``{"efg": result}``."""
        j = abinit_efg_job(structure, AbinitNMRSettings.of(settings).isotopes, settings)
        j.name = f"{label} nmr efg (abinit)"
        j.metadata["stage"] = "nmr_efg"
        return self.flow([j], {"cs": None, "efg": j.output}, f"{label} nmr runs")
