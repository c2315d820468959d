"""Naming versions in tests: by identity where the code needs one, by (name, number) to read."""

from __future__ import annotations

from typing import Any

from gateway.dataplane.cache import CachedVersion, ModelCache
from registry_sync.identity import VersionId


def vid(name: str, version: int, *, source: str = "models:/m-test", created_ms: int | None = 0) -> VersionId:
    return VersionId(name, version, source, created_ms)


def loaded_keys(cache: ModelCache) -> list[tuple[str, int]]:
    """The loaded versions as (name, number), least recently used first."""
    return [(key.name, key.version) for key in cache.keys()]


def loaded(cache: ModelCache, name: str, version: int) -> CachedVersion | None:
    """The loaded version under this name and number, whatever its identity."""
    return next((cached for cached in cache.describe() if (cached.name, cached.version) == (name, version)), None)


def entry(cache: ModelCache, name: str, version: int) -> Any:
    """The cache's own entry for the version under this name and number (its model, leases)."""
    return next(e for key, e in cache._entries.items() if (key.name, key.version) == (name, version))


def loading(cache: ModelCache, name: str, version: int) -> Any | None:
    """The load under way for the version under this name and number, if any."""
    return next((p for key, p in cache._pending.items() if (key.name, key.version) == (name, version)), None)
