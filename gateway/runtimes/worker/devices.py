"""Which device a PyTorch version computes on, and loading it there.

Shared by the gateway (in-process versions) and the isolated worker (its versions), like
``raw.py``: it imports nothing but the standard library until a PyTorch version loads, and
keeps to Python 3.8.

MLflow's pyfunc picks a device by itself (``model_config["device"]``, else
``MLFLOW_DEFAULT_PREDICTION_DEVICE``, else CUDA when there is one: mlflow/pytorch
``_load_pyfunc``), and refuses a program exported with ``torch.export`` (its default ``pt2``
format) on any device other than the one its weights were saved on. So the gateway always
names the device, and where MLflow cannot load a version there it loads it on the CPU and
moves it. Only ``auto`` falls back to the CPU (with the reason in the version's status): a
device named outright (``cuda``, ``cuda:N``, by GATEWAY_DEVICE or a version's tag) that this
host lacks, or that a version cannot be moved to, is ``DeviceUnavailable``: at start for
GATEWAY_DEVICE (``require``), a failed load for a tag. An operator who asked for a GPU must
not find out from latency.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceUnavailable(RuntimeError):
    """A device named outright that this host (or this version) cannot compute on."""


def parse(spec: str) -> str:
    """``spec`` in its one spelling (``cuda:1``, ``auto``...); ValueError for anything else."""
    value = str(spec).strip().lower()
    if value in ("auto", "cpu", "cuda"):
        return value
    if value.startswith("cuda:") and value[5:].isdigit():
        return f"cuda:{int(value[5:])}"
    raise ValueError(f"{spec!r} is not a device ({CHOICES})")


def cuda_devices() -> tuple[int, str]:
    """How many CUDA devices this host has, and who says so: torch where this interpreter has it
    and finds them, else the NVIDIA driver's own listing (a worker's environment may bring a CUDA
    torch where this one has a CPU build, or none)."""
    found, said = 0, "no NVIDIA driver on this host"
    try:
        import torch
    except ImportError:
        pass
    else:
        if torch.cuda.is_available():
            return torch.cuda.device_count(), f"torch {torch.__version__}"
        said = f"torch {torch.__version__} finds no CUDA device and the NVIDIA driver lists none"
    listing = "/proc/driver/nvidia/gpus"
    if os.path.isdir(listing):
        found = len(os.listdir(listing))
        if found:
            said = "the NVIDIA driver"
    return found, said


def require(spec: str, source: str) -> None:
    """Stop (``DeviceUnavailable``) unless this host has the device ``spec`` (parsed) names:
    ``auto`` and ``cpu`` always pass; ``cuda`` needs one CUDA device, ``cuda:N`` N + 1."""
    if not spec.startswith("cuda"):
        return
    index = 0 if spec == "cuda" else int(spec[5:])
    count, said = cuda_devices()
    if index >= count:
        raise DeviceUnavailable(_lacking(spec, source, count, said))


def _lacking(spec: str, source: str, count: int, said: str) -> str:
    has = f"has {count} CUDA device(s) ({said})" if count else f"has no CUDA device ({said})"
    return (
        f"{source} asks for {spec}, but this host {has}. Set GATEWAY_DEVICE=auto to use a GPU "
        "where there is one and the CPU elsewhere, or cpu"
    )


def resolve(spec: str, source: str) -> tuple[str, str]:
    """The device ``spec`` (parsed) stands for on this host, and why, in words; ``source`` says
    who asked (``GATEWAY_DEVICE=auto``, ``tagged gateway.device=cuda:1``). A CUDA device named
    outright that this interpreter cannot use is ``DeviceUnavailable``."""
    import torch

    if spec == "auto":
        default = os.environ.get("MLFLOW_DEFAULT_PREDICTION_DEVICE", "").strip()
        if default:  # what `mlflow models serve` would have used: moving off it changes nothing
            try:
                chosen = parse(default)
            except ValueError:
                chosen = "auto"
            if chosen != "auto":
                said = f"{source} and MLFLOW_DEFAULT_PREDICTION_DEVICE={default}"
                try:
                    return resolve(chosen, said)
                except DeviceUnavailable:  # auto: the one spec that falls back
                    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
                    found = f"torch {torch.__version__} finds {count} CUDA device(s)"
                    return "cpu", f"{said}, but {found}: serving on the CPU"
        if torch.cuda.is_available():
            return "cuda:0", f"{source}: this host has CUDA"
        return "cpu", f"{source}: this host has no CUDA device"
    if spec == "cpu":
        return "cpu", source
    index = 0 if spec == "cuda" else int(spec[5:])
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= count:
        said = f"torch {torch.__version__} here" + ("" if count else ", which finds no CUDA device")
        raise DeviceUnavailable(_lacking(spec, source, count, said))
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
        why = f"it could not be placed on {device} ({refused}; moving it there: {_said(exc)})"
        if spec != "auto":  # asked for by name: the CPU would be a silent slowdown
            raise DeviceUnavailable(f"{source}, but {why}") from None
        pyfunc = _load(path, "cpu")  # a half-moved module would answer nothing
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
