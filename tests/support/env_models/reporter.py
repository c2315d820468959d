"""A model from code (MLflow's models-from-code: nothing pickled) that reports the environment it
runs in: for each row, what its ``package`` column asks about. Logged with different pip
requirements by tests/gateway/runtimes, it shows which environment served a request.

- a distribution's name: its installed release, or "missing";
- ``import:<module>``: the module imported, then "imported";
- ``python``: the interpreter's version; ``pid``: the serving process's id.

Params ``hold_file`` and ``hold_seconds``: create that file (a relative name: in its TMPDIR),
then wait that long before answering (a request a test can catch in flight); with
``release_file`` too, wait only until that file appears there (``hold_seconds`` at most): the
test lets it go when it has seen what it wanted, however slow the host.
"""

import importlib
import importlib.metadata
import os
import sys
import tempfile
import time

import mlflow
from mlflow.pyfunc import PythonModel


class Reporter(PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        params = params or {}
        if params.get("hold_file"):  # a relative name: in its TMPDIR (a sandboxed worker's scratch)
            with open(os.path.join(tempfile.gettempdir(), params["hold_file"]), "w"):
                pass
            deadline = time.monotonic() + float(params.get("hold_seconds") or 0)
            release = params.get("release_file")
            while time.monotonic() < deadline and not (
                release and os.path.exists(os.path.join(tempfile.gettempdir(), release))
            ):
                time.sleep(0.01)
        out = []
        for package in model_input["package"]:
            if package == "python":
                out.append("{}.{}.{}".format(*sys.version_info[:3]))
            elif package == "pid":
                out.append(str(os.getpid()))
            elif package.startswith("import:"):
                importlib.import_module(package.split(":", 1)[1])
                out.append("imported")
            else:
                try:
                    out.append(importlib.metadata.version(package))
                except (importlib.metadata.PackageNotFoundError, ValueError):  # "": the warm-up's row
                    out.append("missing")
        return out


mlflow.models.set_model(Reporter())
