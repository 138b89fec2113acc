"""MLIP engine: CHGNet (or another atomate2 force field) through atomate2's forcefield makers.

CHGNet's pretrained weights ship inside the ``chgnet`` wheel, so nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import job

from superionic.engines.base import Engine, SystemView
from superionic.engines.settings import MLIPMDSettings, MLIPRelaxSettings
from superionic.errors import Problem, SpecError

if TYPE_CHECKING:  # atomate2's forcefield makers (and torch) load when a maker is built, not before
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    from superionic.engines.mlip_md import ResumableMDMaker

_DYNAMICS = {"nose-hoover": "nose-hoover", "langevin": "langevin", "berendsen": "berendsen"}


def is_model_folder(force_field: str) -> bool:
    """Whether ``force_field`` names a folder (a fine-tuned model) rather than a force field name."""
    return "/" in force_field or force_field.startswith(("~", ".")) or Path(force_field).is_dir()


#: force fields whose weights ship inside their wheels, so they run offline (checked here: the
#: other atomate2 names download weights at run time, which a cluster node or CI cannot)
OFFLINE_FORCE_FIELDS = ("CHGNet", "SevenNet")


def force_field_problems(force_field: str, where: str = "force_field") -> list[Problem]:
    """Return what is wrong with a ``force_field`` value.

    A model folder that is not a model, or a name that is not one of
    :data:`OFFLINE_FORCE_FIELDS` (``finetuned`` is for the spec checks to judge).
    """
    if force_field == "finetuned":
        return []
    if is_model_folder(force_field):
        from superionic.engines.finetune import read_model_folder
        from superionic.errors import SuperionicError

        try:
            read_model_folder(force_field, where)
        except SuperionicError as exc:
            return list(exc.problems)
        return []
    if force_field.removeprefix("MLFF.") not in OFFLINE_FORCE_FIELDS:
        return [
            Problem(
                where,
                "not a force field that runs offline here",
                force_field,
                ", ".join(OFFLINE_FORCE_FIELDS)
                + ("" if where.startswith("--") else ", finetuned (a finetune stage's model)")
                + " or a model folder (superionic finetune --out, or a finetune stage's)",
            )
        ]
    return []


def force_field_kwargs(force_field: str) -> dict[str, Any]:
    """Return the atomate2 maker arguments for ``force_field``.

    A name atomate2 knows (``CHGNet``) is passed as is. A model folder written by
    ``superionic finetune`` becomes the calculator :func:`superionic.engines.finetune.finetuned_calculator`
    with the folder and its weights' SHA-256: the job's identity holds the hash, not the path
    (:mod:`superionic.fingerprint` leaves ``model_dir`` out), so a model retrained in the same
    folder re-runs what used it, and a model moved elsewhere does not.
    """
    if not is_model_folder(force_field):
        if force_field.removeprefix("MLFF.") == "SevenNet":
            # SevenNet-0's weights ship inside the sevenn wheel (offline); the CPU, never a GPU probe
            return {"force_field_name": force_field, "calculator_kwargs": {"device": "cpu"}}
        return {"force_field_name": force_field}
    from superionic.engines.finetune import read_model_folder

    meta = read_model_folder(force_field)
    return {
        "force_field_name": {"@module": "superionic.engines.finetune", "@callable": "finetuned_calculator"},
        "calculator_kwargs": {
            "model_dir": str(Path(force_field).expanduser().resolve()),
            "weights_sha256": meta["weights_sha256"],
        },
    }


def relax_maker(settings: dict[str, Any]) -> ForceFieldRelaxMaker:
    """Return the atomate2 relax maker for the merged stage settings.

    Keys used: ``force_field`` (default CHGNet), ``fmax_ev_per_A``, ``max_steps``,
    ``relax_cell``, ``optimizer``.
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    s = MLIPRelaxSettings.of(settings)
    # atomate2's default optimizer (FIRE) is left implicit, so that relaxations set up before the
    # optimizer became a setting keep their fingerprints
    optimizer = {} if s.optimizer == "FIRE" else {"optimizer_kwargs": {"optimizer": s.optimizer}}
    return ForceFieldRelaxMaker(
        name="mlip relax",
        **force_field_kwargs(s.force_field),
        relax_cell=s.relax_cell,
        steps=s.max_steps,
        relax_kwargs={"fmax": s.fmax_ev_per_A},
        **optimizer,
    )


