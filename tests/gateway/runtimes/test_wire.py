"""The worker wire format: values cross a real socket and come back equal, with their dtypes;
what cannot cross without pickle is refused by name."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gateway.runtimes.worker import wire
from tests.support.peak_memory import peak_growth


def round_trip(value: Any) -> Any:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        buffers: list[Any] = []
        header = {"value": wire.encode(value, buffers)}
        sender = threading.Thread(target=wire.send, args=(ours, header, buffers))  # big frames fill the socket
        sender.start()
        got, raw = wire.receive(theirs)
        sender.join()
        return wire.decode(got["value"], raw)


def test_arrays_keep_dtype_shape_and_bytes() -> None:
    for array in [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([[1, 2], [3, 4]], dtype=">i8"),  # another byte order
        np.asfortranarray(np.ones((2, 3))),
        np.array(["setosa", "virginica"]),
        np.array(["a", 1, None], dtype=object),
        np.array([True, False]),
        np.array(["2024-01-01"], dtype="datetime64[ns]"),
        np.zeros((0, 4)),
        np.random.default_rng(0).normal(size=200_000),  # larger than a socket buffer
    ]:
        back = round_trip(array)
        assert back.dtype == array.dtype and back.shape == array.shape
        assert back.tolist() == array.tolist() or np.array_equal(back, array, equal_nan=True)
        if back.dtype != object:
            back[...] = back  # writable: pyfunc and pandas may write into their input


def test_frames_keep_columns_index_and_dtypes() -> None:
    frame = pd.DataFrame(
        {
            "x": [1.5, np.nan, 3.0],
            "n": pd.array([1, None, 3], dtype="Int64"),
            "s": ["a", "b", None],
            "c": pd.Categorical(["u", "v", "u"]),
            "t": pd.to_datetime(["2024-01-01", "2024-01-02", None], utc=True),
            7: [1, 2, 3],
        },
        index=[10, 20, 30],
    )
    back = round_trip(frame)
    pd.testing.assert_frame_equal(back, frame, check_categorical=False)
    series = pd.Series([0.25, 0.75], name="proba", index=pd.RangeIndex(5, 7))
    pd.testing.assert_series_equal(round_trip(series), series)


def test_containers_and_scalars() -> None:
    value = {
        "labels": ["a", "b"],
        "scores": np.array([0.1, 0.9]),
        "pair": (1, "x"),
        "nested": {"k": [None, True, 2.5]},
        "raw": b"\x00\x01",
        "np": np.float32(1.5),
    }
    back = round_trip(value)
    assert back["labels"] == ["a", "b"] and back["pair"] == (1, "x") and back["nested"] == value["nested"]
    assert back["raw"] == b"\x00\x01"
    assert isinstance(back["np"], np.float32) and back["np"] == np.float32(1.5)
    np.testing.assert_array_equal(back["scores"], value["scores"])


@pytest.mark.parametrize("value", [object(), {1, 2}, np.zeros(2, dtype=[("a", "i4")])])
def test_what_needs_pickle_is_refused_by_name(value: Any) -> None:
    with pytest.raises(wire.WireError, match="cannot be sent to an isolated worker"):
        wire.encode(value, [])


def test_a_closed_socket_is_closed_not_a_hang() -> None:
    ours, theirs = socket.socketpair()
    with theirs:
        ours.close()
        with pytest.raises(wire.Closed):
            wire.receive(theirs)


# --- what a hostile worker may send (issue 48, points 3 and 4) ---


def raw_frame(header: dict[str, Any], lengths: list[int]) -> bytes:
    """A frame's prefix, buffer table and header, as a worker's code could write them itself."""
    head = json.dumps(header).encode()
    return struct.pack("!II", len(head), len(lengths)) + b"".join(struct.pack("!Q", n) for n in lengths) + head


def test_a_frame_announcing_more_than_the_bound_is_refused_before_anything_is_allocated() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.settimeout(10)  # a receiver that waits for the announced bytes fails the test, not hangs it
        ours.sendall(raw_frame({"ok": True}, [2**30]))  # 1 GiB announced, not a byte of it sent
        with peak_growth() as peak, pytest.raises(wire.TooLarge, match="more than 1048576"):
            wire.receive(theirs, max_bytes=2**20)
        assert peak.growth < 2**20
        ours.sendall(struct.pack("!II", 2, 2**20))  # a buffer table larger than the bound (none of it sent)
        with pytest.raises(wire.TooLarge):
            wire.receive(theirs, max_bytes=2**20)


def test_an_announced_buffer_takes_memory_only_as_its_bytes_arrive() -> None:
    """Within the bound (or with none, as in a worker), a buffer announced and never sent holds
    none of the receiver's memory."""
    ours, theirs = socket.socketpair()

    def send() -> None:
        with ours:
            ours.sendall(raw_frame({"ok": True}, [512 * 2**20]) + b"x" * 2**20)

    with theirs:
        with peak_growth() as peak, pytest.raises(wire.Closed):
            sender = threading.Thread(target=send)
            sender.start()
            wire.receive(theirs)
        sender.join()
    assert peak.growth < 64 * 2**20  # 1 MiB arrived, of 512 announced


