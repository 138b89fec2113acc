"""Deterministic job identities: a job's uuid is a hash of what it computes.

A job's fingerprint hashes its function (including the Maker and all its settings), its
arguments (structures included) and, for arguments that are outputs of other jobs, those jobs'
fingerprints (a Merkle chain). The job's uuid is derived from the fingerprint, so rebuilding the
same campaign gives the same uuids, and a job whose output is already in the store is finished:
a second ``run`` recomputes nothing, and changing one setting re-runs exactly the jobs downstream.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

from jobflow import Flow
from monty.json import MontyDecoder, jsanitize


def _canonical(obj: object) -> str:
    return json.dumps(
        jsanitize(obj, strict=True, enum_values=True, allow_bson=False),
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


#: jobs that moved module (issue 15: engines import no stage) keep the identity they had before,
#: so a store made before the move recomputes nothing; (new module, function) -> old module
MOVED_JOBS = {
    ("superionic.engines.cp2k", "cp2k_trajectory"): "superionic.stages.md",
    ("superionic.engines.cp2k_nmr", "cp2k_nmr"): "superionic.stages.nmr",
    ("superionic.engines.abinit", "abinit_efg_job"): "superionic.stages.nmr",
}


#: Maker fields that change how a result is stored, not what it is: left out of the identity, so
#: a store made before the field existed recomputes nothing (binary_trajectory: the MD frames as
#: a binary trajectory or a Trajectory blob; the analyses read both)
STORAGE_ONLY_FIELDS = ("binary_trajectory",)

#: INCAR tags that only say what VASP writes (wavefunction, density, OUTCAR verbosity, XDATCAR
#: stride), set by the MD inputs since the binary-trajectory change: not part of the identity
OUTPUT_ONLY_INCAR = ("LWAVE", "LCHARG", "NWRITE", "NBLOCK")

#: ``make`` methods overridden only to store their output differently keep the identity of the
#: method they wrap: (module, callable) -> (module, callable) fingerprinted
STORAGE_ONLY_OVERRIDES = {
    ("superionic.engines.mlip_md", "ResumableMDMaker.make"): (
        "atomate2.forcefields.md",
        "ForceFieldMDMaker.make",
    ),
    ("superionic.engines.vasp_md", "StreamingMDMaker.make"): (
        "atomate2.vasp.jobs.base",
        "BaseVaspMaker.make",
    ),
}

#: custodian settings that only say how often it looks at a running job: not part of the identity
RUN_ONLY_CUSTODIAN = ("polling_time_step", "monitor_freq")

#: Makers subclassed only to store their output differently keep the identity of the class they
#: extend (its module, class and package version): (module, class) -> (module, class)
STORAGE_ONLY_CLASSES = {
    ("superionic.engines.vasp_md", "StreamingMDMaker"): ("atomate2.vasp.jobs.md", "MDMaker"),
}


def _package_version(module: str) -> str | None:
    """Return the installed version of ``module``'s top-level package (monty's ``@version``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module.split(".")[0])
    except PackageNotFoundError:
        return None


def _identity(function: object) -> object:
    """Return a job's serialised function as fingerprinted.

    Moved jobs under their old module; a bound Maker without its storage-only fields and
    output-only INCAR tags.
    """
    if isinstance(function, dict):
        old = MOVED_JOBS.get((function.get("@module"), function.get("@callable")))
        if old is not None:
            function = {**function, "@module": old}
        wrapped = STORAGE_ONLY_OVERRIDES.get((function.get("@module"), function.get("@callable")))
        if wrapped is not None:
            function = {**function, "@module": wrapped[0], "@callable": wrapped[1]}
        bound = function.get("@bound")
        if isinstance(bound, dict):
            bound = {k: v for k, v in bound.items() if k not in STORAGE_ONLY_FIELDS}
            run = bound.get("run_cp2k_kwargs")
            if isinstance(run, dict) and isinstance(run.get("custodian_kwargs"), dict):
                polling = {k: v for k, v in run["custodian_kwargs"].items() if k not in RUN_ONLY_CUSTODIAN}
                run = {k: v for k, v in run.items() if k != "custodian_kwargs"}
                bound["run_cp2k_kwargs"] = {**run, **({"custodian_kwargs": polling} if polling else {})}
            calculator = bound.get("calculator_kwargs")
            if isinstance(calculator, dict) and "model_dir" in calculator:
                # a fine-tuned model is known by its weights' hash (in calculator_kwargs), not its folder
                bound["calculator_kwargs"] = {k: v for k, v in calculator.items() if k != "model_dir"}
            base = STORAGE_ONLY_CLASSES.get((bound.get("@module"), bound.get("@class")))
            if base is not None:
                bound.update({"@module": base[0], "@class": base[1], "@version": _package_version(base[0])})
            generator = bound.get("input_set_generator")
            if isinstance(generator, dict) and isinstance(generator.get("user_incar_settings"), dict):
                incar = {
                    k: v for k, v in generator["user_incar_settings"].items() if k not in OUTPUT_ONLY_INCAR
                }
                bound["input_set_generator"] = {**generator, "user_incar_settings": incar}
            function = {**function, "@bound": bound}
    return function


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _remap(text: str, mapping: dict[str, str]) -> str:
    """Replace every uuid of ``mapping`` in ``text`` in one pass (one str.replace per uuid was O(n^2))."""
    if not mapping:
        return text
    return _UUID.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


def fingerprint_flow(flow: Flow, salt: str = "") -> Flow:
    """Return a copy of ``flow`` whose job uuids are content fingerprints.

    Parameters
    ----------
    flow : Flow
        A flow of jobs (nested flows allowed).
    salt : str
        Mixed into every fingerprint (e.g. a format version).

    Returns
    -------
    Flow
        The same graph; ``job.metadata["fingerprint"]`` holds each job's hash.

    """
    mapping: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    for job, _parents in flow.iterflow():
        d = job.as_dict()
        d["function"] = _identity(d.get("function"))
        text = _canonical({k: d.get(k) for k in ("name", "function", "function_args", "function_kwargs")})
        text = _remap(text, mapping)
        digest = hashlib.sha256((salt + text).encode()).hexdigest()
        mapping[job.uuid] = str(uuid.UUID(digest[:32]))
        fingerprints[job.uuid] = digest
    as_text = json.dumps(jsanitize(flow.as_dict(), strict=True, enum_values=True), default=str)
    as_text = _remap(as_text, mapping)
    new_flow = MontyDecoder().process_decoded(json.loads(as_text))
    by_uuid = {v: fingerprints[k] for k, v in mapping.items()}
    for job, _ in new_flow.iterflow():
        job.metadata["fingerprint"] = by_uuid[job.uuid]
    return new_flow