def temperature_schedule(
    start_K: float, target_K: float, ramp_steps: int, production_steps: int
) -> list[float]:
    """Return the per-step temperature: a linear ramp, then constant at the target."""
    ramp = np.linspace(start_K, target_K, ramp_steps, endpoint=False) if ramp_steps else np.array([])
    return [float(t) for t in np.concatenate([ramp, np.full(production_steps, target_K)])]


def _checkpoint_every(settings: dict[str, Any]) -> int:
    """Return ``checkpoint_every_steps`` (default 500; 0 turns checkpoints off), checked."""
    value = settings.get("checkpoint_every_steps")
    if value is None:
        return 500
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError.single(
            "checkpoint_every_steps",
            "not a number of MD steps",
            value,
            "a whole number >= 0 (0: no checkpoints)",
        )
    return value


def md_maker(settings: dict[str, Any], temperature_K: float) -> ResumableMDMaker:
    """Return the MD maker for one temperature (atomate2's, with checkpoints: :mod:`.mlip_md`).

    Keys used: ``force_field``, ``timestep_fs``, ``ramp_steps``, ``production_steps``,
    ``start_temperature_K``, ``ensemble``, ``thermostat``, ``trajectory_interval``, ``seed``
    (initial velocities and, for Langevin, the thermostat noise), ``checkpoint_every_steps``
    (default 500); for ``ensemble: npt`` ``pressure_kbar`` (default 0) with ASE's MTK
    Nose-Hoover chain NpT.
    """
    from ase import units

    from superionic.engines.mlip_md import ResumableMDMaker

    checkpoint_every = _checkpoint_every(settings)
    s = MLIPMDSettings.of(settings)
    ramp, prod = s.ramp_steps, s.production_steps
    schedule: float | list[float]
    if ramp:
        schedule = temperature_schedule(s.start_temperature_K, temperature_K, ramp, prod)
    else:
        schedule = float(temperature_K)
    thermostat, ensemble, dt = s.thermostat, s.ensemble, s.timestep_fs
    kwargs: dict[str, Any] = {}
    dynamics = _DYNAMICS[thermostat]
    if ensemble == "npt":
        # ASE's MTK Nose-Hoover chain barostat: any cell shape (ASE's older NPT needs an
        # upper-triangular cell and a pfactor); damping 100 and 1000 steps as ASE suggests
        dynamics = "nose-hoover-chain"
        kwargs["pressure"] = s.pressure_kbar
        kwargs["ase_md_kwargs"] = {"tdamp": 100 * dt * units.fs, "pdamp": 1000 * dt * units.fs}
    elif thermostat == "nose-hoover":
        kwargs["ase_md_kwargs"] = {"ttime": 50.0}  # fs; ASE NPT thermostat time constant
    return ResumableMDMaker(
        name=f"mlip md {temperature_K:g} K",
        **force_field_kwargs(s.force_field),
        time_step=dt,
        n_steps=ramp + prod,
        ensemble=ensemble,
        dynamics=dynamics,
        temperature=schedule,
        traj_interval=s.trajectory_interval,
        mb_velocity_seed=s.seed,
        zero_linear_momentum=True,
        ionic_step_data=("energy",),
        store_trajectory="partial",
        checkpoint_every_steps=checkpoint_every,
        **kwargs,
    )


def quench_schedule(start_K: float, melt_K: float, heat: int, hold: int, quench: int) -> list[float]:
    """Per-step temperature of a melt-quench: linear heat, hold at T_melt, linear quench back."""
    up = np.linspace(start_K, melt_K, heat, endpoint=False)
    down = np.linspace(melt_K, start_K, quench)
    return [float(t) for t in np.concatenate([up, np.full(hold, melt_K), down])]


