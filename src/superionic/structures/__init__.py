"""Crystal prototypes (as data in ``configs/prototypes``) and structure helpers."""

from superionic.structures.prototypes import (
    Prototype,
    build_disordered,
    list_prototypes,
    load_prototype,
)

__all__ = ["Prototype", "build_disordered", "list_prototypes", "load_prototype"]
