"""superionic: workflow orchestration for computational studies of solid electrolytes.

A campaign file (YAML) describes systems and stages; superionic turns it into jobflow graphs
(order -> relax -> hull -> nmr | md -> arrhenius ; quench), runs them locally on an embedded
store or ships them to SLURM through FireWorks, and writes tables and plots.
"""

__version__ = "0.1.0"
