"""Cache jobflow's output-reference schema check (a 50-400x speed-up of building DFT graphs).

``job.output.structure`` on an atomate2 VASP job makes jobflow validate the attribute against the
job's output schema (``validate_schema_access``), which regenerates the TaskDoc's whole JSON
schema on every access: 0.16 s each, and a paper-scale study (study B: 600 such accesses while
chaining MD runs) spent 96 of its 111 s of graph building there. The answer depends only on the
(model class, attribute) pair, so it is cached here; jobflow has no switch for it. Same results,
same errors (an exception is not cached and is raised again on the next call).
"""

from __future__ import annotations

import functools
from typing import Any

import jobflow.core.reference as _reference

_original = getattr(_reference.validate_schema_access, "__wrapped__", _reference.validate_schema_access)


@functools.lru_cache(maxsize=4096)
def _cached(schema: Any, item: Any) -> tuple[bool, Any]:
    return _original(schema, item)


def _validate_schema_access(schema: Any, item: Any) -> tuple[bool, Any]:
    try:
        return _cached(schema, item)
    except TypeError:  # an unhashable item (never for attribute names): no cache
        return _original(schema, item)


_validate_schema_access.__wrapped__ = _original  # type: ignore[attr-defined]
_reference.validate_schema_access = _validate_schema_access
