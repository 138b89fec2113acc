"""Replay recorded VASP runs instead of running VASP (atomate2's mock VASP, adapted to our flows).

As atomate2's ``atomate2.utils.testing.vasp`` (``monkeypatch_vasp`` / ``fake_run_vasp``), within
:func:`vasp_replay` atomate2's ``run_vasp`` is replaced by a function that

1. compares the inputs the job just wrote with a reference ``inputs/`` folder (test data written
   from the protocol's numbers, never from the preset the production code reads): the INCAR keys
   listed for the job (atomate2's ``incar_settings``), the KPOINTS mesh and the POSCAR structure;
   a difference raises :class:`ReplayMismatchError` naming the key and the reference file;
2. keeps the inputs as written in ``inputs.written/`` (with ``custodian.json``: the command,
   handlers and wall time the run would have had) and copies the recorded ``outputs/`` folder
   into the job directory;

and VASP input sets write ``POTCAR.spec`` instead of a POTCAR (none is licensed here). A stand-in
VASP program is put on ``PATH`` (it refuses to run), so the production engine checks pass without
knowing about the replay. Everything else - input generation, the engine checks, custodian's
settings, output parsing into atomate2's TaskDoc, the flow and the store - is the production code
path.

Differences from atomate2's utility: jobs are found by their stage (and segment) metadata rather
than their names, because our job names carry the system and temperature; runs of one segment
repeated several times (the EOS runs of an MPMorph density step, chained MD parts) take the keys
``<stage>_<segment>_1``, ``_2``... in the order they run; the recorded outputs (real runs kept
outside the repository) and the reference inputs (test data in the repository) are two folders.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from pymatgen.io.vasp import Incar, Kpoints, Poscar
from pymatgen.util.coord import in_coord_list_pbc

#: the inputs a replayed job is compared on by default
CHECKED_INPUTS = ("incar", "kpoints", "poscar")


class ReplayMismatchError(AssertionError):
    """The inputs a job wrote differ from the reference inputs of the run it replays."""


@dataclass(frozen=True)
class ReplayJob:
    """One VASP run to replay: where its outputs come from and what its inputs must say.

    Attributes
    ----------
    recorded : Path
        A recorded real run (e.g. ``../shared/fixtures/vasp/...``): ``outputs/`` is copied into
        the job folder instead of running VASP; ``inputs/POSCAR`` is the structure it started from.
    reference : Path
        Test data: ``inputs/INCAR`` and ``inputs/KPOINTS`` the job must write, and optionally
        ``inputs/POSCAR`` (default: the recorded run's own ``inputs/POSCAR``).
    incar_settings : sequence of str, optional
        The INCAR keys to compare (atomate2's ``incar_settings``); default every key of the
        reference INCAR.
    check_inputs : sequence of str
        Which written inputs to compare: ``incar``, ``kpoints``, ``poscar``.

    """

    recorded: Path
    reference: Path
    incar_settings: Sequence[str] | None = None
    check_inputs: Sequence[str] = CHECKED_INPUTS


def _existing(folder: Path, name: str) -> Path | None:
    """Return ``folder/name`` or its gzipped version, whichever exists (None if neither)."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _required(folder: Path, name: str) -> Path:
    path = _existing(folder, name)
    if path is None:
        raise ReplayMismatchError(f"no reference {name} in {folder}")
    return path


def _same(got: Any, want: Any) -> bool:
    """Whether an INCAR value equals the reference (numbers to 1e-8 relative, lists item by item)."""
    if isinstance(want, list | tuple):
        return (
            isinstance(got, list | tuple)
            and len(got) == len(want)
            and all(_same(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int | float) and isinstance(got, int | float):
        return abs(got - want) <= 1e-8 * max(1.0, abs(want))
    if isinstance(want, str) and isinstance(got, str):
        return got.strip().lower() == want.strip().lower()
    return bool(got == want)


def check_incar(written: Path, reference: Path, keys: Sequence[str] | None = None) -> None:
    """Compare the INCAR at ``written`` with the reference INCAR on ``keys`` (default: all of its keys).

    Raises
    ------
    ReplayMismatchError
        Naming the first key whose value differs and the reference file.

    """
    incar, ref = Incar.from_file(written), Incar.from_file(reference)
    for key in keys if keys is not None else list(ref):
        if key.upper() not in ref:
            raise ReplayMismatchError(f"the reference INCAR {reference} has no {key.upper()} to compare")
        want, got = ref[key.upper()], incar.get(key.upper())
        if not _same(got, want):
            raise ReplayMismatchError(
                f"INCAR {key} = {got!r}, but the reference requires {want!r} ({reference})"
            )


def check_kpoints(written: Path, reference: Path) -> None:
    """Compare the KPOINTS at ``written`` with the reference: same style, mesh and shift (or points)."""
    kpts, ref = Kpoints.from_file(written), Kpoints.from_file(reference)

    def shown(k: Kpoints) -> str:
        return f"{k.style.name} {' '.join(str(x) for x in np.ravel(k.kpts))}"

    same = kpts.style == ref.style and len(kpts.kpts) == len(ref.kpts)
    same = same and np.allclose(np.asarray(kpts.kpts, float), np.asarray(ref.kpts, float), atol=1e-8)
    same = same and np.allclose(kpts.kpts_shift, ref.kpts_shift, atol=1e-8)
    if not same:
        raise ReplayMismatchError(
            f"KPOINTS {shown(kpts)}, but the reference requires {shown(ref)} ({reference})"
        )


def check_poscar(written: Path, reference: Path, atol: float = 1e-3) -> None:
    """Compare the POSCAR at ``written`` with the reference: species, counts, lattice and sites.

    Sites are matched as sets (periodic, ``atol`` in fractional coordinates), as atomate2 does,
    so a reordering of the sites is not a difference; the lattice must agree to 1e-4 relative.
    """
    pos, ref = Poscar.from_file(written), Poscar.from_file(reference)
    a, b = pos.structure, ref.structure
    problem = ""
    if pos.site_symbols != ref.site_symbols or pos.natoms != ref.natoms:
        problem = f"species {pos.site_symbols} x {pos.natoms} (reference {ref.site_symbols} x {ref.natoms})"
    elif not np.allclose(a.lattice.matrix, b.lattice.matrix, rtol=1e-4, atol=1e-4):
        problem = f"lattice abc {a.lattice.abc} (reference {b.lattice.abc})"
    else:
        off = [i for i, x in enumerate(a.frac_coords) if not in_coord_list_pbc(b.frac_coords, x, atol=atol)]
        if off:
            problem = f"site(s) {', '.join(map(str, off[:10]))} not in the reference"
    if problem:
        raise ReplayMismatchError(f"POSCAR differs: {problem} ({reference})")


def check_inputs(job: ReplayJob, folder: Path | None = None) -> None:
    """Compare the inputs written in ``folder`` (default: here) with the job's reference inputs."""
    here = Path(folder) if folder is not None else Path.cwd()
    ref = Path(job.reference) / "inputs"
    for name in ("INCAR", "KPOINTS", "POSCAR"):
        if name.lower() in job.check_inputs and not (here / name).is_file():
            raise ReplayMismatchError(f"the job did not write {name} before running VASP")
    if "incar" in job.check_inputs:
        check_incar(here / "INCAR", _required(ref, "INCAR"), job.incar_settings)
    if "kpoints" in job.check_inputs:
        check_kpoints(here / "KPOINTS", _required(ref, "KPOINTS"))
    if "poscar" in job.check_inputs:
        poscar = _existing(ref, "POSCAR") or _required(Path(job.recorded) / "inputs", "POSCAR")
        check_poscar(here / "POSCAR", poscar)


@contextmanager
def vasp_replay(jobs: Mapping[str, ReplayJob]) -> Iterator[list[dict[str, Any]]]:
    """Replay recorded VASP runs for the VASP jobs run inside the block (in this process).

    Parameters
    ----------
    jobs : mapping
        Key -> :class:`ReplayJob`. A job is found by its stage metadata (``relax``, ``static``,
        ``md``, ``nmr_cs``, ``nmr_efg``, ``quench``...); when it names a segment,
        ``<stage>_<segment>`` (e.g. ``quench_heat``) is preferred, and a segment run several times
        (the EOS runs of an MPMorph density step, chained MD parts) takes ``<stage>_<segment>_1``,
        ``_2``... in the order the runs happen.

    Yields
    ------
    list of dict
        One record per replayed job: ``stage`` (the key used), ``reference``, ``incar`` (as
        written), ``job`` (its name), and the ``vasp_cmd``, ``handlers`` and ``wall_time`` it
        would have run with.

    """
    import atomate2.vasp.jobs.base as jobs_base
    import atomate2.vasp.run as vasp_run
    from jobflow import CURRENT_JOB

    records: list[dict[str, Any]] = []
    calls: dict[str, int] = {}

    def key_for(stage: str, segment: str | None) -> str:
        if segment:
            key = f"{stage}_{segment}"
            if key in jobs:
                return key
            if f"{key}_1" in jobs:  # repeated runs: _1, _2, ... in call order
                calls[key] = calls.get(key, 0) + 1
                return f"{key}_{calls[key]}"
        return stage

    def fake_run_vasp(*_args: Any, **kwargs: Any) -> None:
        metadata = CURRENT_JOB.job.metadata or {}
        key = key_for(metadata.get("stage", "relax"), metadata.get("segment"))
        if key not in jobs:
            raise ReplayMismatchError(f"no recorded run for '{key}'; have {sorted(jobs)}")
        job = jobs[key]
        if not Path("INCAR").is_file() or not Path("KPOINTS").is_file():
            raise ReplayMismatchError("the job did not write INCAR and KPOINTS before running VASP")
        check_inputs(job)
        records.append(
            {
                "stage": key,
                "reference": str(job.reference),
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
        for item in (Path(job.recorded) / "outputs").iterdir():
            if item.is_file():
                shutil.copy(item, item.name)

    saved = (vasp_run.run_vasp, jobs_base.run_vasp)
    vasp_run.run_vasp = fake_run_vasp
    jobs_base.run_vasp = fake_run_vasp
    try:
        with potcar_spec_only(), vasp_stand_in():
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


_STAND_IN = """#!/bin/sh
echo "superionic.testing: VASP is replayed in this process, not run ($0)" >&2
exit 1
"""


@contextmanager
def vasp_stand_in(names: Sequence[str] = ("vasp_std", "vasp_gam", "vasp_ncl")) -> Iterator[Path]:
    """Within the block, stand-in VASP programs are first on ``PATH`` (they refuse to run).

    The production code checks that the VASP program a job will start is on ``PATH`` (where the
    job runs); under a replay it never starts, so a stand-in passes that check unchanged. The
    program of the current VASP command (``SUPERIONIC_VASP_CMD``) is added to ``names``.

    Yields
    ------
    Path
        The folder holding the stand-ins (removed at the end of the block).

    """
    from superionic.engines.guard import executable_of
    from superionic.engines.vasp import vasp_command

    programs = {*names, executable_of(vasp_command())} - {""}
    saved = os.environ.get("PATH")
    with TemporaryDirectory(prefix="superionic-vasp-stand-in-") as tmp:
        for name in programs:
            if os.sep in name:  # an absolute command: cannot be stood in for on PATH
                continue
            script = Path(tmp) / name
            script.write_text(_STAND_IN)
            script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.environ["PATH"] = tmp + (os.pathsep + saved if saved else "")
        try:
            yield Path(tmp)
        finally:
            if saved is None:
                os.environ.pop("PATH", None)
            else:
                os.environ["PATH"] = saved
