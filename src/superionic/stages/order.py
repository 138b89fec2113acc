"""The ``order`` stage: N lowest-Ewald orderings of a disordered cell as one jobflow job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobflow import Maker, job
from pymatgen.core import Structure

from superionic.ordering import Ordering, count_orderings, order_by_ewald
from superionic.ordering.ewald import find_sublattices
from superionic.structures.polyanions import expand_polyanions

if TYPE_CHECKING:
    from jobflow import Flow

    from superionic.spec.loader import SystemInstance
    from superionic.spec.models import OrderStage


def ordered_structures(
    structure: Structure,
    n_structures: int,
    oxidation_states: dict[str, float],
    polyanions: dict[str, dict] | None = None,
    seed: int = 0,
    orientation: str = "random",
    clash_A: float = 1.6,
    **search: object,
) -> tuple[list[Ordering], list[Structure]]:
    """Order ``structure`` and expand its polyanions: the orderings and plain structures.

    ``search`` is passed to :func:`superionic.ordering.order_by_ewald` (``n_restarts``,
    ``round_counts``, ``group_by``, ``progress`` ...). Ordering ``k`` is expanded with seed
    ``seed + k``; oxidation states are removed from the returned structures.
    """
    orderings = order_by_ewald(structure, n_structures, oxidation_states, seed=seed, **search)  # type: ignore[arg-type]
    expanded = []
    for rank, o in enumerate(orderings):
        s = expand_polyanions(
            o.structure, polyanions or {}, seed=seed + rank, orientation=orientation, clash_A=clash_A
        )
        s.remove_oxidation_states()
        expanded.append(s)
    return orderings, expanded


@dataclass
class OrderMaker(Maker):
    """Make a job returning the ``n_structures`` lowest-Ewald-energy distinct orderings.

    Parameters
    ----------
    name : str
        Job name.
    n_structures : int
        Number of orderings.
    oxidation_states : dict
        Element -> charge.
    seed : int
        Random seed (the result is deterministic for a seed).
    n_restarts : int
        Annealing restarts.
    round_counts : bool
        Round non-integer site counts (keeping the cell neutral) instead of refusing them.
    polyanions : dict
        Central element -> unit geometry; these pseudo-sites are expanded into molecules.
    orientation : str
        ``random`` (seeded) or ``aligned`` orientation of the expanded molecules.
    clash_A : float
        Minimum distance between a ligand and any atom outside its unit.
    group_by : str
        ``wyckoff`` or ``occupancy`` (see :func:`superionic.ordering.ewald.find_sublattices`).
    """

    name: str = "order"
    n_structures: int = 1
    oxidation_states: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    n_restarts: int = 8
    round_counts: bool = False
    polyanions: dict[str, dict] = field(default_factory=dict)
    orientation: str = "random"
    clash_A: float = 1.6
    group_by: str = "wyckoff"

    def run(self, structure: Structure) -> tuple[list[Ordering], list[Structure]]:
        """Order ``structure`` now (no job): the orderings and their expanded structures."""
        return ordered_structures(
            structure,
            self.n_structures,
            self.oxidation_states,
            self.polyanions,
            seed=self.seed,
            orientation=self.orientation,
            clash_A=self.clash_A,
            n_restarts=self.n_restarts,
            round_counts=self.round_counts,
            group_by=self.group_by,
        )

    @job
    def make(self, structure: Structure) -> dict:
        """Order ``structure``.

        Returns
        -------
        dict
            ``structures`` (list of Structure, oxidation states removed),
            ``ewald_energies_ev``, ``vacated`` (per ordering: sublattice -> site indices),
            ``n_configurations`` (before symmetry), ``formula``, ``orientation_replicas`` (indices
            that repeat a site ordering with other polyanion orientations, when fewer distinct
            orderings than ``n_structures`` exist).

        """
        subs, _ = find_sublattices(structure, round_counts=self.round_counts, group_by=self.group_by)
        orderings, structures = self.run(structure)
        distinct = len(orderings)
        if distinct < self.n_structures:
            if not (self.polyanions and self.orientation == "random" and distinct):
                raise ValueError(
                    f"only {distinct} distinct orderings exist for {structure.composition.formula} "
                    f"in this cell, {self.n_structures} requested: lower n_structures or use a larger "
                    "supercell"
                )
            # Too few site orderings (e.g. the fully ordered Na3O(BH4) end member of a sweep): the
            # remaining replicas are the lowest orderings again with their polyanions turned to
            # other random orientations (seed + k), so a sweep keeps its replica count per system.
            for k in range(distinct, self.n_structures):
                again = orderings[k % distinct]
                s = expand_polyanions(
                    again.structure,
                    self.polyanions,
                    seed=self.seed + k,
                    orientation="random",
                    clash_A=self.clash_A,
                )
                s.remove_oxidation_states()
                orderings.append(again)
                structures.append(s)
        return {
            "structures": structures,
            "ewald_energies_ev": [o.ewald_energy_ev for o in orderings],
            "vacated": [o.vacated for o in orderings],
            "orientation_replicas": list(range(distinct, len(orderings))),
            "n_configurations": str(count_orderings(subs)),
            "formula": structures[0].composition.formula if structures else "",
        }


def order_maker_for(stage: OrderStage, system: SystemInstance) -> OrderMaker:
    """Return the OrderMaker of a campaign's ``order`` stage for one system.

    Parameters
    ----------
    stage : OrderStage
        The campaign's order stage (counts, seed, restarts, grouping).
    system : SystemInstance
        The system: its name, oxidation states and polyanions.

    Returns
    -------
    OrderMaker
    """
    return OrderMaker(
        name=f"{system.name} order",
        n_structures=stage.n_structures,
        oxidation_states=system.oxidation_states,
        seed=stage.seed,
        n_restarts=stage.n_restarts,
        round_counts=stage.round_counts,
        polyanions=system.polyanions,
        orientation=stage.orientation,
        clash_A=stage.clash_A,
        group_by=stage.group_by,
    )


def order_flow(stage: OrderStage, system: SystemInstance, /, **metadata: Any) -> Flow:
    """Build the ordering job of one system; output: its ``n_structures`` lowest orderings."""
    from jobflow import Flow

    from superionic.stages.common import staged

    job = order_maker_for(stage, system).make(system.structure)
    out = [job.output["structures"][i] for i in range(stage.n_structures)]
    return Flow([staged(job, "order", **metadata)], output=out, name=f"{system.name} order")
