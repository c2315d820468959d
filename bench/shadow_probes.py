"""Two iris versions the traffic bench shadows to, to show that a slow or failing shadow
changes neither the primary's answers nor its p99 (issue 14).

bench/sections/traffic.py logs them once into its registry as pyfunc models with this file as their code
(``code_paths``), so the gateway imports it when it loads them; keep it free of bench imports.
"""

from __future__ import annotations

import time
from typing import Any

import mlflow.pyfunc
import numpy as np

SLOW_SECONDS = 0.05
FAILS_ABOVE_PETAL_WIDTH = 1.0  # cm: the bench's row has 2.3; the first iris rows, 0.2
PETAL_WIDTH = "petal width (cm)"


class SlowVersion(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Answers class 0 for every row, 50 ms late, without using the CPU meanwhile: the latency
    of a remote call or a GPU's queue, not a heavier model."""

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        time.sleep(SLOW_SECONDS)
        return np.zeros(len(model_input), dtype=np.int64)


class FailingVersion(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Raises on any row with a petal wider than 1 cm (the bench's row), answers class 0
    otherwise: its warm-up example (the first two iris rows) passes, so the gateway serves it."""

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        if (model_input[PETAL_WIDTH] > FAILS_ABOVE_PETAL_WIDTH).any():
            raise ValueError("a petal wider than 1 cm (the failure bench/shadow_probes.py injects)")
        return np.zeros(len(model_input), dtype=np.int64)
