"""jobflow Makers for superionic's own stages (what atomate2 lacks)."""
