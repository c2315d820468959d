"""The isolated runtime: versions served by a worker process on their own environment.

One worker process per environment and model (GATEWAY_ENV_WORKER_SHARING: or per version),
shared by the model's versions loaded on it; different models never share a process, only
the environment it runs on. The gateway keeps decoding, batching and encoding; a worker only
loads (``mlflow.pyfunc.load_model`` on the same verified files the in-process runtime would
load) and predicts, one call per batch, the batch's frame or tensors passing as raw buffers
(``worker/wire.py``: no JSON round trip of the data, no pickle, so no tie to the gateway's
Python or libraries).

A worker that dies (a crash, the OOM killer, SIGKILL) fails the calls it had at once with
:class:`~gateway.errors.WorkerUnavailable` (503), is started again, and loads its versions
again; while it is down, calls for them are answered 503 straight away (a stream it was
answering ends with that error as its event). A version's size is what its load added to the
worker's RSS, as the kernel shows it (``/proc/<pid>/status``, never a figure the worker sends);
the worker's own RSS at start (an interpreter with MLflow, pandas and NumPy: a
few hundred MiB) is counted once per worker, apart from the versions and the cache's memory
budget (:meth:`IsolatedRuntime.baseline_bytes`, shown on ``/status``), and bounded by
GATEWAY_ENV_MAX_WORKERS; unloading the last version stops the worker.

The data plane's calls to a group's workers wait on threads of the group's own (a thread per
process: :attr:`RemoteModel.executor`), never on the shared predict pool: a model that sleeps
holds its own worker, not every other model's predict (issue 48).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos import databricks_pb2

from gateway.errors import WorkersExhausted, WorkerUnavailable
from gateway.runtimes.base import DeviceRequest, Loaded
from gateway.runtimes.environments import Environment, EnvironmentStore
from gateway.runtimes.sandbox import CpuWatchdog, NetworkChoice, SandboxPolicy, WorkerSandbox, sweep
from gateway.runtimes.worker import wire
from gateway.runtimes.workers import WorkerLost, WorkerProcess
from registry_sync.identity import VersionId

log = logging.getLogger(__name__)

WorkerSharing = Literal["model", "version"]  # GATEWAY_ENV_WORKER_SHARING


class GroupKey(NamedTuple):
    """What a group of worker processes is for (IsolatedRuntime.group_key)."""

    environment: str
    model: str
    version: int | None  # None: every version of the model (GATEWAY_ENV_WORKER_SHARING=model)
    network: bool


_RESTARTS = 3  # a worker dying this many times within _RESTART_WINDOW is not started again
_RESTART_WINDOW = 60.0


class RemoteError(Exception):
    """An exception a model raised in its worker. Subclasses carry the original type's name, so
    that the answer names it as in-process serving would (``ValueError: ...``)."""


_remote_types: dict[str, type[RemoteError]] = {}
MAX_REMOTE_TYPES = 256  # classes kept for the names workers pick: past this many, made per error
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


def _remote_exception(error: dict[str, Any]) -> Exception:
    name, message = str(error.get("type", "Exception")), str(error.get("message", ""))
    code = error.get("mlflow_error_code")
    if code is not None:
        try:
            return MlflowException(message, error_code=databricks_pb2.ErrorCode.Value(code))
        except (ValueError, TypeError):
            return MlflowException(message)
    if name == "MemoryError":
        return MemoryError(message)
    if not _NAME.fullmatch(name):
        return RemoteError(message)  # a name a class cannot have (a NUL)
    kind = _remote_types.get(name)
    if kind is None:
        kind = type(name, (RemoteError,), {"__module__": "worker"})
        # Kept for the next error of that name while fewer than the bound are: past it the class is
        # made for this error alone, so a worker naming many types neither grows this process nor
        # takes their names from every other model's errors.
        if len(_remote_types) < MAX_REMOTE_TYPES:
            _remote_types[name] = kind
    return kind(message)


def _failure(process: WorkerProcess, answer: dict[str, Any]) -> Exception:
    """What a call the worker answered not ``ok`` raises: the model's exception, or, where the
    answer holds no error object, :class:`WorkerLost` for a worker that broke the protocol."""
    error = answer.get("error")
    if not isinstance(error, dict):
        return process.condemn(f"its answer broke the wire protocol (a failure without an error object: {error!r:.80})")
    return _remote_exception(error)


class WorkerGroup:
    """The worker processes of one environment (``GATEWAY_ENV_PROCESSES`` of them, each holding
    every version loaded on the environment) and those versions."""

    def __init__(
        self,
        runtime: IsolatedRuntime,
        env: Environment,
        *,
        key: GroupKey,
        processes: int = 1,
        sandbox: WorkerSandbox | None = None,
    ) -> None:
        self.env = env
        self.key = key  # IsolatedRuntime.group_key
        self.sandbox = sandbox  # None: GATEWAY_SANDBOX=off
        self._runtime = runtime
        self._lock = threading.Lock()  # guards processes, models, restarts
        self.processes: list[WorkerProcess | None] = [None] * max(1, processes)
        self.models: dict[str, dict[str, Any]] = {}  # handle id -> its load message (the verified files, the device)
        self.fast: dict[str, tuple[str, list[str] | None]] = {}  # handle -> what its fast path asked
        self._next = itertools.count()
        self._deaths: list[float] = []
        self.broken: str | None = None  # why it is no longer started again
        self._in_use: contextlib.ExitStack | None = None  # the environment's use lock, while running
        # Where the data plane's calls to these workers wait (RemoteModel.executor): a thread per
        # process, so a worker that is slow to answer holds none of the shared predict pool.
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.processes), thread_name_prefix=f"worker-calls {self.label}"
        )

    @property
    def label(self) -> str:
        return self.env.key[:12]

    @property
    def process(self) -> WorkerProcess | None:
        """The first live process (what operators see as the version's worker)."""
        return next(iter(self._live()), None)

    def pids(self) -> list[int]:
        return [p.pid for p in self._live() if p.pid is not None]

    def _live(self) -> list[WorkerProcess]:
        return [p for p in self.processes if p is not None and p.alive]

    def _pick(self) -> WorkerProcess:
        """A live process, preferring one that is not answering another call."""
        live = self._live()
        if not live:
            raise WorkerLost(self.broken or f"the worker of environment {self.label} is restarting")
        start = next(self._next) % len(live)
        ordered = live[start:] + live[:start]
        return next((p for p in ordered if not p.busy), ordered[0])

    def _all(self) -> list[WorkerProcess]:
        live = self._live()
        if len(live) < len(self.processes):
            raise WorkerLost(self.broken or f"a worker of environment {self.label} is restarting")
        return live

    def _process(self, slot: int) -> WorkerProcess:
        policy = self._runtime.sandbox
        return WorkerProcess(
            self.env.python,
            label=f"{self.label}/{slot}",
            on_exit=self._exited,
            sandbox=self.sandbox,
            max_answer_bytes=policy.max_answer_bytes or None,
            max_line_bytes=policy.max_line_bytes,
        )

    def _start(self, slot: int) -> WorkerProcess:
        process = self._process(slot)
        if self._in_use is None:  # prune leaves the environment alone while its workers run
            self._in_use = contextlib.ExitStack()
            self._in_use.enter_context(self._runtime.store.in_use(self.env.key))
        process.start()
        self.processes[slot] = process
        return process

    def load(self, handle: str, path: Path, device: DeviceRequest | None = None) -> tuple[int, dict[str, Any]]:
        """Load on every process of the group (starting them): the bytes their RSS grew by, and
        the first one's answer (for a PyTorch version, the device it computes on and why)."""
        if self.sandbox is not None:  # it reads only what its sandbox's view holds
            path = self.sandbox.expose(path)
        request: dict[str, Any] = {"op": "load", "id": handle, "path": str(path)}
        if device is not None:
            request.update(device=device.spec, device_source=device.source)
        with self._lock:
            fresh = all(p is None for p in self.processes)
            processes = [self._start(slot) for slot in range(len(self.processes))] if fresh else self._all()
        grown = 0
        first: dict[str, Any] = {}
        for process in processes:
            before = process.rss  # a fresh worker's own RSS is not the version's
            answer, _ = process.call(request, [])
            if not answer.get("ok"):
                failure = _failure(process, answer)
                if fresh and not self.models:
                    self.stop()
                else:
                    self._unload_everywhere(handle)
                    self._withdraw(request)
                raise failure
            process.rss = process.measured_rss(int(answer.get("rss", 0)))
            grown += max(process.rss - before, 0)
            first = first or answer
        with self._lock:
            self.models[handle] = request
        return grown, first

    def enable_fast(self, handle: str, flavor: str, names: list[str] | None) -> bool:
        """Whether every process has the flavor's own predict for arrays of ``names``."""
        for process in self._all():
            answer, _ = process.call({"op": "fast", "id": handle, "flavor": flavor, "names": names}, [])
            if not answer.get("ok") or not answer.get("fast"):
                return False
        with self._lock:
            self.fast[handle] = (flavor, names)
        return True

    def predict(self, handle: str, data: Any, params: dict[str, Any] | None, *, op: str = "predict") -> Any:
        buffers: list[Any] = []
        header = {
            "op": op,
            "id": handle,
            "data": wire.encode(data, buffers),
            "params": wire.encode(params, buffers) if params else None,
        }
        process = self._pick()
        answer, out = process.call(header, buffers)
        if not answer.get("ok"):
            raise _failure(process, answer)
        return process.decode(answer.get("value"), out)

    def stream(self, handle: str, data: Any, params: dict[str, Any] | None) -> Iterator[Any]:
        """The version's predict_stream in one of the group's processes, a chunk a message as
        the caller asks (worker/server.py's stream ops): nothing runs ahead of the reader, and
        other calls to that process go between two chunks. Closed early, it closes the worker's
        generator too. WorkerLost when the process dies under it."""
        process = self._pick()
        key = f"{handle}/{next(self._next)}"
        buffers: list[Any] = []
        header = {
            "op": "stream_open",
            "id": handle,
            "stream": key,
            "data": wire.encode(data, buffers),
            "params": wire.encode(params, buffers) if params else None,
        }
        answer, _ = process.call(header, buffers)
        if not answer.get("ok"):
            raise _failure(process, answer)
        over = False
        try:
            while True:
                answer, out = process.call({"op": "stream_next", "stream": key}, [])
                if not answer.get("ok"):
                    over = True  # the worker dropped a generator that raised
                    raise _failure(process, answer)
                if answer.get("done"):
                    over = True
                    return
                yield process.decode(answer.get("value"), out)
        finally:
            if not over:
                with contextlib.suppress(WorkerLost):
                    process.call({"op": "stream_close", "stream": key}, [])

    def unload(self, handle: str) -> None:
        with self._lock:
            request = self.models.pop(handle, None)
            self.fast.pop(handle, None)
            last = not self.models
        if last:
            self.stop()
            return
        self._unload_everywhere(handle)
        self._withdraw(request)

    def _withdraw(self, request: dict[str, Any] | None) -> None:
        if self.sandbox is not None and request is not None:
            self.sandbox.withdraw(Path(request["path"]))

    def _unload_everywhere(self, handle: str) -> None:
        for process in self._live():
            with contextlib.suppress(WorkerLost):
                answer, _ = process.call({"op": "unload", "id": handle}, [])
                if answer.get("ok"):
                    process.rss = process.measured_rss(int(answer.get("rss", 0)))

    def stop(self) -> None:
        with self._lock:
            processes, self.processes = self.processes, [None] * len(self.processes)
            self.broken = "stopped"
            self.models.clear()
            self.fast.clear()
        self._runtime.forget(self)
        for process in processes:
            if process is not None:
                process.stop()
        if self._in_use is not None:
            self._in_use.close()
            self._in_use = None
        if self.sandbox is not None:
            self.sandbox.close()

    def _exited(self, process: WorkerProcess, code: int) -> None:
        """From the process's watch thread: start it again and reload its versions (and their
        fast paths), unless the group's processes keep dying or it was stopped on purpose."""
        with self._lock:
            if process not in self.processes:  # stopped, or already replaced
                return
            slot = self.processes.index(process)
            now = time.monotonic()
            self._deaths = [t for t in self._deaths if now - t < _RESTART_WINDOW] + [now]
            if len(self._deaths) >= _RESTARTS:
                self.broken = (
                    f"the workers of environment {self.label} died {len(self._deaths)} times within "
                    f"{_RESTART_WINDOW:g} s; not started again until their versions are loaded again"
                )
                log.error("%s", self.broken)
                self.processes[slot] = None
                return
            try:
                replacement = self._process(slot)
                replacement.start()
                for handle, request in self.models.items():
                    answer, _ = replacement.call(request, [])
                    if not answer.get("ok"):
                        log.error(
                            "worker %s: could not load %s again: %s", replacement.label, handle, answer.get("error")
                        )
                    elif handle in self.fast:
                        flavor, names = self.fast[handle]
                        replacement.call({"op": "fast", "id": handle, "flavor": flavor, "names": names}, [])
            except Exception as exc:  # could not even start: its versions answer 503 until evicted
                self.broken = f"a worker of environment {self.label} could not be started again: {exc}"
                log.error("%s", self.broken)
                self.processes[slot] = None
                return
            self.processes[slot] = replacement
            log.info(
                "worker %s started again (pid %s) with %d versions",
                replacement.label,
                replacement.pid,
                len(self.models),
            )


class RemoteModel:
    """A version loaded in a worker, as the data plane uses a pyfunc: ``predict`` and
    ``metadata`` (read from its MLmodel here, without loading it)."""

    def __init__(self, group: WorkerGroup, handle: str, metadata: Model, version: VersionId) -> None:
        self.group = group
        self.handle = handle
        self.metadata = metadata
        self._version = version

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            return self.group.predict(self.handle, data, params)
        except WorkerLost as exc:
            raise WorkerUnavailable(self._version.name, self._version.version, str(exc)) from exc

    def predict_stream(self, data: Any, params: dict[str, Any] | None = None) -> Iterator[Any]:
        """The worker's predict_stream, chunk by chunk (WorkerGroup.stream)."""
        try:
            yield from self.group.stream(self.handle, data, params)
        except WorkerLost as exc:
            raise WorkerUnavailable(self._version.name, self._version.version, str(exc)) from exc

    def enable_fast(self, flavor: str, names: list[str] | None) -> Callable[[Any], Any] | None:
        """Ask the worker for the flavor's own predict on arrays of ``names`` (the fast path's
        second half, gateway.dataplane.fastpath.assemble); the call that uses it, or None."""
        try:
            return self.predict_fast if self.group.enable_fast(self.handle, flavor, names) else None
        except WorkerLost:
            return None

    def predict_fast(self, array: Any) -> Any:
        try:
            return self.group.predict(self.handle, array, None, op="predict_fast")
        except WorkerLost as exc:
            raise WorkerUnavailable(self._version.name, self._version.version, str(exc)) from exc

    @property
    def executor(self) -> concurrent.futures.Executor:
        """Where its predict calls wait for the worker (LoadedModel.calls_on): its group's own
        threads, not the shared predict pool, which a model that sleeps would otherwise hold."""
        return self.group.executor

    @property
    def worker_pid(self) -> int | None:
        process = self.group.process
        return process.pid if process is not None else None

    @property
    def worker_pids(self) -> list[int]:
        return self.group.pids()

    @property
    def sandbox(self) -> dict[str, Any] | None:
        """What its workers are confined to (gateway/runtimes/sandbox.py), for its status."""
        return self.group.sandbox.describe() if self.group.sandbox is not None else None


class IsolatedRuntime:
    kind = "isolated"

    def __init__(
        self,
        store: EnvironmentStore,
        *,
        max_workers: int,
        processes: int = 1,
        sharing: WorkerSharing = "model",
        sandbox: SandboxPolicy | None = None,
    ) -> None:
        self.store = store
        self.sharing = sharing  # GATEWAY_ENV_WORKER_SHARING
        self.sandbox = sandbox or SandboxPolicy(mode="off")
        self.watchdog = CpuWatchdog(
            self.sandbox.cpu_seconds, call_seconds=self.sandbox.call_seconds, load_seconds=self.sandbox.load_seconds
        )
        if self.sandbox.on and self.sandbox.root is not None:
            sweep(self.sandbox.root)
        self.max_workers = max_workers
        self.processes = processes  # per environment
        self._groups: dict[GroupKey, WorkerGroup] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        # Unloads are called from the event loop (the cache's eviction); a worker may be busy
        # answering a batch, so they wait their turn here instead: a thread per worker the
        # gateway may run, so that one whose unload sleeps (a model's __del__) holds up no other
        # model's eviction (and not past GATEWAY_SANDBOX_LOAD_SECONDS).
        self._lifecycle = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, max_workers), thread_name_prefix="worker-life"
        )

    def load(
        self,
        version: VersionId,
        path: Path,
        env: Environment,
        metadata: Model,
        device: DeviceRequest | None = None,
        network: NetworkChoice | None = None,
    ) -> Loaded:
        """Load in a worker of ``env``; given a ``device`` (a PyTorch version), on the device it
        resolves to there. Versions allowed the network get workers of their own."""
        network = network or NetworkChoice(False, "no network (the default)")
        key = self.group_key(version, env, network)
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                if (len(self._groups) + 1) * self.processes > self.max_workers:
                    raise WorkersExhausted(version.name, version.version, self.max_workers)
                sandbox = None
                if self.sandbox.on:
                    sandbox = WorkerSandbox(self.sandbox, network, label=env.key[:12], watchdog=self.watchdog)
                group = self._groups[key] = WorkerGroup(self, env, key=key, processes=self.processes, sandbox=sandbox)
        handle = f"{version.uid}#{next(self._ids)}"
        try:
            grown, answer = group.load(handle, path, device)
        except WorkerLost as exc:
            raise WorkerUnavailable(version.name, version.version, str(exc)) from exc
        model = RemoteModel(group, handle, metadata, version)
        return Loaded(
            model=model,
            size_bytes=grown,
            unload=lambda: self._lifecycle.submit(group.unload, handle),
            device=str(answer.get("device") or "cpu"),
            device_reason=answer.get("device_reason"),
        )

    def group_key(self, version: VersionId, env: Environment, network: NetworkChoice) -> GroupKey:
        """Which versions share worker processes: those of one environment, one model (one
        version, with GATEWAY_ENV_WORKER_SHARING=version) and one network choice. Never two
        models: in one process, a model's code could reach the other's data and memory. A
        tuple, not a string joined from names a registry user picks (a model named
        ``victim+network`` once landed in network-allowed ``victim``'s worker)."""
        sharer = None if self.sharing == "model" else version.version
        return GroupKey(env.key, version.name, sharer, self.sandbox.on and network.allowed)

    def sandbox_missing(self) -> dict[str, str]:
        """The layers some running worker lacks, as checked from outside (for /health/ready)."""
        missing: dict[str, str] = {}
        for group in self.workers():
            if group.sandbox is not None and group.pids():
                missing.update(group.sandbox.describe()["missing"])
        missing.pop("limits.cpu_per_call", None)  # a setting, said by the host's summary
        return missing

    def baseline_bytes(self) -> tuple[int, int]:
        """The worker processes running, and their own RSS at start (not their versions')."""
        live = [process for group in self.workers() for process in group.processes if process and process.alive]
        return len(live), sum(process.baseline for process in live)

    def forget(self, group: WorkerGroup) -> None:
        with self._lock:
            if self._groups.get(group.key) is group:
                del self._groups[group.key]

    def workers(self) -> list[WorkerGroup]:
        with self._lock:
            return list(self._groups.values())

    def close(self) -> None:
        for group in self.workers():
            group.stop()
        self._lifecycle.shutdown(wait=True)