def quench_maker(settings: dict[str, Any], melt_K: float, seed: int = 0) -> ResumableMDMaker:
    """NVT Nose-Hoover melt-quench in one MD run (heat, hold, quench; a per-step temperature list).

    Keys: ``start_temperature_K``, ``heat_ps``, ``hold_ps``, ``quench_ps``, ``timestep_fs``,
    ``trajectory_interval``, ``force_field``, ``checkpoint_every_steps``.
    """
    from superionic.engines.mlip_md import ResumableMDMaker

    checkpoint_every = _checkpoint_every(settings)
    s = MLIPMDSettings.of({"trajectory_interval": 50, **settings})  # a quench keeps fewer frames
    dt = s.timestep_fs
    steps = [max(1, round(ps * 1000 / dt)) for ps in (s.heat_ps, s.hold_ps, s.quench_ps)]
    schedule = quench_schedule(s.start_temperature_K, melt_K, *steps)
    return ResumableMDMaker(
        name=f"mlip quench {melt_K:g} K",
        **force_field_kwargs(s.force_field),
        time_step=dt,
        n_steps=len(schedule),
        ensemble="nvt",
        dynamics="nose-hoover",
        temperature=schedule,
        traj_interval=s.trajectory_interval,
        mb_velocity_seed=int(seed),
        zero_linear_momentum=True,
        ionic_step_data=("energy",),
        store_trajectory="partial",
        ase_md_kwargs={"ttime": 50.0},
        checkpoint_every_steps=checkpoint_every,
    )


def md_jobs(
    settings: dict[str, Any], temperature_K: float, structure: Any, name: str
) -> tuple[list, Any, Any]:
    """MLIP MD at one temperature: one resumable run (ramp and production together).

    Returns
    -------
    tuple
        ``([job], trajectory reference (a stored object), {"structure": final structure})``.
    """
    job = _make("md_maker", settings, [temperature_K], structure, name)
    return [job], job.output.objects["trajectory"], {"structure": job.output.structure}


def extension_jobs(
    settings: dict[str, Any], temperature_K: float, last: dict[str, Any], name: str, part: int
) -> tuple[list, Any, dict[str, Any]]:
    """One more production run from the final structure in ``last`` (for target_rsd).

    No ramp; velocities are redrawn at ``temperature_K`` with seed ``seed + part``. The run is
    ``production_steps`` long.

    Returns
    -------
    tuple
        ``(jobs, trajectory reference, {"structure": reference of the new end})``.
    """
    seed = MLIPMDSettings.of(_without_model(settings)).seed + part
    job = _make(
        "md_maker", {**settings, "ramp_steps": 0, "seed": seed}, [temperature_K], last["structure"], name
    )
    job.metadata["segment"] = f"production_{part}"
    return [job], job.output.objects["trajectory"], {"structure": job.output.structure}


def quench_jobs(
    settings: dict[str, Any], melt_K: float, structure: Any, name: str, seed: int = 0
) -> tuple[list, Any]:
    """MLIP melt-quench as one MD run (see :func:`quench_maker`); returns ``([job], final structure)``."""
    job = _make("quench_maker", settings, [melt_K, seed], structure, name)
    return [job], job.output.structure


def density_maker(settings: dict[str, Any], melt_K: float, name: str, method: str) -> ResumableMDMaker:
    """Return the MD maker of the density step at T_melt (``density_ps`` long).

    ``method`` ``npt``: an NpT run (MTK Nose-Hoover chain); ``mpmorph``: the NVT runs of
    atomate2's EOS volume search (see :func:`superionic.stages.quench.density_jobs`).
    """
    if _model_reference(settings) is not None:
        raise SpecError.single(
            "force_field",
            "the density step runs inside atomate2's volume search, which cannot wait for a model",
            "finetuned",
            "a force field name or a model folder for the quench stage's density step",
        )
    s = MLIPMDSettings.of(settings)
    steps = max(1, round(s.density_ps * 1000 / s.timestep_fs))
    md_settings = {
        **settings,
        "ensemble": "npt" if method == "npt" else "nvt",
        "thermostat": "nose-hoover",
        "ramp_steps": 0,
        "production_steps": steps,
    }
    maker = md_maker(md_settings, melt_K)
    maker.name = f"{name} density {method}"
    return maker


