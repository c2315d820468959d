"""Turn a registry version into a loaded, measured, callable model.

Everything here blocks (downloads, unpickling, predict); the cache and the service
run it in threads, never on the event loop.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.models import Model

from gateway.dataplane import fastpath
from gateway.dataplane.fastpath import FastPath
from gateway.errors import (
    GatewayError,
    InvalidInput,
    ModelLoadFailed,
    ModelRaised,
    ModelTooLarge,
    PolicyRefused,
    PredictFailed,
    ShuttingDown,
    VersionNotFound,
    VersionRefused,
)
from gateway.observability.repeats import Repeats
from gateway.runtimes.base import Placement, flavor_of
from gateway.runtimes.placement import EnvironmentPolicy, PlacementRefused, Placer
from gateway.runtimes.policy import LoadingPolicy, PolicyViolation
from gateway.sizes import readable
from gateway.wire.mlflow_scoring import BodyLimits, ScoringInput
from registry_sync.artifacts import ArtifactStore
from registry_sync.errors import (
    ArtifactDigestMismatch,
    ArtifactLocationRefused,
    RegistryError,
    described,
    without_paths,
)
from registry_sync.hashing import directory_bytes
from registry_sync.identity import VersionId
from registry_sync.repository import EventKind, StateStore, VersionState

log = logging.getLogger(__name__)

# Flavors whose predict treats rows independently: batching and caching are safe by default.
ROW_INDEPENDENT_FLAVORS = frozenset({"sklearn", "pytorch", "xgboost", "lightgbm", "catboost"})
# Version tags that override the defaults ("true" / "false").
BATCHING_TAG = "gateway.batching"
DETERMINISTIC_TAG = "gateway.deterministic"
FAST_PATH_TAG = "gateway.fast_path"
# A version's share of requests recorded (GATEWAY_RECORDS_SAMPLE's override): a number in [0, 1].
RECORDS_SAMPLE_TAG = "gateway.records.sample"

# What a model raises that says the process is in trouble, not the input: another
# replica, or the same one later, may well answer (500, worth a retry).
_PROCESS_ERRORS = (MemoryError,)


@dataclass(eq=False)
class LoadedModel:
    id: VersionId  # the registry's version this is, by identity
    pyfunc: Any
    metadata: Model
    path: Path
    size_bytes: int
    load_seconds: float
    flavor: str
    digest: str = ""
    loaded_at: float = field(default_factory=time.time)
    fast: FastPath | None = None  # the flavor's own predict on typed arrays, where safe
    fast_reason: str = ""  # which path serves it and why, in words (shown in /models)
    batching: bool = False  # concurrent requests may share one predict call
    deterministic: bool = False  # the same input always gives the same answer (cacheable)
    records_sample: float | None = None  # tagged gateway.records.sample: its inference records' ratio
    queue: Any = None  # this version's VersionQueue, made by the service on first use
    body_limits: BodyLimits = field(default_factory=BodyLimits)  # what CSV and Parquet bodies may decode to
    placement: Placement | None = None  # where it runs (this process, or a worker) and why
    device_bytes: int = 0  # what its tensors hold on its device, when that is a GPU (not in size_bytes)
    unload: Callable[[], Any] = field(default=lambda: None)  # the runtime's; called on the event loop

    @property
    def name(self) -> str:
        return self.id.name

    @property
    def version(self) -> int:
        return self.id.version

    def calls_on(self, shared: Executor) -> Executor:
        """Where its predict calls run: for a version served by a worker process, its worker's
        own threads (waiting on one holds none of the shared pool's), else ``shared``."""
        own: Executor | None = getattr(self.pyfunc, "executor", None)
        return own or shared

    def predict(self, request: ScoringInput) -> Any:
        try:
            if request.params:
                return self.pyfunc.predict(request.data, params=request.params)
            return self.pyfunc.predict(request.data)
        except Exception as exc:
            raise self._predict_error(exc) from exc

    def predict_stream(self, request: ScoringInput) -> Iterator[Any]:
        """The model's ``predict_stream`` generator for one request, not started: each step of it
        runs in a stream thread (gateway.dataplane.streaming), and its errors are worded there."""
        if request.params:
            return self.pyfunc.predict_stream(request.data, params=request.params)  # type: ignore[no-any-return]
        return self.pyfunc.predict_stream(request.data)  # type: ignore[no-any-return]

    def predict_fast(self, array: Any) -> Any:
        assert self.fast is not None
        try:
            return self.fast.predict(array)
        except Exception as exc:
            raise self._predict_error(exc) from exc

    def _predict_error(self, exc: Exception) -> GatewayError:
        """What a model's exception means for the client, decided as MLflow's scoring server
        decides it: MLflow's own errors keep their code; anything else the model raises is
        400 BAD_REQUEST (predict is a function of the body: the same body fails again),
        except what says the process itself is failing (docs/user-guide.md: Errors), and the runtime's
        own errors (a worker gone), which keep their meaning."""
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, MlflowException):
            if exc.get_http_status_code() >= 500:  # type: ignore[no-untyped-call]
                return PredictFailed(self.name, self.version, exc.message)
            if exc.error_code == "BAD_REQUEST":
                return ModelRaised(self.name, self.version, exc.message)
            return InvalidInput(exc.message)
        if isinstance(exc, _PROCESS_ERRORS):
            return PredictFailed(self.name, self.version, f"{type(exc).__name__}: {exc}")
        return ModelRaised(self.name, self.version, f"{type(exc).__name__}: {exc}")


