"""The control plane's work: read the registry and diff it into the database; check the
bytes of what is served.

``Synchronizer.sync_once`` is one pass; the poller, webhooks and ``/admin/sync`` only
decide when it runs. It reads every model in two paged calls (or just the models named)
and records what changed (new versions, re-created ones, status and tag changes,
deletions, alias moves; MLflow does not touch timestamps for aliases and tags, so they
are diffed). It downloads nothing, so a slow artifact never holds up an alias move.

Artifacts are fetched, hashed and pinned where they are needed: by the gateway loading a
version (a warm alias moving, a request). A ``gateway.sha256`` tag pins without a
download. ``verify`` re-checks the bytes of served versions against their pins; the
poller spreads it over ``verify_interval`` so its cost follows what is served, not the
size of the registry.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from registry_sync.artifacts import ArtifactStore
from registry_sync.errors import RegisteredModelNotFound, RegistryError
from registry_sync.identity import VersionId
from registry_sync.lease import NotLeader
from registry_sync.registry import ModelRecord, RegistryReader
from registry_sync.repository import Fence, StateStore
from registry_sync.s3listing import S3Lister, is_s3

log = logging.getLogger(__name__)


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

    def merge(self, other: SyncReport) -> None:
        """Add another pass's counts (a verification after the diff) to this report."""
        self.verified += other.verified
        self.refused += other.refused
        self.failed += other.failed
        self.problems.extend(other.problems)
        self.seconds += other.seconds
        self.error = self.error or other.error

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
        loaded: Callable[[], Iterable[VersionId]] = tuple,
        watched: Callable[[], Iterable[str]] = tuple,
        full_read_interval_seconds: float = 600.0,
    ) -> None:
        self._reader = reader
        self._store = store
        self._artifacts = artifacts
        self.verify_interval = verify_interval_seconds
        self._actor = actor
        self._fence = fence  # the leader lease: a pass that lost it writes no registry changes
        self._loaded = loaded  # versions this process has loaded (their bytes are checked too)
        self._watched = watched  # models whose versions are read every pass (what is served)
        self._full_every = full_read_interval_seconds
        self._next_full = 0.0  # the first pass reads everything
        # Each model's (created, last updated) at the last pass that read its versions.
        self._stamps: dict[str, tuple[int | None, int | None]] = {}
        self._lister = S3Lister()
        self._splits_read = False  # every model's split taken once, on the first full pass

    def sync_once(self, names: Iterable[str] | None = None, *, reason: str = "poll") -> SyncReport:
        """Blocking. ``names`` limits the pass to those models (a webhook's, say).

        Downloads nothing: new versions are fetched and pinned when first served (a warm
        alias moving to them, or a request), so a pass costs the registry read and the diff.
        """
        started = time.monotonic()
        report = SyncReport()
        actor = f"{self._actor}:{reason}"
        try:
            models = self._read(names)
            report.models = len(models)
            changes = self._store.apply_registry(models, complete=names is None, actor=actor, fence=self._fence)
            self._remember(models, complete=names is None)
            report.new_versions = len(changes.new_versions)
            report.alias_moves = len(changes.alias_moves)
            pinned, refused = self._store.apply_digest_tags(changes.retagged, actor=actor)
            touched = changes.touched
            if not self._splits_read and names is None:
                # A new leader's first (full) pass takes every split: tags set before this
                # gateway version, or while no leader ran, moved no row it would see as changed.
                touched |= {m.name for m in models if m.versions_read}
            if touched:
                self._store.apply_traffic(touched, actor=actor, fence=self._fence)
            self._splits_read = self._splits_read or names is None
            report.verified += pinned
            report.refused += refused
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
            return self._read_changed()
        models = []
        for name in names:
            try:
                models.append(self._reader.get_model(name))
            except RegisteredModelNotFound:
                # Deleted: an empty record makes apply_registry mark its versions gone.
                models.append(ModelRecord(name=name, description="", aliases={}, tags={}, versions={}))
        return models

    def _read_changed(self) -> list[ModelRecord]:
        """The whole registry at the cost of its models, not its versions.

        Every model is read with its aliases (one paged call; MLflow moves no timestamp for
        aliases, so they are always diffed). Versions are read only for models that are
        new, re-created or whose ``last_updated_timestamp`` moved (MLflow moves it when a
        version is created or deleted), for the models served here (their tags), and for
        models with versions not READY yet. Version tags of other models change no
        timestamp: webhooks (``model_version_tag``) and a full read every
        ``full_read_interval`` catch them.
        """
        now = time.monotonic()
        if now >= self._next_full:
            models = self._reader.all_models()
            self._next_full = now + self._full_every
            return models
        listing = self._reader.registered_models()
        pending = self._store.names_not_ready()
        watched = set(self._watched()) | pending
        stale = [m.name for m in listing if m.name in watched or self._stamps.get(m.name) != m.stamp]
        versions = self._reader.versions_of(stale) if stale else {}
        return [
            dataclasses.replace(m, versions=versions[m.name], versions_read=True) if m.name in versions else m
            for m in listing
        ]

    def _remember(self, models: list[ModelRecord], *, complete: bool) -> None:
        """After a pass applied: the stamps of the models whose versions it read."""
        if complete:
            listed = {m.name for m in models}
            self._stamps = {name: stamp for name, stamp in self._stamps.items() if name in listed}
        for model in models:
            if model.versions_read:
                self._stamps[model.name] = model.stamp

    # --- bytes changed in place --------------------------------------------------------

    def drift_candidates(self) -> list[VersionId]:
        """The versions whose bytes are worth checking: those routes point at (MLflow's target
        and what gateways serve) and those this process has loaded; pinned and not refused."""
        wanted = {(v.name, v.version) for v in self._loaded()}
        return [state.id for state in self._store.served_states(extra=wanted)]

    def verify(self, versions: Iterable[VersionId], *, reason: str = "verify") -> SyncReport:
        """Check each version's bytes in the artifact store against its pin (blocking).

        In direct S3 a listing (keys, sizes, ETags; no bytes) that matches the one recorded
        at the last check is enough; anything else is downloaded and hashed again.
        """
        started = time.monotonic()
        report = SyncReport()
        actor = f"{self._actor}:{reason}"
        for version in versions:
            outcome = self._verify_one(version, actor=actor)
            if outcome == "refused":
                report.refused += 1
            elif outcome == "failed":
                report.failed += 1
                report.problems.append(f"{version.name} v{version.version}")
            elif outcome == "verified":
                report.verified += 1
        report.seconds = time.monotonic() - started
        return report

    def _verify_one(self, version: VersionId, *, actor: str) -> str:
        try:
            state = self._store.version(version.name, version.version)
            if state is None or state.id != version or not state.digest or state.refused_reason:
                return "skipped"  # gone, re-created, never pinned or already refused
            uri = state.artifact_uri or self._reader.download_uri(version.name, version.version)
            seen = self._lister.fingerprint(version.name, version.version, uri) if is_s3(uri) else None
            if seen is not None and seen == state.listing:
                return "unchanged"  # one LIST, no download
            digest = self._artifacts.source_digest(version)
            result = self._store.pin_digest(version, digest, actor=actor)
        except RegistryError as exc:  # the store or MLflow away: nothing to conclude, keep serving
            log.warning("could not verify %s: %s", version, exc)
            return "failed"
        if result.stale:
            return "skipped"
        if not result.ok:
            self._artifacts.forget(digest)  # never keep bytes that were refused
            return "refused"
        if seen != state.listing or uri != state.artifact_uri:
            self._store.record_listing(version, artifact_uri=uri, listing=seen)
        return "verified"
