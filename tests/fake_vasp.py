"""A stand-in for the VASP executable (tests only): fails once with ZBRENT, then 'converges'.

First call: writes vasp.out with VASP's ZBRENT error and a CONTCAR, as a real failed run does.
Second call: copies the real outputs of $FAKE_VASP_REF/outputs (decompressed, `.relax2` dropped),
so custodian's validators and atomate2's parser see a finished run.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

marker = Path(".fake_vasp_attempts")
attempt = int(marker.read_text()) + 1 if marker.exists() else 1
marker.write_text(str(attempt))
if attempt == 1:
    Path("vasp.out").write_text(" running on 1 nodes\n ZBRENT: fatal error in bracketing\n")
    shutil.copy("POSCAR", "CONTCAR")
else:
    ref = Path(os.environ["FAKE_VASP_REF"]) / "outputs"
    for item in ref.iterdir():
        skip = ("INCAR", "KPOINTS", "POSCAR", "POTCAR", "custodian", "vasp.out")
        if ".relax1" in item.name or item.name.startswith(skip):
            continue
        name = item.name.replace(".relax2", "").removesuffix(".gz")
        opener = gzip.open if item.name.endswith(".gz") else open
        with opener(item, "rb") as src, open(name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    Path("vasp.out").write_text(
        " running on 1 nodes\n reached required accuracy - stopping structural energy minimisation\n"
    )