class ModelLoader:
    """Fetch, verify against the pinned sha256, then load: bytes that don't match never load."""

    def __init__(
        self,
        artifacts: ArtifactStore,
        store: StateStore,
        *,
        actor: str = "gateway",
        policy: LoadingPolicy | None = None,
        body_limits: BodyLimits | None = None,
        placer: Placer | None = None,
    ) -> None:
        self.body_limits = body_limits or BodyLimits()
        # Where versions run: without one, every version in this process, as GATEWAY_ENV_MANAGER=local.
        self.placer = placer or Placer.build(EnvironmentPolicy(manager="local"), None, max_workers=0)
        self._artifacts = artifacts
        self._store = store
        self._actor = actor
        self.policy = policy or LoadingPolicy()
        self._refusals_told: set[tuple[str, str]] = set()  # (version uid, reason) already in /events
        self._policy_refusals: dict[str, str] = {}  # version uid -> why this process's policy refuses it
        # By version uid: a retry that fails alike is not told again (fetches: no event; the
        # model's own loader: no WARNING); a fetch that works again says so in an event.
        self._fetches_told: Repeats[str] = Repeats()
        self._loads_told: Repeats[str] = Repeats()

    def _refused_by_policy(self, version: VersionId, policy: str, reason: str) -> PolicyRefused:
        """The error for a version this process's policy refuses, with one 'refused' event per
        version and reason (requests retry it; the event log must not grow with them). The
        refusal is not written on the version: another policy may load the very same bytes."""
        error = PolicyRefused(version.name, version.version, policy=policy, reason=reason)
        self._policy_refusals[version.uid] = error.reason
        told = (version.uid, error.reason)
        if told not in self._refusals_told:
            self._refusals_told.add(told)
            log.info("%s", error)  # the cache, or the warm-up that asked, tells it at WARNING
            try:
                self._store.record(
                    EventKind.REFUSED, version.name, version=version.version, reason=error.reason, actor=self._actor
                )
            except RegistryError:
                self._refusals_told.discard(told)
                log.warning("could not record the refusal of %s: %s", version, error.reason)
        return error

    def refused_here(self, version: VersionId) -> str | None:
        """Why this process's loading policy refused ``version`` when it last tried, if it did."""
        return self._policy_refusals.get(version.uid)

    def _check_policy(self, version: VersionId, path: Path, digest: str) -> Model:
        """The version's MLmodel, once the policy lets it load (read once per load: the runtime
        that loads it is given it)."""
        try:
            metadata = Model.load(str(path / "MLmodel"))
            self.policy.check(metadata, path)
            return metadata
        except PolicyViolation as exc:
            self._artifacts.forget(digest)
            raise self._refused_by_policy(version, exc.policy, exc.reason) from None

    def _failed(self, version: VersionId, reason: str) -> None:
        """An event for a fetch that failed (loads are retried at most once a retry window; one
        that fails alike again is not told again)."""
        if not self._fetches_told.news(version.uid, reason):
            return
        try:
            self._store.record(
                EventKind.FAILED, version.name, version=version.version, reason=reason, actor=self._actor
            )
        except RegistryError:
            log.warning("could not record the failed load of %s: %s", version, reason)

    def _verified_path(self, version: VersionId, known: VersionState) -> tuple[Path, str]:
        path: Path | None
        try:
            # A copy on this disk is used only through the pin; a fresh download that does
            # not match the pin is never put in place.
            path, digest = self._artifacts.fetch_verified(version, expected=known.digest)
        except ArtifactDigestMismatch as exc:
            path, digest = None, exc.digest
        result = self._store.pin_digest(version, digest, actor=self._actor)
        if result.stale:
            raise VersionNotFound(version.name, version.version)  # deleted or re-created meanwhile
        if not result.ok or path is None:
            if path is not None:
                self._artifacts.forget(digest)
            raise VersionRefused(version.name, version.version, result.reason or "digest mismatch")
        return path, digest

    def load(self, version: VersionId, reserve: Callable[[int], None] = lambda estimate: None) -> LoadedModel:
        """Fetch and verify the version, ``reserve`` its files' size (the cache makes room for
        it before it is loaded), then load it."""
        name, number = version.name, version.version
        started = time.perf_counter()
        path: Path | None = None  # the logs name it when a load fails; answers never do
        try:
            known = self._store.version(name, number)  # its pinned digest and its tags
            if known is None or known.deleted or not known.id.same_version(version):
                raise VersionNotFound(name, number)  # the registry no longer has this version
            path, digest = self._verified_path(version, known)
            metadata = self._check_policy(version, path, digest)  # before MLflow runs any of the model's code
            on_disk = directory_bytes(path)
            reserve(on_disk)
            loaded, placement = self.placer.load(version, path, digest, metadata, known.tags)
        except (VersionRefused, VersionNotFound, ModelTooLarge, ShuttingDown):
            raise
        except GatewayError:  # the runtime's own (no worker could be started): already worded
            raise
        except ArtifactLocationRefused as exc:  # before any download
            raise self._refused_by_policy(version, exc.policy, exc.detail) from None
        except PlacementRefused as exc:  # its environment cannot be built here
            raise self._refused_by_policy(version, exc.policy, exc.reason) from None
        except RegistryError as exc:
            reason = without_paths(str(exc))  # events and answers are read by callers
            self._failed(version, reason)
            raise ModelLoadFailed(name, number, reason) from exc
        except Exception as exc:  # anything a model's own loader raises; its paths stay in the log
            if self._loads_told.news(version.uid, described(exc)):  # the cache tells it at WARNING
                log.info("%s failed to load from %s: %s: %s", version, path, type(exc).__name__, exc)
            else:
                log.info("%s failed to load again, as told", version)
            raise ModelLoadFailed(name, number, described(exc)) from exc
        pyfunc = loaded.model
        size = max(loaded.size_bytes, on_disk)  # the files bound what native libraries hold from below
        seconds = time.perf_counter() - started
        flavor = flavor_of(pyfunc.metadata)
        tags = known.tags
        in_process = placement.runtime == "in_process"
        fast = None
        if _tag(tags, FAST_PATH_TAG) is not False:
            if in_process:
                fast = fastpath.build(pyfunc, pyfunc.metadata, flavor)
            else:  # decoded here, the flavor's own predict in the worker: a call, never on the loop
                fast = fastpath.assemble(
                    pyfunc.metadata, flavor, functools.partial(pyfunc.enable_fast, flavor), on_cpu=False
                )
            fast_reason = fastpath.reason(fast, pyfunc.metadata, flavor)
        else:
            fast_reason = f"pyfunc: tagged {FAST_PATH_TAG}={str(tags[FAST_PATH_TAG]).strip()}"
        log.info(
            "loaded %s: %s in %.2f s (%s, %s)",
            version,
            readable(size),
            seconds,
            flavor,
            ("fast path" if fast else "pyfunc")
            + ("" if in_process else f", worker of environment {placement.environment}"),
        )
        self._loads_told.clear(version.uid)
        failing = self._fetches_told.clear(version.uid)
        if failing is not None:
            reason = f"loaded: {failing.told()}"
            try:
                self._store.record(EventKind.RECOVERED, name, version=number, reason=reason, actor=self._actor)
            except RegistryError:
                log.warning("could not record that %s recovered", version)
        row_independent = flavor in ROW_INDEPENDENT_FLAVORS
        return LoadedModel(
            id=version,
            pyfunc=pyfunc,
            metadata=pyfunc.metadata,
            path=path,
            size_bytes=size,
            load_seconds=seconds,
            flavor=flavor,
            digest=digest,
            fast=fast,
            fast_reason=fast_reason,
            batching=_choose(_tag(tags, BATCHING_TAG), default=row_independent),
            deterministic=_choose(_tag(tags, DETERMINISTIC_TAG), default=row_independent),
            records_sample=_ratio(version, tags, RECORDS_SAMPLE_TAG),
            body_limits=self.body_limits,
            placement=placement,
            device_bytes=loaded.device_bytes,
            unload=loaded.unload,
        )


def _tag(tags: dict[str, str], key: str) -> bool | None:
    """A version's yes/no tag: True, False, or None when unset or unreadable."""
    value = str(tags.get(key, "")).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(value)


def _ratio(version: VersionId, tags: dict[str, str], key: str) -> float | None:
    """A version's ratio tag: a number from 0 to 1, or None when unset (or unreadable: said once)."""
    raw = str(tags.get(key, "")).strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        log.warning("%s: tag %s=%r is not a number from 0 to 1; the default applies", version, key, raw)
        return None
    return value


def _choose(tagged: bool | None, *, default: bool) -> bool:
    return default if tagged is None else tagged
