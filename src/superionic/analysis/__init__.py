"""Pure analysis functions on arrays and pymatgen objects (no jobflow, no FireWorks)."""
