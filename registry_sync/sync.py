"""One pass of the control plane: read the registry, diff it into the database, hash.

``Synchronizer.sync_once`` is the whole job; the poller, webhooks and ``/admin/sync``
only decide when it runs. It reads every model in two paged calls (or just the models
named), records what changed (new versions, status and tag changes, deletions, alias
moves; MLflow does not touch timestamps for aliases and tags, so they are diffed),
then fetches and hashes each new READY version and pins its digest. Versions that
routes point at are re-hashed from the store every ``verify_interval`` to catch bytes
changed in place. A failure on one version is an event; the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from registry_sync.artifacts import ArtifactStore
from registry_sync.errors import RegisteredModelNotFound, RegistryError
from registry_sync.lease import NotLeader
from registry_sync.registry import ModelRecord, RegistryReader
from registry_sync.repository import EventKind, Fence, Snapshot, StateStore
from registry_sync.s3listing import S3Lister, is_s3

log = logging.getLogger(__name__)

_HASH_WORKERS = 4
_FETCH_RETRY_FIRST = 60.0  # a version that failed to fetch waits this long, doubling...
_FETCH_RETRY_MAX = 3600.0  # ...up to this, so a broken version is not an event every poll


@dataclass
class SyncReport:
    models: int = 0
    new_versions: int = 0
    alias_moves: int = 0
    verified: int = 0
    refused: int = 0
    failed: int = 0
    seconds: float = 0.0
    error: str | None = None
    generation: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SyncReport:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


class Synchronizer:
    def __init__(
        self,
        reader: RegistryReader,
        store: StateStore,
        artifacts: ArtifactStore,
        *,
        verify_interval_seconds: float = 300.0,
        actor: str = "sync",
        fence: Fence | None = None,
    ) -> None:
        self._reader = reader
        self._store = store
        self._artifacts = artifacts
        self._verify_interval = verify_interval_seconds
        self._actor = actor
        self._fence = fence  # the leader lease: a pass that lost it writes no registry changes
        self._last_verify = time.monotonic()
        self._fetch_failures: dict[tuple[str, int], tuple[int, float]] = {}  # key -> (count, next try)
        self._lister = S3Lister()

    def sync_once(self, names: Iterable[str] | None = None, *, reason: str = "poll") -> SyncReport:
        """Blocking. ``names`` limits the pass to those models (a webhook's, say)."""
        started = time.monotonic()
        report = SyncReport()
        actor = f"{self._actor}:{reason}"
        try:
            models = self._read(names)
            report.models = len(models)
            changes = self._store.apply_registry(models, complete=names is None, actor=actor, fence=self._fence)
            report.new_versions = len(changes.new_versions)
            report.alias_moves = len(changes.alias_moves)
            snapshot = self._store.snapshot()
            now = time.monotonic()
            to_pin = [
                key
                for key, state in snapshot.versions.items()
                if state.ready
                and state.digest is None
                and not state.refused_reason
                # a pass for named models (a webhook, a miss) tries again at once
                and (key[0] in set(names) if names is not None else self._retry_due(key, now))
            ]
            self._hash_all(to_pin, report, actor, pinned_only=False)
            self._check_tags(snapshot, report, actor)
            if names is None:  # with this pass's pins, so a new version's listing is recorded now
                self._check_listings(self._store.snapshot(), report, actor)
            if names is None and time.monotonic() - self._last_verify >= self._verify_interval:
                self._last_verify = time.monotonic()
                routed = {(r.name, v) for r in snapshot.routes.values() for v in (r.version, r.active_version) if v}
                recheck = [
                    k
                    for k in routed
                    if k in snapshot.versions
                    and snapshot.versions[k].digest
                    and not snapshot.versions[k].refused_reason
                ]
                self._hash_all(sorted(recheck), report, actor, pinned_only=True)
        except NotLeader as exc:  # the leader's own status is not this process's to overwrite
            report.error = str(exc)
            report.seconds = time.monotonic() - started
            log.warning("sync (%s) stopped: %s", reason, exc)
            return report
        except RegistryError as exc:
            report.error = str(exc)
            log.warning("sync (%s) failed: %s", reason, exc)
        report.seconds = time.monotonic() - started
        try:
            self._store.sync_attempted(error=report.error)
            report.generation = self._store.generation()
        except RegistryError as exc:
            report.error = report.error or str(exc)
        return report

    def _read(self, names: Iterable[str] | None) -> list[ModelRecord]:
        if names is None:
            return self._reader.all_models()
        models = []
        for name in names:
            try:
                models.append(self._reader.get_model(name))
            except RegisteredModelNotFound:
                # Deleted: an empty record makes apply_registry mark its versions gone.
                models.append(ModelRecord(name=name, description="", aliases={}, tags={}, versions={}))
        return models

    def _retry_due(self, key: tuple[str, int], now: float) -> bool:
        failure = self._fetch_failures.get(key)
        return failure is None or failure[1] <= now

    def _check_listings(self, snapshot: Snapshot, report: SyncReport, actor: str) -> None:
        """Direct S3: list each pinned version's objects (no bytes); re-hash only on a change."""
        for (name, version), state in sorted(snapshot.versions.items()):
            if not state.ready or not state.digest or state.refused_reason:
                continue
            try:
                uri = state.artifact_uri or self._reader.download_uri(name, version)
                if not is_s3(uri):
                    if state.artifact_uri is None:  # look it up once, then never again
                        self._store.record_listing(name, version, artifact_uri=uri, listing=None)
                    continue
                seen = self._lister.fingerprint(name, version, uri)
            except RegistryError as exc:  # S3 or MLflow away: nothing to conclude, keep serving
                log.warning("could not list %s version %s: %s", name, version, exc)
                continue
            if state.listing is not None and seen != state.listing:
                log.info("objects of %s version %s changed in S3; hashing them again", name, version)
                outcome = self._hash_one(name, version, actor=actor, fresh=True)
                if outcome == "refused":
                    report.refused += 1
                    continue
                if outcome == "failed":
                    report.failed += 1
                    continue
            if seen != state.listing or state.artifact_uri != uri:
                self._store.record_listing(name, version, artifact_uri=uri, listing=seen)

    def _check_tags(self, snapshot: Snapshot, report: SyncReport, actor: str) -> None:
        """A gateway.sha256 tag set after the pin must match it: no download needed to tell."""
        for (name, version), state in snapshot.versions.items():
            expected = state.expected_digest
            if state.digest and expected and expected != state.digest and not state.refused_reason:
                if not self._store.pin_digest(name, version, state.digest, actor=actor).ok:
                    report.refused += 1

    def _hash_all(self, keys: list[tuple[str, int]], report: SyncReport, actor: str, *, pinned_only: bool) -> None:
        if not keys:
            return
        with ThreadPoolExecutor(max_workers=_HASH_WORKERS, thread_name_prefix="hash") as pool:
            outcomes = list(pool.map(lambda key: self._hash_one(*key, actor=actor, fresh=pinned_only), keys))
        for (name, version), outcome in zip(keys, outcomes, strict=True):
            if outcome == "verified":
                report.verified += 1
            elif outcome == "refused":
                report.refused += 1
            elif outcome == "failed":
                report.failed += 1
                report.problems.append(f"{name} v{version}")

    def _hash_one(self, name: str, version: int, *, actor: str, fresh: bool) -> str:
        """Hash one version (from this host's copy, or ``fresh`` from the store) and pin it."""
        try:
            if fresh:
                digest = self._artifacts.source_digest(name, version)
            else:
                digest = self._artifacts.fetch_verified(name, version)[1]
                self._store.record(EventKind.FETCHED, name, version=version, reason=f"sha256 {digest}", actor=actor)
            result = self._store.pin_digest(name, version, digest, actor=actor)
        except RegistryError as exc:
            log.warning("could not hash %s version %s: %s", name, version, exc)
            if not fresh:
                count = self._fetch_failures.get((name, version), (0, 0.0))[0] + 1
                delay = min(_FETCH_RETRY_FIRST * 2 ** (count - 1), _FETCH_RETRY_MAX)
                self._fetch_failures[(name, version)] = (count, time.monotonic() + delay)
            try:
                self._store.record(EventKind.FAILED, name, version=version, reason=str(exc), actor=actor)
            except RegistryError:
                pass
            return "failed"
        self._fetch_failures.pop((name, version), None)
        if not result.ok:
            self._artifacts.forget(name, version)  # never keep bytes that were refused
            return "refused"
        return "verified" if not fresh else "unchanged"
