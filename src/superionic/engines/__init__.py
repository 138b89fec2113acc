"""Engines: one interface (:mod:`.base`), typed settings (:mod:`.settings`), a module per engine.

``vasp``, ``cp2k``, ``mlip`` and ``abinit`` each implement :class:`~superionic.engines.base.Engine`;
:func:`~superionic.engines.base.get_engine` returns one by name. Importing this package imports
no engine (so ``superionic --help`` stays fast).
"""

from superionic.engines.settings import (
    StageOverrides,
    load_preset,
    settings_model,
    stage_overrides,
    stage_settings,
)

__all__ = ["StageOverrides", "load_preset", "settings_model", "stage_overrides", "stage_settings"]