def _model_reference(settings: dict[str, Any]) -> Any:
    """Return the finetune stage's output when ``force_field`` is it (``force_field: finetuned``)."""
    force_field = settings.get("force_field")
    return None if force_field is None or isinstance(force_field, str) else force_field


def _without_model(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "force_field" or isinstance(v, str)}


def _make(builder: str, settings: dict[str, Any], args: list[Any], structure: Any, name: str) -> Any:
    """Return the job of maker ``builder`` (relax_maker, md_maker, quench_maker) on ``structure``.

    With ``force_field`` the finetune stage's output, the model is not known when the campaign
    is built: the job is :func:`with_model`, which builds the maker once the model exists.
    """
    model = _model_reference(settings)
    if model is None:
        maker = globals()[builder](settings, *args)
        maker.name = name
        return maker.make(structure)
    job = with_model(builder, model, _without_model(settings), list(args), structure, name)
    job.name = name
    return job


@job
def with_model(
    builder: str, model: dict[str, Any], settings: dict[str, Any], args: list[Any], structure: Any, name: str
) -> Any:
    """Build the MLIP job ``builder`` on the campaign's fine-tuned model and replace this job with it.

    ``model`` is the finetune stage's output: its ``use`` (``finetuned``, or ``pretrained`` when
    the fine-tuned model was not better) and where the store keeps the model. The replacing job
    keeps this job's metadata and identity (jobflow's replace), so later jobs read its output.
    """
    from jobflow import CURRENT_JOB, Response

    from superionic.engines.finetune import model_folder

    if model.get("use") == "finetuned":
        force_field = str(model_folder(model["model"], CURRENT_JOB.store))
    else:
        force_field = "CHGNet"
    maker = globals()[builder]({**settings, "force_field": force_field}, *args)
    maker.name = name
    new = maker.make(structure)
    if CURRENT_JOB.job is not None:
        new.metadata = {**(CURRENT_JOB.job.metadata or {}), "force_field": force_field}
    new.config.expose_store = True
    return Response(replace=new)


class MLIPEngine(Engine):
    """Machine-learned potentials (CHGNet by default) through atomate2's forcefield makers."""

    name = "mlip"

    def check(self, stage: str, settings: dict[str, Any], systems: list[SystemView]) -> list[Problem]:
        """Refuse a ``force_field`` folder that is not a model, and NpT with another thermostat.

        MLIP NpT runs ASE's MTK Nose-Hoover chain only.
        """
        problems = force_field_problems(str(settings.get("force_field", "CHGNet")))
        if problems:
            return problems
        if stage == "md" and settings.get("ensemble") == "npt":
            if settings.get("thermostat", "nose-hoover") != "nose-hoover":
                return [
                    Problem(
                        "thermostat",
                        "MLIP NpT runs ASE's MTK Nose-Hoover chain barostat only",
                        settings.get("thermostat"),
                        "nose-hoover with ensemble npt",
                    )
                ]
        return []

    def relax(self, structure: Any, settings: dict[str, Any], name: str) -> Any:
        """Relax with the stage's force field (a fine-tuned model: see :func:`with_model`)."""
        job = _make("relax_maker", settings, [], structure, name)
        return self.flow([job], self.relax_output(job), name)

    def write_inputs(self, structure: Any, stage: str, settings: dict[str, Any], out_dir: Path) -> list[Path]:
        """Write the POSCAR and the atomate2 maker's settings (``settings.json``)."""
        import json

        if stage not in self.writable:
            raise self._unsupported(stage)
        out_dir.mkdir(parents=True, exist_ok=True)
        structure.to(filename=str(out_dir / "POSCAR"), fmt="poscar")
        if stage == "relax":
            maker: Any = relax_maker(settings)
        else:
            maker = md_maker(
                {"production_steps": 1000, **settings}, float(settings.get("temperature_K", 300.0))
            )
        (out_dir / "settings.json").write_text(json.dumps(maker.as_dict(), indent=1, default=str))
        return [out_dir / "POSCAR", out_dir / "settings.json"]
