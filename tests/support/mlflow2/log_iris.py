"""Run by MLflow 2.22's own interpreter (.venv-mlflow2): log an iris LogisticRegression with
MLflow 2.x's client and scikit-learn 1.5.2, register it, and print, as one JSON line, its version
and what MLflow 2.22's pyfunc predicts for the rows given (the reference the gateway must match).

    python log_iris.py TRACKING_URI NAME C ROWS_JSON
"""

import json
import sys

import mlflow
import mlflow.sklearn
import pandas as pd
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

uri, name, c, rows = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])
mlflow.set_tracking_uri(uri)
iris = load_iris(as_frame=True)
features = iris.data
model = LogisticRegression(C=c, max_iter=1000).fit(features, iris.target)
with mlflow.start_run(run_name=f"{name}-C{c:g}"):
    info = mlflow.sklearn.log_model(
        model, artifact_path="model", registered_model_name=name, input_example=features.head(2)
    )
version = int(info.registered_model_version)
pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
predictions = pyfunc.predict(pd.DataFrame(rows, columns=list(features.columns)))
print(json.dumps({"version": version, "predictions": [int(p) for p in predictions], "mlflow": mlflow.__version__}))
