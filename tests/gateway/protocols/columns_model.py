"""A pyfunc model as code (MLflow's models-from-code), logged by test_oip_mlserver.py: it
answers a frame of five columns, so the Open Inference Protocol answers one output per
column: numbers, strings, and two columns of JSON values (dicts, lists) that MLServer's pandas
codec answers as ``pd_json``. Logged as code, not pickled, so MLServer's environment loads it without this
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
                "record": pd.Series(
                    [
                        {"x": x, "s": s}
                        for x, s in zip(model_input["x"].tolist(), model_input["s"].tolist(), strict=True)
                    ],
                    dtype=object,
                ),
                "pair": pd.Series([[n, n + 1] for n in model_input["n"].tolist()], dtype=object),
            }
        )


mlflow.models.set_model(Columns())
