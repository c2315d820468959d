"""The in-process runtime: MLflow's pyfunc loaded in the gateway's own process and Python.

The fast path, inline batches and everything measured in the bench apply to these versions.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.models import Model

from gateway.runtimes.base import Loaded, flavor_of
from gateway.runtimes.sizing import object_graph_bytes
from registry_sync.hashing import directory_bytes

# Flavors whose loading is not thread-safe: torch.export's deserializer keeps one global,
# so two `pt2` models loading at once fail ("_CURRENT_DESERIALIZER is already set").
_SERIAL_FLAVORS = frozenset({"pytorch"})
_serial_loads = threading.Lock()


class InProcessRuntime:
    kind = "in_process"

    def load(self, path: Path) -> Loaded:
        with _one_at_a_time(path):
            pyfunc = mlflow.pyfunc.load_model(str(path))
        # The graph misses memory that native libraries hold outside Python; the files
        # they were loaded from bound that from below.
        size = max(object_graph_bytes(pyfunc), directory_bytes(path))
        return Loaded(model=pyfunc, size_bytes=size)

    def close(self) -> None:
        return None


def _one_at_a_time(path: Path) -> AbstractContextManager[Any]:
    """A lock for flavors that cannot load in parallel; nothing for the others."""
    try:
        flavor = flavor_of(Model.load(str(path / "MLmodel")))
    except Exception:  # unreadable here: mlflow's own load says why
        return nullcontext()
    return _serial_loads if flavor in _SERIAL_FLAVORS else nullcontext()
