"""The in-process runtime: MLflow's pyfunc loaded in the gateway's own process and Python.

The fast path, inline batches and everything measured in the bench apply to these versions.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path

import mlflow.pyfunc
from mlflow.models import Model

from gateway.runtimes.base import Loaded, flavor_of
from gateway.runtimes.sizing import object_graph_bytes

# Flavors whose loading is not thread-safe: torch.export's deserializer keeps one global,
# so two `pt2` models loading at once fail ("_CURRENT_DESERIALIZER is already set").
_SERIAL_FLAVORS = frozenset({"pytorch"})
_serial_loads = threading.Lock()


class InProcessRuntime:
    kind = "in_process"

    def load(self, path: Path, metadata: Model) -> Loaded:
        # Flavors whose loading is not thread-safe load one at a time.
        with _serial_loads if flavor_of(metadata) in _SERIAL_FLAVORS else nullcontext():
            pyfunc = mlflow.pyfunc.load_model(str(path))
        # The graph misses memory that native libraries hold outside Python: the loader bounds
        # it from below by the files it was loaded from, whatever the runtime.
        return Loaded(model=pyfunc, size_bytes=object_graph_bytes(pyfunc))

    def close(self) -> None:
        return None
