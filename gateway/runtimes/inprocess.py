"""The in-process runtime: MLflow's pyfunc loaded in the gateway's own process and Python.

The fast path, inline batches and everything measured in the bench apply to these versions.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path

import mlflow.pyfunc
from mlflow.models import Model
from mlflow.models.model import MODEL_CODE_PATH

from gateway.runtimes import frameworks
from gateway.runtimes.base import DeviceRequest, Loaded, flavor_of
from gateway.runtimes.sizing import object_graph_bytes
from gateway.runtimes.worker import devices

# Flavors whose loading is not thread-safe: torch.export's deserializer keeps one global,
# so two `pt2` models loading at once fail ("_CURRENT_DESERIALIZER is already set").
_SERIAL_FLAVORS = frozenset({"pytorch"})
# Models from code (a flavor's ``model_code_path``: pyfunc, langchain, llama_index) are not
# either: MLflow runs their code with a stand-in ``dbutils`` module put into sys.modules and
# taken out after (mlflow.models.utils._mock_dbutils), and two such loads at once leave the
# stand-in there for good (the second restores what it found: the first one's).
_serial_loads = threading.Lock()


def loads_serially(metadata: Model) -> bool:
    """Whether a version must load with no other such load under way in this process."""
    if flavor_of(metadata) in _SERIAL_FLAVORS:
        return True
    return any(isinstance(conf, dict) and MODEL_CODE_PATH in conf for conf in metadata.flavors.values())


class InProcessRuntime:
    kind = "in_process"

    def load(self, path: Path, metadata: Model, device: DeviceRequest | None = None) -> Loaded:
        """Load with MLflow; given a ``device`` (a PyTorch version), on the device it resolves to here."""
        frameworks.prepare(metadata)  # Keras's backend, from the version's own MLmodel
        # Flavors whose loading is not thread-safe load one at a time.
        with _serial_loads if loads_serially(metadata) else nullcontext():
            if device is not None:
                pyfunc, where, why = devices.load(str(path), device.spec, device.source)
            else:
                pyfunc, where, why = mlflow.pyfunc.load_model(str(path)), "cpu", None
        # The graph misses memory that native libraries hold outside Python: the loader bounds
        # it from below by the files it was loaded from, whatever the runtime.
        off_host: dict[str, int] = {}
        size = object_graph_bytes(pyfunc, off_host)
        return Loaded(
            model=pyfunc, size_bytes=size, device=where, device_reason=why, device_bytes=off_host.get(where, 0)
        )

    def close(self) -> None:
        return None
