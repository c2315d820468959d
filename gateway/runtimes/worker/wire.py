"""The messages between the gateway and an isolated worker, on a local stream socket.

This module runs on both sides: in the gateway, and in a worker on the interpreter of a
model's own environment, which may be another Python and other releases of NumPy and
pandas. So it imports only the standard library, NumPy and pandas, keeps to Python 3.8's
syntax, and never pickles: a message is a JSON header plus raw buffers.

A frame is ``u32 header length | u32 buffer count | u64 length of each buffer | header |
buffers``. Values (a predict's input, its output, params) are described in the header as a
tree of tagged nodes; arrays and columns of fixed-size types travel as their raw bytes
(``dtype.str`` keeps their byte order), everything else as JSON.

The gateway does not trust what a worker sends (a model's code runs there, and can write to
the socket itself): :func:`receive` takes a bound on a frame's bytes and refuses a frame that
announces more before reading (or allocating) any of it, and a large buffer is read into
memory mapped lazily, so the gateway holds only the bytes that truly arrived. Within the bound,
no small frame may decode into much more than its size: the JSON header is held to a share of
the bound (decoded, JSON takes some 20 times its bytes), the buffers to one per kilobyte of it
(an empty one is one shared view), and :func:`decode` builds an array only from bytes that were
sent, exactly as many as its dtype and shape need, uses each buffer once, refuses an empty array
whose shape lists more than ``MAX_EMPTY_CELLS`` cells, a 0-d column, and an index longer (or
shorter) than the data it indexes.
"""

from __future__ import annotations

import json
import mmap
import socket
import struct
from typing import Any

import numpy as np
import pandas as pd

_PREFIX = struct.Struct("!II")
_LENGTH = struct.Struct("!Q")
_RAW_KINDS = frozenset("biufcmMSU")  # dtype kinds whose bytes are the whole value
MAX_HEADER = 64 * 2**20
HEADER_SHARE = 32  # a bounded frame's header may be this fraction of the bound (JSON decodes to ~20x)
BUFFER_BYTES = 1024  # a bounded frame may list one buffer per this many bytes of the bound
MAX_EMPTY_CELLS = 1 << 16  # an empty array's shape, its zero sizes left out, may list this many cells
_LAZY = 1 << 20  # buffers from this size are read into anonymous memory, mapped as it arrives
_EMPTY = memoryview(b"")  # every empty buffer of a frame: one view, not one object per buffer


class WireError(Exception):
    """A value that cannot cross to a worker (no pickle), or a frame that makes no sense."""


class TooLarge(WireError):
    """A frame announcing more bytes than the receiver's bound."""


class Closed(Exception):
    """The other side closed the socket (it exited, or was killed)."""


# --- frames ------------------------------------------------------------------------


def send(sock: socket.socket, header: dict[str, Any], buffers: list[Any]) -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    views = [memoryview(b).cast("B") if not isinstance(b, bytes) else b for b in buffers]
    lengths = b"".join(_LENGTH.pack(len(v)) for v in views)
    sock.sendall(_PREFIX.pack(len(head), len(views)) + lengths + head)
    for view in views:
        if len(view):
            sock.sendall(view)


