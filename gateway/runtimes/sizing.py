"""Measure how much memory a loaded model holds.

The cache's memory budget is only as good as this number, so it is measured from the
object graph, not guessed from the file size: every object reachable from the model
is counted once (``sys.getsizeof``, which includes a numpy array's buffer when the array
owns it), plus each torch storage in host memory once by its data pointer (storages on a
GPU are counted apart, per device: they are not this process's memory). Things shared with
the rest of the process (modules, classes, functions, loggers) are not the model's and are
not walked into.
"""

from __future__ import annotations

import gc
import logging
import sys
import types
from typing import Any

_SHARED: tuple[type, ...] = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    logging.Logger,
)
_MAX_OBJECTS = 5_000_000


def object_graph_bytes(root: object, off_host: dict[str, int] | None = None) -> int:
    """Bytes held in host memory by everything reachable from ``root`` that is not shared;
    ``off_host`` gets the bytes its tensors hold on each other device (``cuda:0``...)."""
    torch_tensor = _torch_tensor_type()
    seen: set[int] = set()
    storages: set[int] = set()
    total = 0
    stack: list[Any] = [root]
    while stack and len(seen) < _MAX_OBJECTS:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _SHARED):
            continue
        total += sys.getsizeof(obj, 0)
        if torch_tensor is not None and isinstance(obj, torch_tensor):
            total += _tensor_storage_bytes(obj, storages, off_host)
        stack.extend(gc.get_referents(obj))
    return total


def _torch_tensor_type() -> type | None:
    torch = sys.modules.get("torch")  # only models that imported torch can hold tensors
    return getattr(torch, "Tensor", None) if torch is not None else None


def _tensor_storage_bytes(tensor: Any, storages: set[int], off_host: dict[str, int] | None) -> int:
    # Exported graphs keep fake and meta tensors for shapes; they hold no data.
    if tensor.is_meta or type(tensor).__name__ == "FakeTensor":
        return 0
    try:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
    except (RuntimeError, NotImplementedError):  # sparse and other storage-less tensors
        return 0
    if pointer in storages:
        return 0
    storages.add(pointer)
    if tensor.device.type != "cpu":
        if off_host is not None:
            off_host[str(tensor.device)] = off_host.get(str(tensor.device), 0) + int(storage.nbytes())
        return 0
    return int(storage.nbytes())
