"""The seam between the data plane and the place a loaded version runs.

A runtime loads a version's verified files and hands back a :class:`Loaded`: the model as the
data plane uses it (``predict(data, params=None)`` and ``metadata``, as MLflow's pyfunc has
them), its measured size in bytes, and how to unload it. The cache, the batcher and the
protocols see only that; whether the model runs in this process (``inprocess.py``) or in a
worker on an environment of its own (``isolated.py``) is decided per version by
``placement.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from mlflow.models import Model

RuntimeKind = Literal["in_process", "isolated"]


def _nothing() -> None:
    return None


@dataclass(eq=False)
class Loaded:
    model: Any  # predict(data, params=None) and metadata, like mlflow.pyfunc.PyFuncModel
    size_bytes: int  # measured: the object graph here, or what the worker's RSS grew by
    unload: Callable[[], Any] = field(default=_nothing)  # must not block: called on the event loop
    device: str = "cpu"  # where it computes (PyTorch versions: ``cuda:0``...)
    device_reason: str | None = None  # why there, for PyTorch versions (the setting, a tag, a fallback)
    device_bytes: int = 0  # what its tensors hold on ``device`` when that is not the CPU


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """The device a PyTorch version asks for (parsed: ``auto``, ``cpu``, ``cuda:1``...) and who
    asked, in words (``GATEWAY_DEVICE=auto``, ``tagged gateway.device=cuda``); runtimes resolve
    it on the host that computes (gateway.runtimes.worker.devices). Other flavors have none."""

    spec: str = "auto"
    source: str = "GATEWAY_DEVICE=auto"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a version runs and why, as operators see it (``GET /models/{name}/versions/{v}``)."""

    runtime: RuntimeKind
    reason: str
    environment: str | None = None  # the environment's key, for an isolated version
    python: str | None = None  # the Python it runs on
    note: str | None = None  # something an operator should know (no interpreter of its Python here)
    mismatches: tuple[str, ...] = ()  # the requirements this process did not meet
    device: str = "cpu"  # where it computes, once loaded
    device_reason: str | None = None  # why there (PyTorch versions)
    refused: str | None = None  # why it cannot run here at all (its environment could not be built)


def flavor_of(metadata: Model) -> str:
    """The flavor that does the work (``sklearn``, ``pytorch``...), else ``python_function``."""
    pyfunc_conf = metadata.flavors.get("python_function", {})
    module = str(pyfunc_conf.get("loader_module", ""))
    if module.startswith("mlflow."):
        return module.removeprefix("mlflow.")
    others = [name for name in metadata.flavors if name != "python_function"]
    return others[0] if others else "python_function"
