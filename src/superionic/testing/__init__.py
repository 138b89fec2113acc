"""Testing utilities: replay of recorded engine outputs (atomate2's mock-VASP style), used by tests.

Nothing in the production code path imports this package: ``superionic run`` always starts the
real engine. Tests enter :func:`vasp_replay` around an in-process run to replace the VASP
executable by recorded outputs, after checking the inputs each job wrote against a reference
``inputs/`` folder.
"""

from superionic.testing.vasp import ReplayJob, ReplayMismatchError, potcar_spec_only, vasp_replay

__all__ = ["ReplayJob", "ReplayMismatchError", "potcar_spec_only", "vasp_replay"]
