"""Which device a PyTorch version computes on, and loading it there.

Shared by the gateway (in-process versions) and the isolated worker (its versions), like
``raw.py``: it imports nothing but the standard library until a PyTorch version loads, and
keeps to Python 3.8.

MLflow's pyfunc picks a device by itself (``model_config["device"]``, else
``MLFLOW_DEFAULT_PREDICTION_DEVICE``, else CUDA when there is one: mlflow/pytorch
``_load_pyfunc``), and refuses a program exported with ``torch.export`` (its default ``pt2``
format) on any device other than the one its weights were saved on. So the gateway always
names the device, and where MLflow cannot load a version there it loads it on the CPU and
moves it; where that fails too, the version serves from the CPU with the reason, never a
failed load.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

CHOICES = "auto, cpu, cuda or cuda:N"


def parse(spec: str) -> str:
    """``spec`` in its one spelling (``cuda:1``, ``auto``...); ValueError for anything else."""
    value = str(spec).strip().lower()
    if value in ("auto", "cpu", "cuda"):
        return value
    if value.startswith("cuda:") and value[5:].isdigit():
        return f"cuda:{int(value[5:])}"
    raise ValueError(f"{spec!r} is not a device ({CHOICES})")


def resolve(spec: str, source: str) -> tuple[str, str]:
    """The device ``spec`` (parsed) stands for on this host, and why, in words; ``source`` says
    who asked (``GATEWAY_DEVICE=auto``, ``tagged gateway.device=cuda:1``)."""
    import torch

    if spec == "auto":
        default = os.environ.get("MLFLOW_DEFAULT_PREDICTION_DEVICE", "").strip()
        if default:  # what `mlflow models serve` would have used: moving off it changes nothing
            try:
                chosen = parse(default)
            except ValueError:
                chosen = "auto"
            if chosen != "auto":
                return resolve(chosen, f"{source} and MLFLOW_DEFAULT_PREDICTION_DEVICE={default}")
        if torch.cuda.is_available():
            return "cuda:0", f"{source}: this host has CUDA"
        return "cpu", f"{source}: this host has no CUDA device"
    if spec == "cpu":
        return "cpu", source
    index = 0 if spec == "cuda" else int(spec[5:])
    if not torch.cuda.is_available():
        return "cpu", f"{source}, but torch {torch.__version__} finds no CUDA device on this host: serving on the CPU"
    count = torch.cuda.device_count()
    if index >= count:
        return "cpu", f"{source}, but this host has {count} CUDA device(s): serving on the CPU"
    return f"cuda:{index}", source


def load(path: str, spec: str, source: str) -> tuple[Any, str, str]:
    """MLflow's pyfunc of the PyTorch version at ``path`` on the device ``spec`` resolves to:
    the pyfunc, the device it computes on, and why."""
    import mlflow.pyfunc

    if "model_config" not in inspect.signature(mlflow.pyfunc.load_model).parameters:
        # An old MLflow in a worker's environment (before 2.x's model_config): it chooses.
        pyfunc = mlflow.pyfunc.load_model(path)
        return pyfunc, device_of(pyfunc), f"MLflow {mlflow.__version__} here takes no device: its own choice"
    device, reason = resolve(spec, source)
    if device == "cpu":
        return _load(path, "cpu"), "cpu", reason
    try:
        return _load(path, device), device, reason
    except Exception as exc:  # MLflow refuses pt2 weights saved elsewhere; anything else too
        refused = _said(exc)
    pyfunc = _load(path, "cpu")
    try:
        move(pyfunc, path, device)
    except Exception as exc:
        pyfunc = _load(path, "cpu")  # a half-moved module would answer nothing
        why = f"it could not be placed on {device} ({refused}; moving it there: {_said(exc)})"
        return pyfunc, "cpu", f"{reason}; {why}: serving on the CPU"
    return pyfunc, device, f"{reason}; loaded on the CPU and moved ({refused})"


def move(pyfunc: Any, path: str, device: str) -> None:
    """Move a PyTorch pyfunc loaded on the CPU to ``device``: an exported program through
    ``torch.export``'s own pass, which also moves the device its graph names (a module's
    ``.to`` leaves those behind), anything else by ``.to``. Raises if any weight stays behind."""
    import torch

    wrapper = pyfunc._model_impl  # mlflow.pytorch._PyTorchWrapper: the module and its device
    exported = _exported_file(path)
    if exported is not None:
        from torch.export.passes import move_to_device_pass

        module = move_to_device_pass(torch.export.load(exported), device).module()
    else:
        module = wrapper.pytorch_model.to(device)
    target = torch.device(device)
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device != target:
            raise RuntimeError(f"a weight stayed on {tensor.device}")
    wrapper.pytorch_model = module
    wrapper.device = device


def device_of(pyfunc: Any) -> str:
    """The device a loaded PyTorch pyfunc computes on."""
    return str(getattr(getattr(pyfunc, "_model_impl", None), "device", "cpu"))


def _load(path: str, device: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(path, model_config={"device": device})


def _exported_file(path: str) -> Any:
    """The ``torch.export`` program of the MLflow model at ``path``, or None (a pickled module)."""
    from mlflow.models import Model

    data = Model.load(os.path.join(path, "MLmodel")).flavors.get("pytorch", {}).get("model_data", "data")
    candidate = os.path.join(path, data, "model.pt2")
    return candidate if os.path.isfile(candidate) else None


def _said(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__
