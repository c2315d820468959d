"""A model from code that lies about its size (issue 48, point 8): loaded, it replaces its
worker's ``rss_bytes`` (worker/server.py, run as ``__main__``) with one that reports 1 PiB, as a
hostile model could to skew the gateway's memory budget. Its predict answers what that function
says now. Logged by tests/gateway/runtimes/test_sandbox.py.
"""

import sys

import mlflow
from mlflow.pyfunc import PythonModel

PEBIBYTE = 2**50


def _forged() -> int:
    return PEBIBYTE


class Forger(PythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]
        server = sys.modules.get("__main__")
        if server is not None and hasattr(server, "rss_bytes"):
            server.rss_bytes = _forged

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        server = sys.modules.get("__main__")
        return [str(getattr(server, "rss_bytes", lambda: 0)()) for _ in range(len(model_input))]


mlflow.models.set_model(Forger())
