"""`--only memory`: RSS against the memory budget under cache churn: bench/memory_churn.py."""

from __future__ import annotations

import memory_churn
from harness import VENV_BIN, WORK, Run


def section(run: Run, quick: bool) -> None:
    """RSS against the memory budget under cache churn: bench/memory_churn.py."""
    plan = memory_churn.QUICK if quick else memory_churn.Plan()
    run.sections["memory"] = memory_churn.section(WORK, venv_bin=VENV_BIN, cpus=run.server_cpus, log=run.log, plan=plan)
