"""What ``/models`` shows: the state database's view joined with this process's cache."""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from mlflow.models import Model

from gateway.dataplane.cache import CachedVersion, ModelCache
from gateway.dataplane.predictor import InferenceService
from gateway.errors import GatewayError, ModelLoadFailed, VersionNotFound, VersionNotReady, VersionRefused
from gateway.observability.repeats import Failing
from gateway.registry_source import RegistrySource
from gateway.routing.catalog import Catalog, ModelView
from gateway.runtimes.base import Placement
from gateway.wire.api_schemas import (
    AliasBehind,
    LoadState,
    ModelDetail,
    ModelList,
    ModelSummary,
    RuntimeState,
    VersionDetail,
    VersionSummary,
    utc_iso,
)
from gateway.wire.selectors import parse_selector
from registry_sync.artifacts import ArtifactStore, VersionMetadata
from registry_sync.errors import RegistryError
from registry_sync.identity import VersionId
from registry_sync.repository import SyncStatus, VersionState

_MAX_METADATA = 1024


class Inventory:
    def __init__(
        self,
        catalog: Catalog,
        cache: ModelCache,
        artifacts: ArtifactStore,
        service: InferenceService,
        *,
        source: RegistrySource,
        sync_status: Callable[[], SyncStatus],
        placements: Callable[[VersionId], Placement | None] = lambda version: None,
        alias_failure: Callable[[str, str], Failing | None] = lambda name, alias: None,
        refused_here: Callable[[VersionId], str | None] = lambda version: None,
    ) -> None:
        self._refused_here = refused_here  # refused by this process's loading policy (the loader's)
        self._alias_failure = alias_failure  # the swap failure holding a warm alias back (the reconciler's)
        self._placements = placements  # where each version runs, once decided (gateway.runtimes)
        self._catalog = catalog
        self._cache = cache
        self._artifacts = artifacts
        self._service = service
        self.source = source
        self._sync_status = sync_status
        # A version's MLmodel never changes, so it is read once (per identity: a number the
        # registry re-created is another version with another MLmodel).
        self._metadata: OrderedDict[VersionId, VersionMetadata] = OrderedDict()

    def known_models(self) -> int:
        return len(self._catalog.model_names())

    async def empty_note(self) -> str | None:
        """Why there is nothing to serve, when there is nothing (else None)."""
        if self._catalog.model_names():
            return None
        try:
            status = await anyio.to_thread.run_sync(self._sync_status)
            ever_read = status.last_success_at is not None
        except RegistryError:
            ever_read = False
        return self.source.empty_note(ever_read=ever_read)

    async def models(self) -> ModelList:
        summaries = []
        # What this process holds, gathered once: a registry of 10,000 models is normal.
        loaded: dict[str, list[int]] = {}
        isolated: dict[str, dict[str, str]] = {}
        for key in self._cache.keys():
            loaded.setdefault(key.name, []).append(key.version)
            held = self._cache.peek(key)
            if held is not None and held.placement is not None and held.placement.runtime == "isolated":
                isolated.setdefault(key.name, {})[str(key.version)] = held.placement.environment or ""
        for name in self._catalog.model_names():
            model = self._catalog.model(name)
            summaries.append(
                ModelSummary(
                    name=name,
                    aliases=model.aliases,
                    registry_aliases=model.registry_aliases,
                    latest_version=model.latest_ready,
                    versions=sorted(model.versions, reverse=True),  # newest first, as in /models/{name}
                    loaded_versions=sorted(loaded.get(name, ()), reverse=True),
                    isolated_versions=isolated.get(name, {}),
                )
            )
        return ModelList(models=summaries, registry=self.source.uri, note=await self.empty_note())

    def _runtime(self, version: VersionId) -> RuntimeState | None:
        loaded = self._cache.peek(version)
        placement = loaded.placement if loaded is not None else None
        placement = placement or self._placements(version)
        if placement is None:
            return None
        pid = getattr(loaded.pyfunc, "worker_pid", None) if loaded is not None else None
        pids = getattr(loaded.pyfunc, "worker_pids", []) if loaded is not None else []
        return RuntimeState(
            runtime=placement.runtime,
            reason=placement.reason,
            environment=placement.environment,
            python=placement.python,
            mismatches=list(placement.mismatches),
            note=placement.note,
            device=placement.device,
            device_reason=placement.device_reason,
            worker_pid=pid,
            worker_pids=pids,
            sandbox=getattr(loaded.pyfunc, "sandbox", None) if loaded is not None else None,
        )

    async def model(self, name: str) -> ModelDetail:
        try:
            default: int | None = (await self._service.default_version(name, take_over=False)).version
        except GatewayError:
            default = None
        model = self._catalog.model(name)
        return ModelDetail(
            name=name,
            aliases=model.aliases,
            registry_aliases=model.registry_aliases,
            latest_version=model.latest_ready,
            default_version=default,
            versions=[self._summary(model, v) for v in sorted(model.versions, reverse=True)],
            aliases_behind=self._behind(model),
        )

    def _behind(self, model: ModelView) -> dict[str, AliasBehind]:
        """The aliases served at another version than MLflow names, and why."""
        behind = {}
        for alias, wanted in model.registry_aliases.items():
            serving = model.aliases.get(alias)
            if serving == wanted:
                continue
            failing = self._alias_failure(model.name, alias)
            state = model.versions.get(wanted)
            since = None
            if failing is not None:
                reason, since = failing.text, utc_iso(failing.since)
            elif state is not None and state.refused_reason:
                reason = f"version {wanted} is refused: {state.refused_reason}"
            elif state is None or not state.ready:
                reason = f"version {wanted} is not ready ({state.status if state is not None else 'deleted'})"
            else:
                reason = f"the swap to version {wanted} is under way, or waits for the alias's first request here"
            behind[alias] = AliasBehind(registry_version=wanted, serving_version=serving, reason=reason, since=since)
        return behind

    async def version(self, name: str, selector: str) -> VersionDetail:
        chosen = parse_selector(selector)
        if chosen.kind == "version":
            assert chosen.version is not None
            number = chosen.version
            try:
                await self._service.choose(name, path=selector, take_over=False)  # looks again if unknown
            except (VersionNotReady, VersionRefused):
                pass  # it exists: shown whatever its state, unlike for predict
        else:
            number = (await self._service.choose(name, path=selector, take_over=False)).version
        model = self._catalog.model(name)
        if number not in model.versions:
            raise VersionNotFound(name, number)
        state = model.versions[number]
        try:
            metadata: VersionMetadata | None = await self._read_metadata(state)
        except ModelLoadFailed:
            if not state.refused_reason:
                raise
            metadata = None  # its files are what is wrong: still show why it is refused
        signature = metadata.model.signature if metadata is not None else None
        return VersionDetail(
            **self._summary(model, number).model_dump(),
            name=name,
            source=state.source,
            run_id=state.run_id,
            tags=state.tags,
            flavors=sorted(metadata.model.flavors) if metadata is not None else [],
            signature=_parse_signature(signature.to_dict() if signature is not None else None),
            input_example=metadata.serving_example if metadata is not None else None,
        )

    async def mlmodel(self, name: str, version: int) -> Model:
        """A served version's MLmodel (flavors, signature), read without loading the model."""
        state = self._catalog.model(name).versions.get(version)
        if state is None:
            raise VersionNotFound(name, version)
        return (await self._read_metadata(state)).model

    def _summary(self, model: ModelView, version: int) -> VersionSummary:
        state = model.versions[version]
        cached = self._cache.get(state.id)
        placement = self._placements(state.id)
        # refused by its bytes (kept in the state database), or here: by the loading policy, or
        # its environment cannot be built
        refused = (
            state.refused_reason
            or self._refused_here(state.id)
            or (placement.refused if placement is not None else None)
        )
        return VersionSummary(
            version=version,
            status=state.status,
            aliases=sorted(a for a, v in model.aliases.items() if v == version),
            sha256=state.digest,
            refused=refused,
            first_seen=utc_iso(state.created_at),
            loaded=_load_state(cached) if cached is not None else None,
            last_load_error=self._cache.last_failure(state.id),
            runtime=self._runtime(state.id),
        )

    async def _read_metadata(self, state: VersionState) -> VersionMetadata:
        key = state.id
        found = self._metadata.get(key)
        if found is not None:
            return found
        try:
            found = await anyio.to_thread.run_sync(
                functools.partial(self._artifacts.metadata, key, digest=state.digest)
            )
        except RegistryError as exc:
            raise ModelLoadFailed(key.name, key.version, str(exc)) from exc
        self._metadata[key] = found
        while len(self._metadata) > _MAX_METADATA:
            self._metadata.popitem(last=False)
        return found


def _load_state(cached: CachedVersion) -> LoadState:
    return LoadState(
        flavor=cached.flavor,
        size_bytes=cached.size_bytes,
        device_bytes=cached.device_bytes,
        load_seconds=round(cached.load_seconds, 4),
        loaded_at=utc_iso(cached.loaded_at),
        last_used=utc_iso(cached.last_used),
        in_use=cached.in_use,
        uses=cached.uses,
        path="fast" if cached.fast else "pyfunc",
        path_reason=cached.path_reason,
    )


def _parse_signature(signature: dict[str, Any] | None) -> dict[str, Any] | None:
    # MLflow stores each part as a JSON string inside the dict.
    if signature is None:
        return None
    return {key: json.loads(value) if isinstance(value, str) else value for key, value in signature.items()}