@pytest.mark.parametrize(
    ("node", "buffer"),
    [
        ({"t": "array", "dtype": "<f8", "shape": [300_000], "b": 0}, b""),  # no byte: np.empty once
        ({"t": "array", "dtype": "<f8", "shape": [4], "b": 0}, b"\0" * 8),  # fewer than it needs
        ({"t": "array", "dtype": "<f8", "shape": [1], "b": 0}, b"\0" * 16),  # more
        ({"t": "array", "dtype": "|O", "shape": [2], "b": 0}, b"\0" * 16),  # pointers
        ({"t": "array", "dtype": "|O", "shape": [2], "b": 0}, b""),
        ({"t": "array", "dtype": "|V8", "shape": [1], "b": 0}, b"\0" * 8),
        ({"t": "array", "dtype": "<i4,<i4", "shape": [1], "b": 0}, b"\0" * 8),  # a record
        ({"t": "array", "dtype": "(2,)<i4", "shape": [1], "b": 0}, b"\0" * 8),  # a sub-array
        ({"t": "array", "dtype": "no such dtype", "shape": [1], "b": 0}, b"\0" * 8),
        ({"t": "array", "dtype": "S0", "shape": [10**9], "b": 0}, b""),
        ({"t": "array", "dtype": "<f8", "shape": [-1], "b": 0}, b"\0" * 8),
        ({"t": "array", "dtype": "<f8", "shape": [2.0], "b": 0}, b"\0" * 16),
        ({"t": "scalar", "dtype": "<f8", "v": {"t": "array", "dtype": "<f8", "shape": [1], "b": 0}}, b""),
    ],
)
def test_an_array_is_built_only_from_the_bytes_that_were_sent(node: dict[str, Any], buffer: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(node, [memoryview(bytearray(buffer))])


def test_empty_arrays_still_cross() -> None:
    for array in [np.zeros((0, 4)), np.array([], dtype="<U3"), np.zeros((3, 0), dtype=np.int8)]:
        back = round_trip(array)
        assert back.dtype == array.dtype and back.shape == array.shape


# --- small frames that would decode into much more than their size (issue 48, review point 3) ---


def receive_sent(frame: bytes, max_bytes: int | None) -> tuple[dict[str, Any], list[memoryview]]:
    """``frame`` (and then EOF) as the receiver reads it, the sender on a thread of its own."""
    ours, theirs = socket.socketpair()

    def send() -> None:
        with ours, contextlib.suppress(OSError):
            ours.sendall(frame)

    sender = threading.Thread(target=send)
    try:
        theirs.settimeout(10)
        sender.start()
        return wire.receive(theirs, max_bytes)
    finally:
        theirs.close()  # a sender still writing what the receiver refused gets EPIPE
        sender.join()


def test_a_frame_listing_millions_of_empty_buffers_is_refused_within_the_bound() -> None:
    """4M empty buffers: a 32 MiB table under a 64 MiB bound, which as a view each would take
    the receiver about a gigabyte."""
    count = 4 * 2**20
    frame = struct.pack("!II", 2, count) + bytes(8 * count) + b"{}"
    with peak_growth() as peak, pytest.raises(wire.TooLarge, match="buffers, more than"):
        receive_sent(frame, 64 * 2**20)
    assert peak.growth < 128 * 2**20, f"{peak.growth >> 20} MiB"
    _, buffers = receive_sent(struct.pack("!II", 2, 1000) + bytes(8 * 1000) + b"{}", 64 * 2**20)
    assert len({id(b) for b in buffers}) == 1  # every empty buffer is one shared view


def test_a_header_past_its_share_of_the_bound_is_refused_before_it_is_read() -> None:
    """A header of ``[{},{},...]`` decodes to some 20 times its bytes."""
    head = b"[" + b"{}," * (2**20) + b"{}]"
    with pytest.raises(wire.TooLarge, match="frame header of"):
        receive_sent(struct.pack("!II", len(head), 0) + head, 16 * 2**20)


def test_a_header_nested_past_the_recursion_limit_is_a_wire_error() -> None:
    head = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(wire.WireError, match="not JSON"):
        receive_sent(struct.pack("!II", len(head), 0) + head, 16 * 2**20)


ARRAY = {"t": "array", "dtype": "<f8", "shape": [2], "b": 0}


@pytest.mark.parametrize(
    "node",
    [
        # a billion rows announced by a range index, no column to pay for them
        {"t": "frame", "columns": {"range": [0, 0, 1], "name": {"t": "j", "v": None}},
         "index": {"range": [0, 10**9, 1], "name": {"t": "j", "v": None}}, "data": []},
        # an index longer than its columns
        {"t": "frame", "columns": {"range": [0, 1, 1], "name": {"t": "j", "v": None}},
         "index": {"range": [0, 10**9, 1], "name": {"t": "j", "v": None}}, "data": [{"values": ARRAY}]},
        # more column names than columns
        {"t": "frame", "columns": {"range": [0, 10**6, 1], "name": {"t": "j", "v": None}},
         "index": {"range": [0, 2, 1], "name": {"t": "j", "v": None}}, "data": [{"values": ARRAY}]},
        {"t": "series", "name": {"t": "j", "v": None}, "index": {"range": [0, 10**9, 1], "name": {"t": "j", "v": None}},
         "data": {"values": ARRAY}},
        # a 0-d column: one value pandas repeats down the index
        {"t": "series", "name": {"t": "j", "v": None}, "index": {"range": [0, 10**7, 1], "name": {"t": "j", "v": None}},
         "data": {"values": {"t": "array", "dtype": "<c16", "shape": [], "b": 0}}},
        # an empty array whose tolist() is a billion lists
        {"t": "array", "dtype": "<f8", "shape": [10**9, 0], "b": 1},
        {"t": "array", "dtype": "O", "shape": [10**9, 0], "items": []},
        # one buffer, many values: each bytes node a copy of it
        {"t": "list", "items": [{"t": "bytes", "b": 0}] * 3},
        {"t": "bytes", "b": 5},
    ],
)  # fmt: skip
def test_a_small_answer_never_decodes_into_much_more(node: dict[str, Any]) -> None:
    buffers = [memoryview(bytearray(16)), memoryview(b"")]
    with peak_growth() as peak, pytest.raises(wire.WireError):
        wire.decode(node, buffers)
    assert peak.growth < 64 * 2**20, f"{peak.growth >> 20} MiB"


def test_frames_without_columns_and_empty_shapes_still_cross() -> None:
    for value in [pd.DataFrame(index=[1, 2, 3]), pd.DataFrame(), pd.Series([], dtype=float), np.zeros((100, 0))]:
        back = round_trip(value)
        assert type(back) is type(value) and back.shape == value.shape
