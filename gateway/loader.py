"""Turn a registry version into a loaded, measured, callable model.

Everything here blocks (downloads, unpickling, predict); the cache and the service
run it in threads, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from gateway import fastpath
from gateway.errors import GatewayError, InvalidInput, ModelLoadFailed, PredictFailed, VersionRefused
from gateway.fastpath import FastPath
from gateway.scoring import ScoringInput
from gateway.sizing import object_graph_bytes
from registry_sync.artifacts import ArtifactStore
from registry_sync.errors import ArtifactDigestMismatch, RegistryError
from registry_sync.hashing import directory_bytes
from registry_sync.repository import StateStore, VersionState

log = logging.getLogger(__name__)

# Flavors whose predict treats rows independently: batching and caching are safe by default.
ROW_INDEPENDENT_FLAVORS = frozenset({"sklearn", "pytorch"})
# Version tags that override the defaults ("true" / "false").
BATCHING_TAG = "gateway.batching"
DETERMINISTIC_TAG = "gateway.deterministic"
FAST_PATH_TAG = "gateway.fast_path"

# What a model raises when the input is wrong for it: the client's mistake, not ours.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError)


@dataclass(eq=False)
class LoadedModel:
    name: str
    version: int
    pyfunc: Any
    metadata: Model
    path: Path
    size_bytes: int
    load_seconds: float
    flavor: str
    digest: str = ""
    loaded_at: float = field(default_factory=time.time)
    fast: FastPath | None = None  # the flavor's own predict on typed arrays, where safe
    batching: bool = False  # concurrent requests may share one predict call
    deterministic: bool = False  # the same input always gives the same answer (cacheable)
    queue: Any = None  # this version's VersionQueue, made by the service on first use

    def predict(self, request: ScoringInput) -> Any:
        try:
            if request.params:
                return self.pyfunc.predict(request.data, params=request.params)
            return self.pyfunc.predict(request.data)
        except Exception as exc:
            raise self._predict_error(exc) from exc

    def predict_fast(self, array: Any) -> Any:
        assert self.fast is not None
        try:
            return self.fast.predict(array)
        except Exception as exc:
            raise self._predict_error(exc) from exc

    def _predict_error(self, exc: Exception) -> GatewayError:
        """What a model's exception means for the client: its input, or our failure."""
        if isinstance(exc, MlflowException):
            if exc.get_http_status_code() >= 500:  # type: ignore[no-untyped-call]
                return PredictFailed(self.name, self.version, exc.message)
            return InvalidInput(exc.message)
        if isinstance(exc, _INPUT_ERRORS):
            return InvalidInput(f"The model rejected the input: {type(exc).__name__}: {exc}")
        return PredictFailed(self.name, self.version, f"{type(exc).__name__}: {exc}")


def flavor_of(metadata: Model) -> str:
    """The flavor that does the work (``sklearn``, ``pytorch``...), else ``python_function``."""
    pyfunc_conf = metadata.flavors.get("python_function", {})
    module = str(pyfunc_conf.get("loader_module", ""))
    if module.startswith("mlflow."):
        return module.removeprefix("mlflow.")
    others = [name for name in metadata.flavors if name != "python_function"]
    return others[0] if others else "python_function"


class ModelLoader:
    """Fetch, verify against the pinned sha256, then load: bytes that don't match never load."""

    def __init__(self, artifacts: ArtifactStore, store: StateStore, *, actor: str = "gateway") -> None:
        self._artifacts = artifacts
        self._store = store
        self._actor = actor

    def _verified_path(self, name: str, version: int, known: VersionState | None) -> tuple[Path, str]:
        expected = known.digest if known is not None else None
        path: Path | None
        try:
            # A copy on this disk that no longer matches is fetched again before the version is
            # blamed; a fresh download that does not match is never put in place.
            path, digest = self._artifacts.fetch_verified(name, version, expected=expected)
        except ArtifactDigestMismatch as exc:
            path, digest = None, exc.digest
        result = self._store.pin_digest(name, version, digest, actor=self._actor)
        if not result.ok or path is None:
            self._artifacts.forget(name, version)
            raise VersionRefused(name, version, result.reason or "digest mismatch")
        return path, digest

    def load(self, name: str, version: int) -> LoadedModel:
        started = time.perf_counter()
        try:
            known = self._store.version(name, version)  # its pinned digest and its tags
            path, digest = self._verified_path(name, version, known)
            pyfunc = mlflow.pyfunc.load_model(str(path))
        except VersionRefused:
            raise
        except RegistryError as exc:
            raise ModelLoadFailed(name, version, str(exc)) from exc
        except Exception as exc:  # anything a model's own loader raises
            raise ModelLoadFailed(name, version, f"{type(exc).__name__}: {exc}") from exc
        # The graph misses memory that native libraries hold outside Python; the files
        # they were loaded from bound that from below.
        size = max(object_graph_bytes(pyfunc), directory_bytes(path))
        seconds = time.perf_counter() - started
        flavor = flavor_of(pyfunc.metadata)
        tags = known.tags if known is not None else {}
        fast = fastpath.build(pyfunc, pyfunc.metadata, flavor) if _tag(tags, FAST_PATH_TAG) is not False else None
        log.info(
            "loaded %s version %s: %.1f KiB in %.2f s (%s, %s path)",
            name,
            version,
            size / 1024,
            seconds,
            flavor,
            "fast" if fast else "pyfunc",
        )
        row_independent = flavor in ROW_INDEPENDENT_FLAVORS
        return LoadedModel(
            name=name,
            version=version,
            pyfunc=pyfunc,
            metadata=pyfunc.metadata,
            path=path,
            size_bytes=size,
            load_seconds=seconds,
            flavor=flavor,
            digest=digest,
            fast=fast,
            batching=_choose(_tag(tags, BATCHING_TAG), default=row_independent),
            deterministic=_choose(_tag(tags, DETERMINISTIC_TAG), default=row_independent),
        )


def _tag(tags: dict[str, str], key: str) -> bool | None:
    """A version's yes/no tag: True, False, or None when unset or unreadable."""
    value = str(tags.get(key, "")).strip().lower()
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(value)


def _choose(tagged: bool | None, *, default: bool) -> bool:
    return default if tagged is None else tagged
