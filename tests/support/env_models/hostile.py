"""A model from code (nothing pickled) that attacks the gateway from inside ``predict`` through
what its worker shares with it: the socket to the gateway (its fd is on the worker's command
line) and its own stdout. Each row of its ``attack`` column names one; served by
tests/gateway/runtimes/test_sandbox_wire.py in a sandboxed worker.

- ``frame:BYTES``: writes a frame's prefix announcing one buffer of BYTES, and no byte of it;
- ``empty-array:N``: writes a whole answer holding an array of N float64 and no byte for them;
- ``line:BYTES``: writes BYTES on stdout without a newline (then one);
- ``sleep:SECONDS``: prints that it sleeps, then sleeps;
- ``thread-spin:SECONDS``: starts a thread that burns that much CPU time, and answers at once;
- ``answer:JSON``: writes a whole answer whose header is that JSON, without buffers;
- ``nested:DEPTH``: writes an answer whose header is a list nested DEPTH deep.

After writing on the socket it sleeps: what it wrote is the gateway's answer. With the model
config ``{"spin_on_load": SECONDS}``, loading it burns that much CPU time first; with
``{"sleep_on_load": SECONDS}``, loading it sleeps that long.
"""

import json
import os
import struct
import sys
import threading
import time

import mlflow
from mlflow.pyfunc import PythonModel


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _on_the_socket(header, lengths: list) -> None:
    fd = int(sys.argv[sys.argv.index("--fd") + 1])
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    table = b"".join(struct.pack("!Q", n) for n in lengths)
    _write(fd, struct.pack("!II", len(head), len(lengths)) + table + head)
    time.sleep(3600)  # the gateway reads that as this call's answer


def attack(what: str) -> str:
    kind, _, arg = what.partition(":")
    if kind == "frame":
        _on_the_socket({"ok": True, "value": {"t": "bytes", "b": 0}}, [int(arg)])
    if kind == "empty-array":
        _on_the_socket({"ok": True, "value": {"t": "array", "dtype": "<f8", "shape": [int(arg)], "b": 0}}, [0])
    if kind == "answer":
        _on_the_socket(json.loads(arg), [])
    if kind == "nested":
        _on_the_socket(b"[" * int(arg) + b"]" * int(arg), [])
    if kind == "line":
        chunk = b"x" * 2**20
        for _ in range(int(arg) // len(chunk)):
            _write(1, chunk)
        _write(1, b"\n")
        return "written"
    if kind == "sleep":
        print(f"asleep for {arg} s", flush=True)
        time.sleep(float(arg))
        return "slept"
    if kind == "thread-spin":
        threading.Thread(target=_spin, args=(float(arg),), daemon=True).start()
        return "started"
    return ""  # the warm-up's row


class Hostile(PythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]
        _spin(float((context.model_config or {}).get("spin_on_load", 0)))
        time.sleep(float((context.model_config or {}).get("sleep_on_load", 0)))

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return [attack(str(a)) for a in model_input["attack"]]


mlflow.models.set_model(Hostile())
