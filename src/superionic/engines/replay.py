"""Replay real VASP outputs instead of running VASP (atomate2 mock-VASP style, for the engine).

Within :func:`vasp_replay`, atomate2's ``run_vasp`` is replaced by a function that

1. checks the INCAR the job just wrote against the settings the preset requires (every key and
   value; a mismatch raises :class:`ReplayMismatchError` naming the key), and that KPOINTS exists;
2. keeps the inputs as written in ``inputs.written/`` (with ``custodian.json``: the command,
   handlers and wall time the run would have had) and copies the reference ``outputs/``
   folder into the job directory;

and input sets write ``POTCAR.spec`` instead of a POTCAR (none is licensed here). Everything
else - input generation, output parsing into atomate2's TaskDoc, the flow and the store - is the
production code path. Set ``SUPERIONIC_VASP_REPLAY=<dir>`` (folders ``<dir>/<stage>/outputs``) to
replay a whole campaign from the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymatgen.io.vasp import Incar


class ReplayMismatchError(AssertionError):
    """The inputs a job wrote differ from what the preset requires."""


def check_incar(path: Path, required: dict[str, Any]) -> None:
    """Compare the INCAR at ``path`` with ``required`` (key by key; floats to 1e-8 relative)."""
    incar = Incar.from_file(path)
    for key, want in required.items():
        got = incar.get(key.upper())
        same = got == want
        if isinstance(want, float) and isinstance(got, int | float):
            same = abs(got - want) <= 1e-8 * max(1.0, abs(want))
        if not same:
            raise ReplayMismatchError(f"INCAR {key} = {got!r}, but the preset requires {want!r} ({path})")


@contextmanager
def vasp_replay(
    references: dict[str, Path] | Path, required_incar: dict[str, dict[str, Any]] | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Replay reference VASP outputs for the jobs run inside the block.

    Parameters
    ----------
    references : dict or Path
        Stage name (``relax``, ``static``, ``md``, ``nmr_cs``, ``quench``...) -> reference folder
        with ``outputs/``; or a folder holding one such folder per stage (``<stage>_<segment>``,
        e.g. ``quench_heat``, is preferred when the job names a segment; a segment run several
        times, like the EOS runs of an MPMorph density step, takes ``<stage>_<segment>_1``,
        ``_2``... in the order the runs happen).
    required_incar : dict, optional
        Stage -> INCAR settings the written INCAR must contain.

    Yields
    ------
    list of dict
        One record per replayed job: ``stage``, ``reference``, ``incar`` (as written), ``job``
        (its name), and the ``vasp_cmd``, ``handlers`` and ``wall_time`` it would have run with.
    """
    import atomate2.vasp.jobs.base as jobs_base
    import atomate2.vasp.run as vasp_run
    from jobflow import CURRENT_JOB

    records: list[dict[str, Any]] = []
    calls: dict[str, int] = {}

    def reference_for(stage: str) -> Path:
        if isinstance(references, dict):
            if stage not in references:
                raise ReplayMismatchError(
                    f"no reference outputs for stage '{stage}'; have {sorted(references)}"
                )
            return Path(references[stage])
        return Path(references) / stage

    def fake_run_vasp(*_args: Any, **kwargs: Any) -> None:
        metadata = CURRENT_JOB.job.metadata or {}
        stage = metadata.get("stage", "relax")
        segment = metadata.get("segment")  # e.g. the heat/hold/cool runs of a quench
        if segment and not isinstance(references, dict):
            key = f"{stage}_{segment}"
            if (Path(references) / key).is_dir():
                stage = key
            elif (Path(references) / f"{key}_1").is_dir():  # repeated runs: _1, _2, ... in call order
                calls[key] = calls.get(key, 0) + 1
                stage = f"{key}_{calls[key]}"
        ref = reference_for(stage)
        if not Path("INCAR").is_file() or not Path("KPOINTS").is_file():
            raise ReplayMismatchError("the job did not write INCAR and KPOINTS before running VASP")
        check_incar(Path("INCAR"), (required_incar or {}).get(stage, {}))
        records.append(
            {
                "stage": stage,
                "reference": str(ref),
                "incar": dict(Incar.from_file("INCAR")),
                "job": CURRENT_JOB.job.name,
                # what atomate2 would have handed custodian: the command and the error handlers
                "vasp_cmd": kwargs.get("vasp_cmd"),
                "handlers": [type(h).__name__ for h in kwargs.get("handlers") or ()],
                "wall_time": kwargs.get("wall_time"),
            }
        )
        written = Path("inputs.written")  # the inputs as the job wrote them, before the outputs land
        written.mkdir(exist_ok=True)
        for name in ("INCAR", "KPOINTS", "POSCAR", "POTCAR.spec"):
            if Path(name).is_file():
                shutil.copy(name, written / name)
        run = {k: records[-1][k] for k in ("job", "vasp_cmd", "handlers", "wall_time")}
        (written / "custodian.json").write_text(json.dumps(run, indent=1))
        for item in (ref / "outputs").iterdir():
            shutil.copy(item, item.name)

    saved = (vasp_run.run_vasp, jobs_base.run_vasp)
    vasp_run.run_vasp = fake_run_vasp
    jobs_base.run_vasp = fake_run_vasp
    try:
        with potcar_spec_only():
            yield records
    finally:
        vasp_run.run_vasp, jobs_base.run_vasp = saved


@contextmanager
def potcar_spec_only() -> Iterator[None]:
    """Within the block, VASP input sets write ``POTCAR.spec`` instead of a licensed POTCAR.

    Used by the replay, and by tests that run custodian with a stand-in VASP executable.
    """
    from pymatgen.io.vasp.sets import VaspInputSet

    original_get_input_set = VaspInputSet.get_input_set

    def get_input_set(self: VaspInputSet, *args: Any, **kwargs: Any) -> Any:
        kwargs["potcar_spec"] = True
        return original_get_input_set(self, *args, **kwargs)

    VaspInputSet.get_input_set = get_input_set  # type: ignore[method-assign]
    try:
        yield
    finally:
        VaspInputSet.get_input_set = original_get_input_set  # type: ignore[method-assign]


def replay_from_environment() -> Path | None:
    """Return the replay folder named by ``SUPERIONIC_VASP_REPLAY``, if any."""
    value = os.environ.get("SUPERIONIC_VASP_REPLAY")
    return Path(value) if value else None
