"""`--only registry-scale`: registries of 1,000 and 10,000 versions: bench/registry_scale.py."""

from __future__ import annotations

import registry_scale
from harness import VENV_BIN, WORK, Run


def section(run: Run, sizes: list[int]) -> None:
    """Registries of 1,000 and 10,000 versions: bench/registry_scale.py."""
    run.sections["registry-scale"] = registry_scale.section(
        WORK, sizes=sizes, venv_bin=VENV_BIN, cpus=run.server_cpus, log=run.log
    )
