"""Pydantic models of a campaign file.

Every model forbids unknown keys. Units are in the field names (``_K``, ``_fs``, ``_ps``,
``_ev_per_A``). Stages are a list, run in order; each names its kind with ``stage:``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

Engine = Literal["mlip", "vasp", "cp2k", "abinit"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class _StageBase(_Strict):
    engine: Engine | None = Field(None, description="Engine for this stage (default: campaign's).")
    preset: str | None = Field(None, description="Preset in configs/engines (default: campaign's).")


class OrderStage(_StageBase):
    """Ewald ordering of the disordered cell into the N lowest-energy distinct orderings."""

    stage: Literal["order"]
    n_structures: PositiveInt = 1
    seed: int = 0
    n_restarts: PositiveInt = 8
    round_counts: bool = Field(False, description="Round non-integer site counts, keeping neutrality.")
    orientation: Literal["random", "aligned"] = "random"
    clash_A: PositiveFloat = 1.6
    group_by: Literal["wyckoff", "occupancy"] = Field(
        "wyckoff",
        description="wyckoff: each Wyckoff site keeps its counts; occupancy: pool equal occupancies.",
    )


class RelaxStage(_StageBase):
    """Relaxation of positions (and cell) with the engine."""

    stage: Literal["relax"]
    fmax_ev_per_A: PositiveFloat | None = None
    max_steps: PositiveInt | None = None
    relax_cell: bool | None = None
    force_field: str | None = Field(
        None,
        description="MLIP engine: a force field (CHGNet), finetuned (this campaign's finetune stage) or "
        "a model folder from `superionic finetune` (relative to this file).",
    )


class FinetuneStage(_StageBase):
    """Fine-tune CHGNet on the campaign's own DFT single points.

    The single points are rattled and strained copies of each relaxed ordering, on the relax
    stage's DFT engine; MLIP stages with ``force_field: finetuned`` then use the model.
    """

    stage: Literal["finetune"]
    n_rattled: int = Field(
        6, ge=0, description="Rattled copies of each relaxed ordering (DFT single points)."
    )
    rattle_A: PositiveFloat = Field(0.05, description="Standard deviation of the rattle (A).")
    strain_range: float = Field(
        0.03, ge=0.0, lt=0.2, description="Isotropic strains -s and +s, each a single point (0: none)."
    )
    epochs: PositiveInt = 5
    learning_rate: PositiveFloat = 1.0e-3
    batch_size: PositiveInt = 8
    test_fraction: float = Field(
        0.2, gt=0.0, lt=0.9, description="Share of single points held out for the test errors."
    )
    val_fraction: float = Field(
        0.1, gt=0.0, lt=0.9, description="Share for validation (picks the best epoch)."
    )
    seed: int = 0
    use_if_worse: bool = Field(
        False, description="Use the fine-tuned model even when its test force error is not lower."
    )


class HullStage(_StageBase):
    """Energy above the convex hull against the competing phases in configs/."""

    stage: Literal["hull"]
    entries_file: Path | None = None
    compatibility: Literal["auto", "mp2020", "none"] = "auto"


class NMRStage(_StageBase):
    """Chemical shielding and electric field gradients."""

    stage: Literal["nmr"]
    systems: list[str] = Field(default_factory=list, description="Only these systems (default: all).")
    shielding: bool = True
    efg: bool = True
    isotopes: list[str] = Field(default_factory=list, description="e.g. [Li-6, B-11]; else defaults")
    shift_references_ppm: dict[str, float] = Field(
        default_factory=dict, description="element -> sigma_ref (ppm); delta_iso = sigma_ref - sigma_iso"
    )
    reference_compounds: bool = Field(
        False, description="compute configs/nmr/references.yaml compounds in the campaign for sigma_ref"
    )
    line_fwhm_ppm: PositiveFloat = 1.0
    environment_species: list[str] = Field(
        default_factory=list, description="neighbours counted to label sites, e.g. [Li, B]"
    )
    environment_cutoff_A: PositiveFloat = 3.5


class FrozenRuns(_Strict):
    """Extra MD runs with some species held fixed (study B: freeze Na, NH2 or BH4 in turn)."""

    species: list[list[str]] = Field(
        ...,
        min_length=1,
        description="One run per list: elements, or polyanion units (BH4, NH2, PS4, ...) frozen whole.",
    )
    temperatures_K: list[PositiveFloat] = Field(..., min_length=1)
    systems: list[str] = Field(default_factory=list, description="Only these systems (default: all).")


class MDStage(_StageBase):
    """Molecular dynamics at several temperatures, then diffusion analysis and Arrhenius fit."""

    stage: Literal["md"]
    systems: list[str] = Field(
        default_factory=list, description="Run MD only for these systems (default: every system)."
    )
    temperatures_K: list[PositiveFloat] = Field(..., min_length=1)
    species: str = "Li"
    force_field: str | None = Field(
        None,
        description="MLIP engine: a force field (CHGNet), finetuned (this campaign's finetune stage) or "
        "a model folder from `superionic finetune` (relative to this file).",
    )
    timestep_fs: PositiveFloat = 2.0
    production_steps: PositiveInt = 5000
    ramp_steps: int = Field(0, ge=0, description="Linear heating from start_temperature_K.")
    start_temperature_K: PositiveFloat = 100.0
    ensemble: Literal["nvt", "npt"] = "nvt"
    thermostat: Literal["nose-hoover", "langevin", "berendsen"] = "nose-hoover"
    trajectory_interval: PositiveInt = 10
    fit_start: float = Field(0.1, ge=0, lt=1)
    fit_end: float = Field(0.7, gt=0, le=1)
    seed: int = 0
    rotation_units: list[Literal["BH4", "NH2", "PS4", "TaCl6", "ZrCl6", "AlH4"]] = Field(
        default_factory=list, description="Polyanions whose orientation autocorrelation is analysed."
    )
    frozen_species: list[str] = Field(
        default_factory=list,
        description="Elements (or polyanion units: BH4, NH2, ...) held fixed during every MD run.",
    )
    frozen_runs: FrozenRuns | None = Field(
        None, description="Extra runs, one per frozen set, beside the normal ones (study B)."
    )
    target_rsd: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Extend MD in chunks until the diffusivity RSD is at most this (study C).",
    )
    max_chunks: PositiveInt = Field(5, description="Most production chunks per temperature with target_rsd.")
    production_chunks: PositiveInt = Field(
        1, description="DFT engines: split production into this many chained runs (each within a walltime)."
    )
    checkpoint_every_steps: int | None = Field(
        None,
        ge=0,
        description="MLIP: write a restart checkpoint every this many steps (preset default 500; 0: none).",
    )


class QuenchStage(_StageBase):
    """Melt-quench generation of amorphous structures."""

    stage: Literal["quench"]
    systems: list[str] = Field(default_factory=list, description="Only these systems (default: all).")
    melt_temperatures_K: list[PositiveFloat] = Field(..., min_length=1)
    force_field: str | None = Field(
        None,
        description="MLIP engine: a force field (CHGNet), finetuned (this campaign's finetune stage) or "
        "a model folder from `superionic finetune` (relative to this file).",
    )
    start_temperature_K: PositiveFloat = 100.0
    heat_ps: PositiveFloat = 2.0
    hold_ps: PositiveFloat = 20.0
    quench_ps: PositiveFloat = 2.0
    timestep_fs: PositiveFloat = 2.0
    replicas: PositiveInt = 1
    trajectory_interval: PositiveInt = 50
    relax_after: bool = False
    center: str | None = Field(None, description="polyhedron centre for the analysis, e.g. Ta")
    ligands: list[str] = Field(default_factory=list, description="e.g. [Cl] or [Cl, O]")
    cutoff_A: PositiveFloat = 3.0
    shape: Literal["octahedron", "tetrahedron"] | None = None
    compare_with: Literal["study_d"] | None = None
    density: Literal["none", "npt", "mpmorph"] = Field(
        "none",
        description="Density step at T_melt before the quench: 'npt' (an NpT run of density_ps) or "
        "'mpmorph' (atomate2's MPMorph equation-of-state volume search with NVT runs of density_ps).",
    )
    density_ps: PositiveFloat = Field(2.0, description="Length of each density-step MD run (ps).")
    density_strain: PositiveFloat = Field(
        0.2, lt=0.5, description="mpmorph: initial linear strain range (+-) of the EOS volumes."
    )
    quench_segments: PositiveInt = Field(
        4, description="cp2k: runs at stepped temperatures that approximate each constant-rate ramp."
    )
    snapshot_temperature_K: PositiveFloat | None = Field(
        None,
        description="Average the local structure over snapshots of the md stage's run at this "
        "temperature (study C: 600 K), for the crystal and every quenched structure.",
    )
    snapshot_every_ps: PositiveFloat = Field(2.0, description="Time between analysed snapshots (ps).")


Stage = Annotated[
    OrderStage | RelaxStage | FinetuneStage | HullStage | NMRStage | MDStage | QuenchStage,
    Field(discriminator="stage"),
]

STAGE_NAMES = ("order", "relax", "finetune", "hull", "nmr", "md", "quench")


class SystemSpec(_Strict):
    """One system, or a sweep of systems when any parameter is a list.

    Give exactly one of ``prototype`` (a name in configs/prototypes, with ``params``) or
    ``structure`` (a CIF/POSCAR path, relative to the campaign file).
    """

    name: str | None = None
    prototype: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sites: dict[str, dict[str, float]] = Field(default_factory=dict)
    structure: Path | None = None
    oxidation_states: dict[str, float] = Field(default_factory=dict)
    polyanions: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Centre element -> {ligand, count, bond_A, geometry, angle_deg}: units ordered "
        "as one pseudo-site and expanded afterwards (prototypes declare BH4/NH2 themselves).",
    )
    supercell: tuple[PositiveInt, PositiveInt, PositiveInt] = (1, 1, 1)

    @model_validator(mode="after")
    def _one_source(self) -> SystemSpec:
        if (self.prototype is None) == (self.structure is None):
            raise ValueError("give exactly one of 'prototype' or 'structure'")
        return self


class StoreSpec(_Strict):
    """Where results live: an embedded folder (default) or a MongoDB URI."""

    path: Path | None = None
    uri: str | None = None
    database: str = "superionic"
    password_env: str | None = Field(
        None, description="Environment variable holding the password (keeps it out of the file)."
    )
    password_file: Path | None = Field(None, description="File holding only the password (chmod 600).")

    @model_validator(mode="after")
    def _uri_scheme(self) -> StoreSpec:
        if self.uri is not None and not self.uri.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("uri must start with mongodb:// or mongodb+srv://")
        if self.uri is not None and self.path is not None:
            raise ValueError("give either 'path' or 'uri', not both")
        if (self.password_env or self.password_file) and self.uri is None:
            raise ValueError("password_env and password_file go with a uri")
        if self.password_env and self.password_file:
            raise ValueError("give either 'password_env' or 'password_file', not both")
        return self


class ResourcesSpec(_Strict):
    """What each job may use where it runs (a bare string in older files is the profile name)."""

    profile: str = Field("local", description="Free-form label of the site profile.")
    threads: PositiveInt | None = Field(
        None,
        description=(
            "CPUs given to a run or worker (default: SLURM_CPUS_PER_TASK, else OMP_NUM_THREADS, else "
            "the machine's cores); divided among the jobs a worker runs at once."
        ),
    )
    walltime_s: PositiveFloat | None = Field(
        None,
        description=(
            "Seconds a VASP run may take before custodian stops it cleanly (default: the time left in "
            "the SLURM allocation when the run starts)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _from_profile_name(cls, data: Any) -> Any:
        return {"profile": data} if isinstance(data, str) else data


class CampaignSpec(_Strict):
    """A campaign: systems, the stages each goes through, engine and store."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    engine: Engine = "mlip"
    preset: str = "default"
    systems: list[SystemSpec] = Field(..., min_length=1)
    stages: list[Stage] = Field(..., min_length=1)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    store: StoreSpec = Field(default_factory=StoreSpec)
    reproduces: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_]+$",
        description="configs/experiments/<name>.yaml: the published numbers `report` puts ours beside",
    )
