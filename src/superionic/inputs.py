"""Write the input files a job would run with, without running it.

VASP: INCAR, KPOINTS, POSCAR and POTCAR.spec (the POTCAR itself needs a licensed library; with
``PMG_VASP_PSP_DIR`` configured a real POTCAR is written instead). MLIP: the POSCAR and a
``settings.json`` of the atomate2 forcefield maker. CP2K: ``cp2k.inp`` with the ``BASIS`` and
``POTENTIAL`` files it reads (taken from the local CP2K data).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from superionic.engines import stage_settings
from superionic.errors import SuperionicError

if TYPE_CHECKING:  # pymatgen is imported by the caller; `superionic --help` stays fast
    from pymatgen.core import Structure


def _writable() -> dict[str, frozenset[str]]:
    from superionic.engines.base import ENGINES

    order = ("vasp", "cp2k", "mlip")  # as the help has always listed them
    names = sorted(ENGINES, key=lambda n: (order.index(n) if n in order else len(order), n))
    return {n: frozenset(ENGINES[n].writes) for n in names if ENGINES[n].writes}


def writable_stages_text() -> str:
    """``relax (vasp, cp2k, mlip), md (...), static (cp2k)``: what :func:`write_stage_inputs` can write."""
    writable = _writable()
    stages = dict.fromkeys(st for st in ("relax", "md", "static") if any(st in s for s in writable.values()))
    return ", ".join(f"{st} ({', '.join(e for e, s in writable.items() if st in s)})" for st in stages)


def write_stage_inputs(
    structure: Structure,
    engine: str,
    preset: str,
    stage: str,
    out_dir: Path,
    overrides: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the inputs of one (engine, preset, stage) job for ``structure`` into ``out_dir``.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    SuperionicError
        When the engine cannot write inputs for this stage yet.
    """
    from superionic.engines.base import get_engine

    writable = _writable()
    if stage not in writable.get(engine, set()):
        ok = ", ".join(f"{e}: {sorted(s)}" for e, s in writable.items())
        raise SuperionicError.single(
            "--stage", f"no input writer for stage '{stage}' on engine '{engine}'", stage, ok
        )
    settings = stage_settings(preset, engine, stage, overrides or {})
    return get_engine(engine).write_inputs(structure, stage, settings, out_dir)
