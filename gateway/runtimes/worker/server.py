"""An isolated worker: loads model versions with its environment's MLflow and predicts.

Run by the gateway as ``<base python> -I -S -B server.py --fd N --parent-pid P --environment
<env>`` (``workers.py``), never imported by it: this file runs on the interpreter a model's own
environment was built on, with that environment's packages (:func:`enter_environment`), beside
``wire.py`` and nothing else of the gateway's (it puts its own folder first on its path).
It answers one message at a time on the socket it inherits, and exits when the gateway
closes that socket or the gateway's process is gone.

First, unasked, it sends ``{"op": "confined", "sandbox": ...}``: what its sandbox enforced, said
before any code of its environment ran (``sandbox.announce``).

Messages (``op`` in the header): ``hello`` -> pid, Python and MLflow versions, RSS;
``load`` (``id``, ``path``, for a PyTorch version ``device`` and ``device_source``) -> RSS
after loading (and the device it computes on, and why: ``devices.py``); ``predict`` (``id``, ``data``,
``params``) -> ``value``; ``fast`` (``id``, ``flavor``, ``names``) -> whether the flavor's own
predict takes arrays of those columns (``raw.py``); ``predict_fast`` (``id``, ``data``: one
array) -> ``value``; ``unload`` (``id``) -> RSS; ``stream_open`` (``id``, ``stream``, ``data``,
``params``), then ``stream_next`` (``stream``) -> ``value`` or ``done``, and ``stream_close``
(``stream``): a predict_stream, a chunk a message (:meth:`Worker.stream`). A failure answers ``error``:
the exception's type and message, and for MLflow's own its error code.
"""

from __future__ import annotations

import argparse
import gc
import os
import site
import socket
import sys
import threading
import time
import traceback
from typing import Any

# -I leaves this folder off the path, and -S every site-packages folder: nothing of the model's
# environment (a .pth file, sitecustomize) has run yet, nor may it until the sandbox is on.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sandbox  # type: ignore[import-not-found]  # noqa: E402  # beside this file, in the worker's own process

# The sandbox goes on before NumPy is imported (by raw and wire): its BLAS starts threads, and a
# process with threads can no longer enter a user namespace of its own.
CONFINED, MEMORY_BYTES = sandbox.apply_from_arguments(sys.argv[1:])
# Said to the gateway before any code of the environment runs: what it reads here no .pth file
# could have written (what it can, the gateway checks again from outside: /proc/<pid>).
sandbox.announce(sys.argv[1:], CONFINED)


def enter_environment(argv: list[str]) -> None:
    """Make this interpreter the environment's (``--environment``), as a venv's own would be, and
    run ``site`` on it: its site-packages, their .pth files, its sitecustomize. The gateway
    starts the base interpreter, never ``<env>/bin/python`` (whose ``python._pth`` and
    ``pyvenv.cfg`` CPython would read before this file runs), so only now, sandboxed, does
    anything of the environment's run."""
    if "--environment" in argv:
        env = argv[argv.index("--environment") + 1]
        sys.prefix = sys.exec_prefix = env
        site.PREFIXES = [env]  # its site-packages, not the base interpreter's
    site.main()
    if "--environment" in argv:
        sys.executable = os.path.join(sys.prefix, "bin", "python")  # what a venv's says


enter_environment(sys.argv[1:])

import raw  # type: ignore[import-not-found]  # noqa: E402
import wire  # type: ignore[import-not-found]  # noqa: E402

_WATCH_SECONDS = 0.2


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def watch_parent(parent: int) -> None:
    """Exit as soon as the gateway is gone, even while a predict runs (a SIGKILLed gateway
    closes nothing in an orderly way; its children are handed to another parent)."""
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(_WATCH_SECONDS)


def error_of(exc: BaseException) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    code = getattr(exc, "error_code", None)
    if isinstance(code, str) and type(exc).__name__ == "MlflowException":
        error["mlflow_error_code"] = code
        error["message"] = getattr(exc, "message", str(exc))
    return error


STREAM_OPS = frozenset({"stream_open", "stream_next", "stream_close"})


def plain(chunk: Any) -> Any:
    """A chunk as data the wire carries: a pydantic object dumped as MLflow dumps its own
    (``None`` fields left out), MLflow's dataclasses (``ChatCompletionChunk``) as their dicts."""
    dump = getattr(chunk, "model_dump", None)
    if callable(dump):
        return dump(exclude_none=True)
    to_dict = getattr(chunk, "to_dict", None)
    if callable(to_dict) and not hasattr(chunk, "iloc"):
        return to_dict()
    return chunk