def receive(sock: socket.socket, max_bytes: int | None = None) -> tuple[dict[str, Any], list[memoryview]]:
    """A frame: its header and buffers. Given ``max_bytes``, a frame whose lengths (header,
    buffer table, buffers) add up to more is refused (:class:`TooLarge`) as soon as they are
    known, before its header or any buffer is read; so is one whose header is over
    ``max_bytes / HEADER_SHARE``, or that lists more than one buffer per ``BUFFER_BYTES`` of
    ``max_bytes``. A header that is not JSON (or nests past the interpreter's recursion limit)
    is a :class:`WireError`."""
    head_length, count = _PREFIX.unpack(_exactly(sock, _PREFIX.size))
    max_header = MAX_HEADER if max_bytes is None else min(MAX_HEADER, max(max_bytes // HEADER_SHARE, 4096))
    if head_length > max_header:
        raise TooLarge(f"frame header of {head_length} bytes, more than {max_header}")
    if max_bytes is not None and count > max(max_bytes // BUFFER_BYTES, 16):
        raise TooLarge(f"frame of {count} buffers, more than {max(max_bytes // BUFFER_BYTES, 16)}")
    if max_bytes is not None and head_length + count * _LENGTH.size > max_bytes:
        raise TooLarge(f"frame of {count} buffers and a {head_length}-byte header, more than {max_bytes} bytes")
    table = _exactly(sock, count * _LENGTH.size)
    lengths = [_LENGTH.unpack_from(table, i * _LENGTH.size)[0] for i in range(count)]
    if max_bytes is not None:
        total = head_length + len(table) + sum(lengths)
        if total > max_bytes:
            raise TooLarge(f"frame of {total} bytes, more than {max_bytes}")
    try:
        header = json.loads(bytes(_exactly(sock, head_length)))
    except (ValueError, RecursionError) as exc:
        raise WireError(f"a frame header that is not JSON ({type(exc).__name__})") from exc
    return header, [_exactly(sock, n) if n else _EMPTY for n in lengths]


def _exactly(sock: socket.socket, size: int) -> memoryview:
    # A large buffer is mapped, not allocated: its pages are touched (and counted in RSS) only
    # as bytes arrive, never for what a frame merely announced.
    data = bytearray(size) if size < _LAZY else mmap.mmap(-1, size)
    view = memoryview(data)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise Closed("the other side closed the connection")
        got += n
    return view


# --- values ------------------------------------------------------------------------


def encode(value: Any, buffers: list[Any]) -> Any:
    """A JSON-able node for ``value``; its raw arrays are appended to ``buffers``."""
    if value is None or isinstance(value, (bool, int, float, str)) and not isinstance(value, np.generic):
        return {"t": "j", "v": value}
    if isinstance(value, np.generic):
        return {"t": "scalar", "dtype": value.dtype.str, "v": _array(np.asarray(value).reshape(1), buffers)}
    if isinstance(value, np.ndarray):
        return _array(value, buffers)
    if isinstance(value, pd.DataFrame):
        return {
            "t": "frame",
            "columns": _index(value.columns, buffers),
            "index": _index(value.index, buffers),
            "data": [_column(value.iloc[:, i], buffers) for i in range(value.shape[1])],
        }
    if isinstance(value, pd.Series):
        return {
            "t": "series",
            "name": encode(value.name, buffers),
            "index": _index(value.index, buffers),
            "data": _column(value, buffers),
        }
    if isinstance(value, dict):
        return {"t": "dict", "items": [[encode(k, buffers), encode(v, buffers)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"t": "list" if isinstance(value, list) else "tuple", "items": [encode(v, buffers) for v in value]}
    if isinstance(value, (bytes, bytearray)):
        buffers.append(bytes(value))
        return {"t": "bytes", "b": len(buffers) - 1}
    if isinstance(value, pd.Timestamp):
        return {"t": "timestamp", "v": value.isoformat()}
    raise WireError(f"a value of type {type(value).__name__} cannot be sent to an isolated worker")


def decode(node: Any, buffers: list[memoryview]) -> Any:
    """The value ``node`` describes, built from ``buffers``; a node that makes no sense is a
    :class:`WireError` (or the error its malformed part raises: the caller condemns both)."""
    return _decode(node, _Once(buffers))


class _Once:
    """A frame's buffers, each of which one node may take: a header naming one buffer many
    times would make many values (a ``bytes`` node copies) of bytes sent once."""

    def __init__(self, buffers: list[memoryview]) -> None:
        self._buffers = buffers
        self._taken: set[int] = set()

    def take(self, index: Any) -> memoryview:
        if type(index) is not int or not 0 <= index < len(self._buffers) or index in self._taken:
            raise WireError(f"buffer {index!r} is not one of the frame's, or was taken already")
        self._taken.add(index)
        return self._buffers[index]


def _decode(node: Any, buffers: _Once) -> Any:
    kind = node["t"]
    if kind == "j":
        return node["v"]
    if kind == "array":
        return _from_array(node, buffers)
    if kind == "scalar":
        return _from_array(node["v"], buffers)[0]
    if kind == "frame":
        data = {i: _from_column(c, buffers) for i, c in enumerate(node["data"])}
        rows = {len(column) for column in data.values()}
        if len(rows) > 1:
            raise WireError(f"a frame whose columns have {sorted(rows)} rows")
        columns = _from_index(node["columns"], buffers, len(data))
        index = _from_index(node["index"], buffers, rows.pop() if rows else None)
        frame = pd.DataFrame(data, index=index) if data else pd.DataFrame(index=index)
        frame.columns = columns
        return frame
    if kind == "series":
        values = _from_column(node["data"], buffers)
        return pd.Series(
            values, index=_from_index(node["index"], buffers, len(values)), name=_decode(node["name"], buffers)
        )
    if kind == "dict":
        return {_key(_decode(k, buffers)): _decode(v, buffers) for k, v in node["items"]}
    if kind == "list":
        return [_decode(v, buffers) for v in node["items"]]
    if kind == "tuple":
        return tuple(_decode(v, buffers) for v in node["items"])
    if kind == "bytes":
        return bytes(buffers.take(node["b"]))
    if kind == "timestamp":
        return pd.Timestamp(node["v"])
    raise WireError(f"unknown node {kind!r}")


def _key(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _array(array: np.ndarray, buffers: list[Any]) -> dict[str, Any]:
    if array.dtype.kind in _RAW_KINDS and not array.dtype.fields:
        contiguous = np.ascontiguousarray(array)
        buffers.append(contiguous.view(np.uint8).reshape(-1) if contiguous.size else b"")
        return {"t": "array", "dtype": array.dtype.str, "shape": list(array.shape), "b": len(buffers) - 1}
    if array.dtype.kind == "O":
        items = [encode(v, buffers) for v in array.reshape(-1).tolist()]
        return {"t": "array", "dtype": "O", "shape": list(array.shape), "items": items}
    raise WireError(f"an array of dtype {array.dtype} cannot be sent to an isolated worker")


def _from_array(node: dict[str, Any], buffers: _Once) -> np.ndarray:
    shape = _shape(node["shape"])
    if node["dtype"] == "O":
        out = np.empty(len(node["items"]), dtype=object)
        for i, item in enumerate(node["items"]):
            out[i] = _decode(item, buffers)
        return out.reshape(shape)
    try:
        dtype = np.dtype(node["dtype"])
    except (TypeError, ValueError) as exc:
        raise WireError(f"no dtype {node['dtype']!r}") from exc
    if dtype.kind not in _RAW_KINDS or dtype.fields or dtype.subdtype or dtype.hasobject or not dtype.itemsize:
        raise WireError(f"an array of dtype {dtype} cannot be received as raw bytes")
    raw = buffers.take(node["b"])
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw):
        raise WireError(f"an array of shape {shape} and dtype {dtype} sent with {len(raw)} bytes")
    if not count:
        return np.zeros(shape, dtype=dtype)  # no byte sent, none needed
    # The frame's buffer is ours alone: the array owns it without a copy, and stays writable
    # (pyfunc and pandas may write into what they are given).
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _shape(shape: Any) -> tuple[int, ...]:
    """A shape; an empty one's other sizes may not list more than ``MAX_EMPTY_CELLS`` cells
    (no byte pays for them, and ``tolist`` makes a list for each: ``(10**9, 0)`` is a billion)."""
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        raise WireError(f"an array shape must be a list of sizes, not {shape!r}")
    if 0 in shape:
        cells = 1
        for n in shape:
            cells *= max(n, 1)
        if cells > MAX_EMPTY_CELLS:
            raise WireError(f"an empty array of shape {shape!r}: more than {MAX_EMPTY_CELLS} empty cells")
    return tuple(shape)


def _column(series: pd.Series, buffers: list[Any]) -> dict[str, Any]:
    """A column's values, with its pandas dtype by name where NumPy's does not say it all
    (nullable integers, strings, categories, time zones)."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind != "O":
        return {"values": _array(series.to_numpy(), buffers)}
    values = series.to_numpy(dtype=object, na_value=None) if not isinstance(dtype, np.dtype) else series.to_numpy()
    return {"values": _array(np.asarray(values, dtype=object), buffers), "pandas": str(dtype)}


def _from_column(node: dict[str, Any], buffers: _Once) -> Any:
    values = _from_array(node["values"], buffers)
    if values.ndim != 1:  # a 0-d column is one value pandas would repeat down any index
        raise WireError(f"a column of {values.ndim} dimensions")
    dtype = node.get("pandas")
    if dtype is None or dtype == "object":
        return values
    try:
        return pd.array(values, dtype=dtype)
    except (TypeError, ValueError):  # a dtype this pandas does not know: its values as objects
        return values


def _index(index: pd.Index, buffers: list[Any]) -> dict[str, Any]:
    name = encode(index.name, buffers)
    if isinstance(index, pd.RangeIndex):
        return {"range": [index.start, index.stop, index.step], "name": name}
    if isinstance(index, pd.MultiIndex):
        return {"tuples": encode(list(index), buffers), "names": encode(list(index.names), buffers)}
    return {"values": _column(pd.Series(index), buffers), "name": name}


def _from_index(node: dict[str, Any], buffers: _Once, length: int | None) -> pd.Index:
    """An index, as long as the ``length`` of what it indexes (None: a frame without columns,
    whose rows only an index of sent values may give: a range of a billion costs nothing to
    announce)."""
    if "range" in node:
        start, stop, step = node["range"]
        index = pd.RangeIndex(start, stop, step, name=_decode(node["name"], buffers))
    elif "tuples" in node:
        index = pd.MultiIndex.from_tuples(_decode(node["tuples"], buffers), names=_decode(node["names"], buffers))
    else:
        index = pd.Index(_from_column(node["values"], buffers), name=_decode(node["name"], buffers))
    if len(index) != (length if length is not None else 0 if "range" in node else len(index)):
        raise WireError(f"an index of {len(index)} entries for {length} rows")
    return index
