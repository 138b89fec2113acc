"""Ordering of disordered cells by electrostatic (Ewald) energy."""

from superionic.ordering.ewald import Ordering, Sublattice, count_orderings, order_by_ewald

__all__ = ["Ordering", "Sublattice", "count_orderings", "order_by_ewald"]
