"""Write the input files a job would run with, without running it.

VASP: INCAR, KPOINTS, POSCAR and POTCAR.spec (the POTCAR itself needs a licensed library; with
``PMG_VASP_PSP_DIR`` configured a real POTCAR is written instead). MLIP: the POSCAR and a
``settings.json`` of the atomate2 forcefield maker. CP2K: ``cp2k.inp`` with the ``BASIS`` and
``POTENTIAL`` files it reads (taken from the local CP2K data).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superionic.engines import stage_settings
from superionic.errors import SuperionicError

if TYPE_CHECKING:  # pymatgen is imported by the caller; `superionic --help` stays fast
    from pymatgen.core import Structure

WRITABLE = {"vasp": {"relax", "md"}, "cp2k": {"relax", "static", "md"}, "mlip": {"relax", "md"}}


def writable_stages_text() -> str:
    """``relax (vasp, cp2k, mlip), md (...), static (cp2k)``: what :func:`write_stage_inputs` can write."""
    stages = dict.fromkeys(st for st in ("relax", "md", "static") if any(st in s for s in WRITABLE.values()))
    return ", ".join(f"{st} ({', '.join(e for e, s in WRITABLE.items() if st in s)})" for st in stages)


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
    if stage not in WRITABLE.get(engine, set()):
        ok = ", ".join(f"{e}: {sorted(s)}" for e, s in WRITABLE.items())
        raise SuperionicError.single(
            "--stage", f"no input writer for stage '{stage}' on engine '{engine}'", stage, ok
        )
    settings = stage_settings(preset, engine, stage, overrides or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    if engine == "vasp":
        from superionic.engines.vasp import input_set

        if stage == "md":
            from superionic.engines.vasp import md_input_set

            temp = float(settings.get("temperature_K", 300.0))
            vis = md_input_set(settings, temp, temp, int(settings.get("production_steps", 1000)))
        else:
            vis = input_set(settings, stage)
        use_spec = not os.environ.get("PMG_VASP_PSP_DIR")
        vis.get_input_set(structure, potcar_spec=use_spec).write_input(out_dir)
        return sorted(p for p in out_dir.iterdir() if p.is_file())
    if engine == "cp2k":
        from superionic.engines.cp2k import _md_maker, input_generator

        if stage == "md":  # the input of one production run of the md stage, at temperature_K
            temp = float(settings.get("temperature_K", 300.0))
            nsteps = int(settings.get("production_steps", 1000))
            gen: Any = _md_maker(settings, temp, nsteps, "md").input_set_generator
        else:
            gen = input_generator(settings, stage)
        gen.get_input_set(structure).write_input(out_dir, overwrite=True)
        return sorted(p for p in out_dir.iterdir() if p.is_file())
    structure.to(filename=str(out_dir / "POSCAR"), fmt="poscar")
    if stage == "relax":
        from superionic.engines.mlip import relax_maker

        maker: Any = relax_maker(settings)
    else:
        from superionic.engines.mlip import md_maker

        maker = md_maker({"production_steps": 1000, **settings}, float(settings.get("temperature_K", 300.0)))
    (out_dir / "settings.json").write_text(json.dumps(maker.as_dict(), indent=1, default=str))
    return [out_dir / "POSCAR", out_dir / "settings.json"]