class Worker:
    def __init__(self, confined: dict[str, Any] | None = None, memory_bytes: int = 0) -> None:
        self.confined = confined  # what sandbox.apply enforced; None: not sandboxed
        self.memory_bytes = memory_bytes  # the address space models may add, set at hello
        self.streams: dict[str, Any] = {}  # the gateway's stream id -> its generator
        self.models: dict[str, Any] = {}
        self.fast: dict[str, Any] = {}  # id -> the flavor's own predict on an array

    def handle(self, header: dict[str, Any], buffers: list[memoryview]) -> tuple[dict[str, Any], list[Any]]:
        op = header.get("op")
        if op == "hello":
            import mlflow

            if os.environ.get("GATEWAY_MLFLOW_TRACES", "").strip().lower() not in ("1", "true", "yes", "on"):
                # As in the gateway's process (GATEWAY_MLFLOW_TRACES): no trace per call logged to a
                # tracking store. A sandboxed worker has none it may reach; MLflow's default, a
                # ./mlflow.db it creates, is not writable to it, and an agent's calls failed on it.
                import mlflow.tracing

                mlflow.tracing.disable()

            hello = {
                "pid": os.getpid(),
                "python": "{}.{}.{}".format(*sys.version_info[:3]),
                "mlflow": mlflow.__version__,
                "rss": rss_bytes(),
            }
            if self.confined is not None:  # MLflow imported: the budget is what models may add
                self.confined["limits"]["memory"] = sandbox.limit_memory(self.memory_bytes)
                hello["sandbox"] = self.confined
            return hello, []
        if op == "load":
            import mlflow.pyfunc

            if header.get("device"):  # a PyTorch version: on the device the gateway's settings ask for
                import devices  # type: ignore[import-not-found]

                model, where, why = devices.load(header["path"], header["device"], header.get("device_source", ""))
                self.models[header["id"]] = model
                return {"rss": rss_bytes(), "device": where, "device_reason": why}, []
            self.models[header["id"]] = mlflow.pyfunc.load_model(header["path"])
            return {"rss": rss_bytes()}, []
        if op == "predict":
            model = self.models[header["id"]]
            data = wire.decode(header["data"], buffers)
            params = wire.decode(header["params"], buffers) if header.get("params") else None
            output = model.predict(data, params=params) if params else model.predict(data)
            out: list[Any] = []
            return {"value": wire.encode(output, out)}, out
        if op == "fast":
            predict = raw.raw_predict(self.models[header["id"]], header["flavor"], header.get("names"))
            if predict is not None:
                self.fast[header["id"]] = predict
            return {"fast": predict is not None}, []
        if op == "predict_fast":
            output = self.fast[header["id"]](wire.decode(header["data"], buffers))
            out = []
            return {"value": wire.encode(output, out)}, out
        if op == "unload":
            self.fast.pop(header["id"], None)
            self.models.pop(header["id"], None)
            gc.collect()
            return {"rss": rss_bytes()}, []
        if op in STREAM_OPS:
            return self.stream(op, header, buffers)
        raise ValueError(f"unknown op {op!r}")

    def stream(self, op: str, header: dict[str, Any], buffers: list[memoryview]) -> tuple[dict[str, Any], list[Any]]:
        """A model's predict_stream, a chunk a message, as the gateway asks for them:
        ``stream_open`` starts it, each ``stream_next`` answers its next chunk (``value``) or
        ``done``, ``stream_close`` closes it early (GeneratorExit in the model's code). Between
        two messages of a stream, the worker answers any other message."""
        key = header["stream"]
        if op == "stream_open":
            model = self.models[header["id"]]
            data = wire.decode(header["data"], buffers)
            params = wire.decode(header["params"], buffers) if header.get("params") else None
            generator = model.predict_stream(data, params=params) if params else model.predict_stream(data)
            self.streams[key] = iter(generator)
            return {}, []
        if op == "stream_close":
            generator = self.streams.pop(key, None)
            if generator is not None and hasattr(generator, "close"):
                generator.close()
            return {}, []
        generator = self.streams[key]
        try:
            chunk = next(generator)
        except StopIteration:
            del self.streams[key]
            return {"done": True}, []
        except BaseException:
            del self.streams[key]  # a generator that raised is over
            raise
        out: list[Any] = []
        return {"value": wire.encode(plain(chunk), out)}, out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--sandbox", help="the policy it applied to itself at import (JSON)")
    parser.add_argument("--environment", help="the environment whose packages it runs (entered at import)")
    args = parser.parse_args(argv)
    if os.getppid() != args.parent_pid:
        return 0  # the gateway died before we started
    worker = Worker(CONFINED, MEMORY_BYTES)
    threading.Thread(target=watch_parent, args=(args.parent_pid,), daemon=True).start()
    sock = socket.socket(fileno=args.fd)
    while True:
        try:
            header, buffers = wire.receive(sock)
        except wire.Closed:
            return 0
        try:
            answer, out = worker.handle(header, buffers)
            answer["ok"] = True
        except Exception as exc:  # the model's, or MLflow's: the gateway decides what it means
            if isinstance(exc, MemoryError) and worker.confined is not None and worker.memory_bytes > 0:
                os._exit(sandbox.EXIT_OVER_MEMORY)  # past its limit, its state suspect: 503, and another starts
            if header.get("op") == "load":
                traceback.print_exc(file=sys.stderr)
            answer, out = {"ok": False, "error": error_of(exc)}, []
        del header, buffers
        try:
            wire.send(sock, answer, out)
        except OSError:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
