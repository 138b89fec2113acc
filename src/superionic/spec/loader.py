"""Load a campaign file: parse YAML, validate, check the physics, expand sweeps.

Every problem becomes one line ``file:line: yaml.path: message (got value); valid: ...``;
:func:`load_campaign` raises :class:`SpecError` with all of them and writes nothing.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from superionic.errors import Problem, SpecError
from superionic.spec.checks import _check_stages
from superionic.spec.models import CampaignSpec, Stage
from superionic.spec.scales import apply_scale
from superionic.spec.systems import SystemInstance, _build_system
from superionic.spec.yaml_errors import _line_of, _problems_from_validation, _to_plain


@dataclass
class Campaign:
    """A validated campaign with its systems expanded."""

    spec: CampaignSpec
    file: Path
    systems: list[SystemInstance] = field(default_factory=list)
    #: engines the campaign needs that are missing on this machine (checked again where jobs run)
    notes: list[Problem] = field(default_factory=list)
    #: the scale applied (``paper``, ``quick``, ``smoke``; None for a file without ``scales:``)
    scale: str | None = None

    @property
    def directory(self) -> Path:
        """The folder holding the campaign file."""
        return self.file.parent

    @property
    def store_path(self) -> Path:
        """The embedded store folder (default ``<campaign dir>/.superionic``)."""
        path = self.spec.store.path or Path(".superionic")
        return path if path.is_absolute() else (self.directory / path).resolve()


def load_campaign(
    path: str | Path,
    check_engines: bool | str = True,
    machine_checks: bool = False,
    scale: str | None = None,
    force_field: str | None = None,
) -> Campaign:
    """Read, validate and expand a campaign file.

    Parameters
    ----------
    path : str or Path
        The campaign YAML.
    check_engines : bool or str
        What to do about an engine that cannot run on this machine (e.g. VASP not on PATH):
        ``True``/``"require"`` refuses it (``run``, which runs the jobs here); ``"note"`` records it
        in :attr:`Campaign.notes` (``validate``, ``submit``: the jobs run elsewhere, where the
        engine is checked again when each job starts); ``False``/``"off"`` skips the check.
    machine_checks : bool
        Also refuse what is known to fail with an engine on this machine (a cached CP2K EFG
        refusal): ``validate`` and ``run``; commands that read or clean up a campaign leave it.
    scale : str, optional
        ``paper``, ``quick`` or ``smoke`` for a file with a ``scales:`` block (default: its
        ``default_scale``); see :mod:`superionic.spec.scales`.
    force_field : str, optional
        A force field name (``SevenNet``) or a model folder (relative to the working directory)
        for every stage that runs on the MLIP engine (relax, md, quench: the hull's competing
        phases follow the relax stage), as ``--force-field`` does; see :func:`override_force_field`.

    Returns
    -------
    Campaign

    Raises
    ------
    SpecError
        With one :class:`Problem` per thing wrong, each naming the YAML path, the value and
        what would be valid.

    """
    file = Path(path)
    shown = str(path)
    if not file.is_file():
        raise SpecError([Problem("(file)", "campaign file not found", shown, "a path to a YAML file")], shown)
    text = file.read_text()
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise SpecError(
            [
                Problem(
                    "(YAML)",
                    f"malformed YAML: {exc.problem}",
                    None,
                    "well-formed YAML (check indentation, colons and quotes)",
                    line,
                )
            ],
            shown,
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            [
                Problem(
                    "(top level)",
                    "a campaign must be a YAML mapping",
                    type(data).__name__,
                    "keys name, systems, stages, ...",
                    1,
                )
            ],
            shown,
        )
    applied, scale_problems = apply_scale(data, scale)
    if scale_problems:
        raise SpecError(scale_problems, shown)
    plain = _to_plain(data)
    if force_field is not None:
        ff_problems = override_force_field(plain, force_field)
        if ff_problems:
            raise SpecError(ff_problems, shown)
    try:
        spec = CampaignSpec.model_validate(plain)
    except ValidationError as exc:
        raise SpecError(_problems_from_validation(exc, data), shown) from None
    # a force_field model folder, like every path in a campaign file, is relative to the file
    for stage in spec.stages:
        folder = getattr(stage, "force_field", None)
        if folder and ("/" in folder or folder.startswith((".", "~"))):  # a model folder, not a name
            path = Path(folder).expanduser()
            stage.force_field = str(path if path.is_absolute() else (file.parent / path).resolve())
    problems: list[Problem] = []
    systems: list[SystemInstance] = []
    for i, system in enumerate(spec.systems):
        inst, probs = _build_system(file.parent.resolve(), system, i, data)
        systems.extend(inst)
        problems.extend(probs)
    names = [s.name for s in systems]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        entries = sorted({s.index for s in systems if s.name == dup})
        j = entries[-1]  # reported at the later entry, naming the earlier ones
        named = spec.systems[j].name is not None
        earlier = ", ".join(f"systems[{k}] (line {_line_of(data, ('systems', k))})" for k in entries[:-1])
        problems.append(
            Problem(
                f"systems[{j}].name" if named else f"systems[{j}]",
                f"two systems have the same name: also {earlier}"
                if earlier
                else "two systems of this entry's sweep have the same name (a value listed twice?)",
                dup,
                "give each system a distinct 'name'",
                _line_of(data, ("systems", j, "name") if named else ("systems", j)),
            )
        )
    mode = {True: "require", False: "off"}.get(check_engines, check_engines)  # type: ignore[call-overload]
    if mode not in ("require", "note", "off"):
        raise ValueError(f"check_engines must be True, False, 'require', 'note' or 'off', not {mode!r}")
    notes: list[Problem] = []
    problems.extend(_check_stages(spec, data, systems, mode, file.parent, notes, machine_checks))
    if spec.reproduces:
        from superionic.spec.studies import study_problems

        line = _line_of(data, ("reproduces",))
        problems.extend(
            Problem("reproduces", why, spec.reproduces, valid, line)
            for why, valid in study_problems(spec.reproduces)
        )
    if problems:
        raise SpecError(problems, shown)
    password_file = spec.store.password_file
    if password_file is not None and not password_file.expanduser().is_absolute():
        # like every path in a campaign file: relative to the file, not to where a worker starts
        spec.store.password_file = (file.parent / password_file).resolve()
    return Campaign(spec=spec, file=file.resolve(), systems=systems, notes=notes, scale=applied)


__all__ = ["Campaign", "SystemInstance", "load_campaign"]


def override_force_field(plain: dict[str, Any], force_field: str) -> list[Problem]:
    """Put ``force_field`` on every MLIP stage of a campaign's data (``--force-field``), in place.

    One campaign file then runs, e.g., study A's quick table on a fine-tuned model or on SevenNet
    beside pretrained CHGNet. The campaign name gets ``-ff-<label>`` (the force field's name, or
    the first 12 characters of a model's weights hash), so each model has its own report folder;
    the jobs themselves are told apart by their fingerprints (a model folder by its weights' hash).
    Returns what is wrong: an unknown name, a folder that is not a model, ``finetuned`` (on the
    command line or on a stage it would replace), or no MLIP stage.
    """
    from superionic.engines.mlip import force_field_problems, is_model_folder

    value = force_field.strip()
    if value == "finetuned":
        return [
            Problem(
                "--force-field",
                "finetuned names a campaign's own finetune stage, which the file says where to use",
                force_field,
                "a force field name or a model folder (a finetune stage's: finetune.csv's model_folder)",
            )
        ]
    label = value.lower()
    if is_model_folder(value):
        value = str(Path(value).expanduser().resolve())  # given on the command line: from here
    problems = force_field_problems(value, "--force-field")
    if problems:
        return [Problem("--force-field", p.message, force_field, p.valid) for p in problems]
    if is_model_folder(value):
        from superionic.engines.finetune import read_model_folder

        # the weights' hash names the campaign: two models in folders of the same name stay apart
        label = str(read_model_folder(value, "--force-field")["weights_sha256"])[:12]
    engine = plain.get("engine") or CampaignSpec.model_fields["engine"].default
    models = typing.get_args(typing.get_args(Stage)[0])  # the stage classes of the union
    kinds = [
        typing.get_args(m.model_fields["stage"].annotation)[0]
        for m in models
        if "force_field" in m.model_fields
    ]
    hits = 0
    for i, stage in enumerate(plain.get("stages") or []):
        runs_mlip = isinstance(stage, dict) and (stage.get("engine") or engine) == "mlip"
        if runs_mlip and stage.get("force_field") == "finetuned":
            return [
                Problem(
                    "--force-field",
                    f"stages[{i}] ({stage.get('stage')}) runs on this campaign's fine-tuned model "
                    "(force_field: finetuned), which the option would replace",
                    force_field,
                    "a campaign without force_field: finetuned, or no --force-field",
                )
            ]
        if runs_mlip and stage.get("stage") in kinds:
            stage["force_field"] = value
            hits += 1
    if not hits:
        return [
            Problem(
                "--force-field",
                f"no stage of this campaign runs on the mlip engine (campaign engine: {engine})",
                force_field,
                f"a campaign with engine: mlip on a {', '.join(kinds)} stage (or a --scale that has one)",
            )
        ]
    if isinstance(plain.get("name"), str):
        plain["name"] = f"{plain['name']}-ff-{label}"
    return []
