"""A pyfunc model as code (MLflow's models-from-code), logged by test_oip_mlserver.py: it
answers a frame of three columns, so the Open Inference Protocol answers one output per
column. Logged as code, not pickled, so MLServer's environment loads it without this
repository on its path. Never imported: MLflow runs it (``set_model``) when it loads the model."""

from typing import Any

import mlflow
import pandas as pd


class Columns(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "doubled": model_input["x"] * 2,  # exact in binary floating point
                "next": model_input["n"] + 1,
                # object, as pandas < 3 makes strings: MLServer 1.7 cannot encode pandas 3's
                # own string dtype (KeyError 'O' in its pandas codec), a model that answers
                # with it gets a 500 there (the gateway encodes both)
                "shout": model_input["s"].str.upper().astype(object),
            }
        )


mlflow.models.set_model(Columns())
