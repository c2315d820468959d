"""A PythonModel without predict_stream: it predicts, and cannot stream."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class Upper(PythonModel):
    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        if isinstance(model_input, dict):
            return [str(model_input.get("prompt", "")).upper()]
        return [str(value).upper() for value in model_input.iloc[:, 0]]


mlflow.models.set_model(Upper())
