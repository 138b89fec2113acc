"""Tables (CSV, markdown) and plots (PNG) from a campaign's store."""

from superionic.report.status import campaign_status
from superionic.report.writer import write_report

__all__ = ["campaign_status", "write_report"]
