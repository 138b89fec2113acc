"""Tables (CSV, markdown) and plots (PNG) from a campaign's store.

The entry points load on first use, so commands that only write a CSV (``order``, ``analyze``)
do not import matplotlib and jobflow through this package.
"""

from __future__ import annotations

from typing import Any

__all__ = ["campaign_status", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "campaign_status":
        from superionic.report.status import campaign_status

        return campaign_status
    if name == "write_report":
        from superionic.report.writer import write_report

        return write_report
    raise AttributeError(name)
