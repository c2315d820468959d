"""Reads and writes of the state database. Everything blocks; callers use threads.

Writers bump ``sync_state.generation`` in the same transaction as their change, so a
reader that sees a new generation sees the change with it. The generation belongs to the
sync (what the registry says, pins and refusals): a gateway replica recording its own
swap writes an event and ``active_version`` but does not bump it, so N replicas swapping
one alias cause no follow traffic among themselves. The one exception is the guard rolling a
canary back (:meth:`StateStore.roll_back`): every replica must stop sending it traffic, so it
bumps the generation, once (the first replica to record it). Each replica's published
traffic counts (:meth:`StateStore.publish_counts`) never bump it: they are read on request,
by ``GET /models/{name}/traffic``, not followed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.errors import RegistryError
from registry_sync.identity import VersionId
from registry_sync.lease import db_now
from registry_sync.state import (
    EventRow,
    ModelVersionRow,
    RouteRow,
    SyncRequestRow,
    SyncStateRow,
    TrafficCountRow,
    TrafficRow,
    WebhookDeliveryRow,
    utcnow,
)
from registry_sync.traffic import SHADOW_TAG, WEIGHT_TAG, Arm, InvalidSplit, ModelTraffic, describe, parse_split

if TYPE_CHECKING:
    # Annotations only: registry_sync.registry imports MLflow (and with it pandas and scipy, about
    # 1 s of CPU), which the CLI's commands on the state database (keys, db) never use.
    from registry_sync.registry import ModelRecord, VersionRecord

log = logging.getLogger(__name__)

EXPECTED_DIGEST_TAG = "gateway.sha256"
_IN_LIST_LIMIT = 500  # past this many models, one scan of the table beats a long IN (...)


class EventKind(StrEnum):
    DETECTED = "detected"
    STATUS = "status_changed"
    TAGS = "tags_changed"
    DELETED = "deleted"
    REPLACED = "replaced"
    ALIAS_SET = "alias_set"
    ALIAS_DELETED = "alias_deleted"
    FETCHED = "fetched"
    VERIFIED = "verified"
    REFUSED = "refused"
    WARMED = "warmed"
    SWAPPED = "swapped"
    FAILED = "failed"
    RECOVERED = "recovered"  # what failed (and was told once) works again, or no longer matters
    KEY_CREATED = "key_created"
    KEY_REVOKED = "key_revoked"
    TRAFFIC_SET = "traffic_set"
    TRAFFIC_REFUSED = "traffic_refused"
    ROLLED_BACK = "rolled_back"
    DRIFTED = "drifted"  # a version's live traffic crossed a drift threshold (gateway/drift/monitor.py)
    DRIFT_RECOVERED = "drift_recovered"  # ... and is back under every threshold


class StateUnavailable(RegistryError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"State database unavailable: {detail}")


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction on the state database; any database error is StateUnavailable."""
    try:
        with sessions.begin() as session:
            yield session
    except SQLAlchemyError as exc:
        raise StateUnavailable(f"{type(exc).__name__}: {exc}") from exc


class WrongRegistry(RegistryError):
    def __init__(self, owner: str, asked: str) -> None:
        self.owner = owner
        self.asked = asked
        super().__init__(
            f"This state database belongs to the registry {owner}, not {asked}: its pinned digests "
            "would refuse the other registry's versions. Give each registry its own GATEWAY_DATABASE_URL."
        )


@dataclass(frozen=True, slots=True)
class VersionState:
    name: str
    version: int
    status: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    digest: str | None
    refused_reason: str | None
    deleted: bool
    created_at: datetime
    artifact_uri: str | None = None
    listing: str | None = None
    created_ms: int | None = None

    @property
    def id(self) -> VersionId:
        return VersionId(self.name, self.version, self.source, self.created_ms)

    @property
    def ready(self) -> bool:
        return self.status == "READY" and not self.deleted

    @property
    def expected_digest(self) -> str | None:
        value = self.tags.get(EXPECTED_DIGEST_TAG)
        return value.strip().lower() if value else None


@dataclass(frozen=True, slots=True)
class RouteState:
    name: str
    alias: str
    version: int
    active_version: int | None
    generation: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the data plane needs, as of one generation."""

    generation: int
    versions: dict[tuple[str, int], VersionState]
    routes: dict[tuple[str, str], RouteState]
    traffic: dict[str, ModelTraffic] = field(default_factory=dict)

    def model_names(self) -> list[str]:
        return sorted({name for name, _ in self.versions} | {name for name, _ in self.routes})


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: datetime
    name: str
    version: int | None
    alias: str | None
    kind: str
    reason: str
    actor: str


@dataclass
class Changes:
    """What one registry read changed in the database."""

    new_versions: list[tuple[str, int]] = field(default_factory=list)
    retagged: list[tuple[str, int]] = field(default_factory=list)
    """Versions that are new or whose tags changed: their digest tags need a look."""
    alias_moves: list[tuple[str, str, int]] = field(default_factory=list)
    deleted: list[tuple[str, int]] = field(default_factory=list)
    events: int = 0

    @property
    def touched(self) -> set[str]:
        """Models whose versions' tags may have changed: their traffic split needs a look."""
        return {name for name, _ in self.retagged} | {name for name, _ in self.deleted}

    @property
    def any(self) -> bool:
        return self.events > 0


@dataclass(frozen=True, slots=True)
class PinResult:
    ok: bool
    digest: str
    reason: str | None = None
    stale: bool = False
    """The version was deleted or re-created meanwhile: nothing was pinned or refused."""


@dataclass(frozen=True, slots=True)
class SyncStatus:
    generation: int
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None


class Fence(Protocol):
    """Checks, inside a write's transaction, that the writer may still write (the leader lease)."""

    def hold(self, session: Session) -> None: ...


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A sync asked of the leader by a process that does not lead."""

    id: int
    names: list[str] | None  # None: the whole registry
    reason: str
    verify: bool
    requested_by: str
    done: bool
    report: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ArmCount:
    """What one replica answered for one model's arm (``default``, ``canary``, ``shadow``)
    and version since it started. For a shadow, ``requests`` are the copies that ran,
    ``errors`` those that failed; ``agreed``, ``differed`` and ``dropped`` are for shadows only."""

    name: str
    arm: str
    version: int
    requests: int
    errors: int
    agreed: int = 0
    differed: int = 0
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class ReplicaCounts:
    """One replica's counts for a model as it last published them."""

    replica: str
    seen_at: datetime
    age_seconds: float  # by the database's clock
    counts: list[ArmCount]


_COUNT_COLUMNS = ("requests", "errors", "agreed", "differed", "dropped")


class StateStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    # --- reading -------------------------------------------------------------------

    def generation(self) -> int:
        with self._session() as session:
            return int(session.scalar(select(SyncStateRow.generation).where(SyncStateRow.id == 1)) or 0)

    def snapshot(self) -> Snapshot:
        with self._session() as session:
            generation = int(session.scalar(select(SyncStateRow.generation).where(SyncStateRow.id == 1)) or 0)
            versions = {
                (row.name, row.version): _version_state(row) for row in session.scalars(select(ModelVersionRow))
            }
            routes = {
                (row.name, row.alias): RouteState(row.name, row.alias, row.version, row.active_version, row.generation)
                for row in session.scalars(select(RouteRow))
            }
            arms: dict[str, dict[int, Arm]] = {}
            for row in session.scalars(select(TrafficRow)):
                arms.setdefault(row.name, {})[row.version] = _arm(row)
        traffic = {name: ModelTraffic(name, model_arms) for name, model_arms in arms.items()}
        return Snapshot(generation, versions, routes, traffic)

    def version(self, name: str, version: int) -> VersionState | None:
        with self._session() as session:
            row = session.get(ModelVersionRow, (name, version))
            return _version_state(row) if row is not None else None

    def events(self, *, name: str | None = None, limit: int = 100, before: int | None = None) -> list[Event]:
        query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
        if name is not None:
            query = query.where(EventRow.name == name)
        if before is not None:
            query = query.where(EventRow.id < before)
        with self._session() as session:
            return [
                Event(row.id, _utc(row.at), row.name, row.version, row.alias, row.kind, row.reason, row.actor)
                for row in session.scalars(query)
            ]

    def sync_status(self) -> SyncStatus:
        with self._session() as session:
            row = session.get(SyncStateRow, 1)
            assert row is not None, "sync_state is seeded by the first migration"
            return SyncStatus(row.generation, row.last_attempt_at, row.last_success_at, row.last_error)

    # --- writing -------------------------------------------------------------------

    def record(
        self,
        kind: EventKind,
        name: str,
        *,
        version: int | None = None,
        alias: str | None = None,
        reason: str = "",
        actor: str = "",
    ) -> None:
        with self._session() as session:
            _event(session, kind, name, version=version, alias=alias, reason=reason, actor=actor)

    def apply_registry(
        self, models: Iterable[ModelRecord], *, complete: bool, actor: str, fence: Fence | None = None
    ) -> Changes:
        """Make the database agree with what the registry showed.

        ``complete`` says the listing covers every model, so models missing from it were
        deleted; otherwise only the models listed are compared. A model read without its
        versions (``versions_read`` False) has only its aliases compared. With a ``fence``, nothing is
        written unless it holds (checked first, in the same transaction).
        """
        changes = Changes()
        seen = {model.name: model for model in models}
        with self._session() as session:
            if fence is not None:
                fence.hold(session)
            routes: dict[str, dict[str, RouteRow]] = {}
            for route in session.scalars(select(RouteRow)):
                routes.setdefault(route.name, {})[route.alias] = route
            recorded = set(session.scalars(select(ModelVersionRow.name).distinct())) if complete else set()
            names = set(seen) | recorded | (set(routes) if complete else set())
            # Only the rows of models whose versions were read (or that are gone): a poll that
            # read a few models' versions costs those, not the whole table.
            compared = {name for name in names if name not in seen or seen[name].versions_read}
            query = select(ModelVersionRow)
            if len(compared) <= _IN_LIST_LIMIT:
                query = query.where(ModelVersionRow.name.in_(sorted(compared)))
            known: dict[str, dict[int, ModelVersionRow]] = {}
            for row in session.scalars(query):
                if row.name in compared:
                    known.setdefault(row.name, {})[row.version] = row
            for name in sorted(names):
                model = seen.get(name)
                if model is None or model.versions_read:  # else only its aliases were read
                    self._apply_versions(session, name, model, known.get(name, {}), changes, actor)
                self._apply_aliases(session, name, model, routes.get(name, {}), changes, actor)
            if changes.any:
                _bump(session)
        return changes

    def _apply_versions(
        self,
        session: Session,
        name: str,
        model: ModelRecord | None,
        known: dict[int, ModelVersionRow],
        changes: Changes,
        actor: str,
    ) -> None:
        current = model.versions if model is not None else {}
        for number, record in current.items():
            row = known.get(number)
            if row is None or row.deleted or not _row_id(row).same_version(record.id):
                replaced = row is not None and not _row_id(row).same_version(record.id)
                if row is None:
                    row = ModelVersionRow(name=name, version=number)
                    session.add(row)
                if replaced:
                    reason = (
                        f"a new version under an old number (source {record.source}, created {record.created_ms}) "
                        f"replaces the {'deleted' if row.deleted else 'previous'} one "
                        f"(source {row.source}, created {row.created_ms}): its pin and its copies are not reused"
                    )
                    _event(session, EventKind.REPLACED, name, version=number, reason=reason, actor=actor)
                    # A different version: nothing known about the old one holds for it.
                    row.digest = row.refused_reason = row.artifact_uri = row.listing = None
                row.deleted = False
                _copy_record(row, record)
                changes.new_versions.append((name, number))
                changes.retagged.append((name, number))
                changes.events += 1
                _event(session, EventKind.DETECTED, name, version=number, reason=f"status {record.status}", actor=actor)
                continue
            if row.created_ms is None and record.created_ms is not None:
                row.created_ms = record.created_ms  # recorded before creation times were kept
            if row.status != record.status:
                _event(
                    session,
                    EventKind.STATUS,
                    name,
                    version=number,
                    reason=f"{row.status} -> {record.status}",
                    actor=actor,
                )
                row.status = record.status
                changes.events += 1
                if record.status == "READY":
                    changes.new_versions.append((name, number))
            if (row.tags or {}) != record.tags:
                before = row.tags or {}
                moved = sorted(k for k in set(before) | set(record.tags) if before.get(k) != record.tags.get(k))
                _event(session, EventKind.TAGS, name, version=number, reason=", ".join(moved), actor=actor)
                row.tags = dict(record.tags)
                changes.retagged.append((name, number))
                changes.events += 1
        for number, row in known.items():
            if number not in current and not row.deleted:
                row.deleted = True
                changes.deleted.append((name, number))
                changes.events += 1
                _event(session, EventKind.DELETED, name, version=number, reason="gone from the registry", actor=actor)

    def _apply_aliases(
        self,
        session: Session,
        name: str,
        model: ModelRecord | None,
        routes: dict[str, RouteRow],
        changes: Changes,
        actor: str,
    ) -> None:
        aliases = model.aliases if model is not None else {}
        generation = _generation(session) + 1  # what this transaction's bump will make it
        for alias, version in aliases.items():
            route = routes.get(alias)
            if route is not None and route.version == version:
                continue
            before = route.version if route is not None else None
            if route is None:
                route = RouteRow(name=name, alias=alias, version=version, active_version=None, generation=generation)
                session.add(route)
            route.version = version
            route.generation = generation
            changes.alias_moves.append((name, alias, version))
            changes.events += 1
            reason = f"{alias} {before} -> {version}" if before is not None else f"{alias} -> {version}"
            _event(session, EventKind.ALIAS_SET, name, version=version, alias=alias, reason=reason, actor=actor)
        for alias, route in routes.items():
            if alias not in aliases:
                session.delete(route)
                changes.events += 1
                _event(session, EventKind.ALIAS_DELETED, name, version=route.version, alias=alias, actor=actor)

    # --- traffic splits (canaries, shadows) ------------------------------------------

    def apply_traffic(self, names: Iterable[str], *, actor: str, fence: Fence | None = None) -> int:
        """Take each model's split from its live versions' tags; returns how many changed.

        A bad split (not numbers, weights over 100) is refused with an event and the previous
        split stays. A canary the guard rolled back stays off while its weight tag reads as it
        did then; any change of that tag (or its removal) ends the rollback.
        """
        changed = 0
        wanted = set(names)
        with self._session() as session:
            if fence is not None:
                fence.hold(session)
            # Two reads for all the models, not two per model (a leader's first pass asks for all).
            query = select(ModelVersionRow.name, ModelVersionRow.version, ModelVersionRow.tags).where(
                ModelVersionRow.deleted.is_(False)
            )
            if len(wanted) <= _IN_LIST_LIMIT:
                query = query.where(ModelVersionRow.name.in_(sorted(wanted)))
            tags: dict[str, dict[int, dict[str, str]]] = {}
            for name, version, version_tags in session.execute(query):
                if name in wanted and version_tags and (WEIGHT_TAG in version_tags or SHADOW_TAG in version_tags):
                    tags.setdefault(name, {})[version] = dict(version_tags)
            split_names = set(session.scalars(select(TrafficRow.name).distinct()))
            for name in sorted(wanted & (set(tags) | split_names)):
                try:
                    split = parse_split(name, tags.get(name, {}))
                except InvalidSplit as exc:
                    _event(session, EventKind.TRAFFIC_REFUSED, name, reason=str(exc), actor=actor)
                    continue
                if self._write_split(session, name, split):
                    changed += 1
                    _event(session, EventKind.TRAFFIC_SET, name, reason=describe(split), actor=actor)
            if changed:
                _bump(session)
        return changed

    @staticmethod
    def _write_split(session: Session, name: str, split: dict[int, tuple[float, float, str | None]]) -> bool:
        known = {row.version: row for row in session.scalars(select(TrafficRow).where(TrafficRow.name == name))}
        changed = False
        for version, gone in known.items():
            if version not in split:
                session.delete(gone)
                changed = True
        for version, (weight, shadow, tag) in split.items():
            row = known.get(version)
            if row is None:
                session.add(TrafficRow(name=name, version=version, weight=weight, shadow=shadow, weight_tag=tag))
                changed = True
                continue
            if (row.weight, row.shadow, row.weight_tag) == (weight, shadow, tag):
                continue
            if row.weight_tag != tag:  # the tag changed: the guard's rollback ends
                row.rolled_back_at = row.rolled_back_reason = None
            row.weight, row.shadow, row.weight_tag = weight, shadow, tag
            changed = True
        return changed

    def roll_back(self, name: str, version: int, *, reason: str, actor: str) -> bool:
        """The guard takes a canary's weight away on every replica; True for the one process
        that did it (the others found it done). Bumps the generation: replicas follow it."""
        with self._session() as session:
            done = session.execute(
                update(TrafficRow)
                .where(TrafficRow.name == name, TrafficRow.version == version, TrafficRow.rolled_back_at.is_(None))
                .values(rolled_back_at=utcnow(), rolled_back_reason=reason)
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                return False
            _event(session, EventKind.ROLLED_BACK, name, version=version, reason=reason, actor=actor)
            _bump(session)
            return True

    # --- each replica's traffic counts ----------------------------------------------

    def publish_counts(self, replica: str, counts: Iterable[ArmCount], *, forget_after: float) -> None:
        """Upsert this replica's counts, one row per model, arm and version, stamped with the
        database's clock (so staleness is judged on one clock, whatever the replicas' own);
        rows of any replica not seen for ``forget_after`` seconds are deleted. Each row is
        written by its own replica only: no two writers race for a key."""
        rows = [
            {"replica": replica, "name": c.name, "arm": c.arm, "version": c.version}
            | {column: getattr(c, column) for column in _COUNT_COLUMNS}
            for c in counts
        ]
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            for row in rows:
                row["seen_at"] = now
            if rows:
                session.execute(
                    upsert(
                        session,
                        TrafficCountRow,
                        rows,
                        keys=["replica", "name", "arm", "version"],
                        update=lambda new: {c: new.excluded[c] for c in (*_COUNT_COLUMNS, "seen_at")},
                    )
                )
            session.execute(delete(TrafficCountRow).where(TrafficCountRow.seen_at < now - forget_after))

    def replica_counts(self, name: str) -> list[ReplicaCounts]:
        """Every replica's last published counts for ``name``, most recently seen first."""
        with self._session() as session:
            now = float(session.scalar(select(db_now())) or 0.0)
            rows = session.scalars(select(TrafficCountRow).where(TrafficCountRow.name == name)).all()
        by_replica: dict[str, list[TrafficCountRow]] = {}
        for row in rows:
            by_replica.setdefault(row.replica, []).append(row)
        replicas = [
            ReplicaCounts(
                replica=replica,
                seen_at=datetime.fromtimestamp(max(r.seen_at for r in mine), UTC),
                age_seconds=max(0.0, now - max(r.seen_at for r in mine)),
                counts=[
                    ArmCount(r.name, r.arm, r.version, r.requests, r.errors, r.agreed, r.differed, r.dropped)
                    for r in sorted(mine, key=lambda r: (r.arm, r.version))
                ],
            )
            for replica, mine in by_replica.items()
        ]
        return sorted(replicas, key=lambda r: (r.age_seconds, r.replica))

    def pin_digest(self, version_id: VersionId, digest: str, *, actor: str) -> PinResult:
        """Check ``digest`` against the version's tag and pin; the first digest seen wins.

        Only for the version ``version_id`` names: if the registry deleted it or re-created
        its number meanwhile, nothing is pinned or refused (``stale``).
        """
        name, version = version_id.name, version_id.version
        with self._session() as session:
            row = session.get(ModelVersionRow, (name, version), with_for_update=True)
            if row is None or row.deleted or not _row_id(row).same_version(version_id):
                return PinResult(False, digest, f"{version_id} was deleted or re-created meanwhile", stale=True)
            if row.refused_reason:
                return PinResult(False, digest, row.refused_reason)
            expected = str((row.tags or {}).get(EXPECTED_DIGEST_TAG) or "").strip().lower()
            if expected and expected != digest:
                reason = f"sha256 {digest} differs from the {EXPECTED_DIGEST_TAG} tag {expected}"
                return self._refuse(session, row, digest, reason, actor=actor)
            if row.digest is not None:
                return self._check_against_pin(session, row, digest, actor=actor)
            # Conditional, not read-then-write: sqlite ignores FOR UPDATE, and of two replicas
            # pinning at once only the first may write (the second must not overwrite it).
            won = session.execute(
                update(ModelVersionRow)
                .where(
                    ModelVersionRow.name == name,
                    ModelVersionRow.version == version,
                    ModelVersionRow.digest.is_(None),
                )
                .values(digest=digest)
                .execution_options(synchronize_session=False)
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                session.refresh(row)  # another process pinned first: its digest is the pin
                return self._check_against_pin(session, row, digest, actor=actor)
            _event(session, EventKind.VERIFIED, name, version=version, reason=f"pinned sha256 {digest}", actor=actor)
            _bump(session)
            return PinResult(True, digest)

    def _check_against_pin(self, session: Session, row: ModelVersionRow, digest: str, *, actor: str) -> PinResult:
        if row.digest == digest:
            return PinResult(True, digest)
        reason = f"artifacts changed: sha256 is now {digest}, pinned {row.digest}"
        return self._refuse(session, row, digest, reason, actor=actor)

    @staticmethod
    def _refuse(session: Session, row: ModelVersionRow, digest: str, reason: str, *, actor: str) -> PinResult:
        row.refused_reason = reason
        _event(session, EventKind.REFUSED, row.name, version=row.version, reason=reason, actor=actor)
        _bump(session)
        return PinResult(False, digest, reason)

    def record_listing(self, version_id: VersionId, *, artifact_uri: str, listing: str | None) -> None:
        """Remember where a version's artifacts are and how their listing looked."""
        with self._session() as session:
            row = session.get(ModelVersionRow, (version_id.name, version_id.version))
            if row is not None and _row_id(row).same_version(version_id):
                row.artifact_uri, row.listing = artifact_uri, listing

    def apply_digest_tags(self, keys: Iterable[tuple[str, int]], *, actor: str) -> tuple[int, int]:
        """Act on the ``gateway.sha256`` tags of these versions (new, or whose tags changed):
        an unpinned version is pinned to its tag, since the registry vouches for those bytes
        and no download is needed; a pinned one whose tag differs is refused. Returns
        (pinned, refused)."""
        pinned = refused = 0
        with self._session() as session:
            for key in sorted(set(keys)):
                row = session.get(ModelVersionRow, key)
                if row is None or row.deleted or row.refused_reason:
                    continue
                expected = str((row.tags or {}).get(EXPECTED_DIGEST_TAG, "")).strip().lower()
                if not expected or expected == row.digest:
                    continue
                if row.digest is None:
                    row.digest = expected
                    reason = f"pinned sha256 {expected} from the {EXPECTED_DIGEST_TAG} tag"
                    _event(session, EventKind.VERIFIED, row.name, version=row.version, reason=reason, actor=actor)
                    pinned += 1
                else:
                    row.refused_reason = f"sha256 {row.digest} differs from the {EXPECTED_DIGEST_TAG} tag {expected}"
                    _event(
                        session,
                        EventKind.REFUSED,
                        row.name,
                        version=row.version,
                        reason=row.refused_reason,
                        actor=actor,
                    )
                    refused += 1
            if pinned or refused:
                _bump(session)
        return pinned, refused

    def names_not_ready(self) -> set[str]:
        """Models with a version not READY yet (its status may change without a timestamp)."""
        with self._session() as session:
            rows = session.execute(
                select(ModelVersionRow.name)
                .where(ModelVersionRow.status != "READY", ModelVersionRow.deleted.is_(False))
                .distinct()
            )
            return {row[0] for row in rows}

    def served_states(self, *, extra: Iterable[tuple[str, int]] = ()) -> list[VersionState]:
        """Pinned, unrefused versions that routes point at (MLflow's target or what gateways
        serve), plus ``extra``: what is worth re-checking, in proportion to what is served."""
        wanted = set(extra)
        with self._session() as session:
            for route in session.scalars(select(RouteRow)):
                wanted.add((route.name, route.version))
                if route.active_version is not None:
                    wanted.add((route.name, route.active_version))
            states = []
            for key in sorted(wanted):
                row = session.get(ModelVersionRow, key)
                if row is not None and row.digest and not row.refused_reason and not row.deleted:
                    states.append(_version_state(row))
            return states

    def set_active(
        self, name: str, alias: str, version: int, *, previous: int | None, actor: str, note: str = ""
    ) -> None:
        """Record that ``alias`` now serves ``version`` here (after a successful warm swap).

        Every replica records its own swap as an event; ``active_version`` (what a restarting
        replica serves first) changes only if it differs, and the generation is not bumped:
        it belongs to the sync, so replicas swapping never make each other look again.
        """
        with self._session() as session:
            session.execute(
                update(RouteRow)
                .where(
                    RouteRow.name == name,
                    RouteRow.alias == alias,
                    or_(RouteRow.active_version.is_(None), RouteRow.active_version != version),
                )
                .values(active_version=version)
            )
            # the alias named in the reason too: the pages and the CLI show the reason, not the field
            reason = f"{alias} {previous} -> {version}" if previous is not None else f"{alias} -> {version}"
            if note:
                reason = f"{reason} ({note})"
            _event(session, EventKind.SWAPPED, name, version=version, alias=alias, reason=reason, actor=actor)

    def claim(self, registry_uri: str) -> None:
        """Bind this state to one registry; refuse a database that belongs to another."""
        with self._session() as session:
            row = session.get(SyncStateRow, 1, with_for_update=True)
            assert row is not None, "sync_state is seeded by the first migration"
            if row.registry_uri is None:
                row.registry_uri = registry_uri
            elif row.registry_uri != registry_uri:
                raise WrongRegistry(row.registry_uri, registry_uri)

    def sync_attempted(self, *, error: str | None) -> None:
        now = utcnow()
        values: dict[str, Any] = {"last_attempt_at": now, "last_error": error}
        if error is None:
            values["last_success_at"] = now
        with self._session() as session:
            session.execute(update(SyncStateRow).where(SyncStateRow.id == 1).values(**values))

    def take_delivery(self, delivery_id: str, *, keep: timedelta) -> bool:
        """True the first time a webhook delivery id is seen; False for a replay."""
        try:
            with self._session() as session:
                session.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.received_at < utcnow() - keep))
                session.add(WebhookDeliveryRow(delivery_id=delivery_id))
        except StateUnavailable as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

    # --- sync requests (processes that do not lead ask the leader) -------------------

    def request_sync(self, names: list[str] | None, *, reason: str, requested_by: str, verify: bool = False) -> int:
        """Queue a sync for the leader; returns the request's id."""
        with self._session() as session:
            row = SyncRequestRow(names=names, reason=reason, requested_by=requested_by, verify=verify)
            session.add(row)
            session.flush()
            return int(row.id)

    def pending_sync_requests(self) -> list[SyncRequest]:
        with self._session() as session:
            rows = session.scalars(
                select(SyncRequestRow).where(SyncRequestRow.done_at.is_(None)).order_by(SyncRequestRow.id)
            )
            return [_sync_request(row) for row in rows]

    def finish_sync_requests(self, ids: Iterable[int], *, report: dict[str, Any], keep: timedelta) -> None:
        """Mark requests done with the leader's report; forget done ones older than ``keep``."""
        now = utcnow()
        with self._session() as session:
            session.execute(
                update(SyncRequestRow).where(SyncRequestRow.id.in_(list(ids))).values(done_at=now, report=report)
            )
            session.execute(delete(SyncRequestRow).where(SyncRequestRow.done_at < now - keep))

    def sync_request(self, request_id: int) -> SyncRequest | None:
        with self._session() as session:
            row = session.get(SyncRequestRow, request_id)
            return _sync_request(row) if row is not None else None


def upsert(session: Session, table: type[Any], rows: list[dict[str, Any]], *, keys: list[str], update: Any) -> Any:
    """INSERT ... ON CONFLICT (``keys``) DO UPDATE, on PostgreSQL and sqlite alike. ``update``
    maps each column to set to its new value, given the statement (whose ``excluded`` names
    the row that was refused)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).values(rows)
    elif dialect == "sqlite":
        statement = sqlite.insert(table).values(rows)
    else:  # pragma: no cover - the gateway supports sqlite and PostgreSQL only
        raise StateUnavailable(f"cannot upsert {table.__tablename__} on {dialect}")
    return statement.on_conflict_do_update(index_elements=keys, set_=update(statement))


def _sync_request(row: SyncRequestRow) -> SyncRequest:
    return SyncRequest(
        id=row.id,
        names=list(row.names) if row.names is not None else None,
        reason=row.reason,
        verify=bool(row.verify),
        requested_by=row.requested_by,
        done=row.done_at is not None,
        report=dict(row.report) if row.report is not None else None,
    )


def _generation(session: Session) -> int:
    return int(session.scalar(select(SyncStateRow.generation).where(SyncStateRow.id == 1)) or 0)


def _bump(session: Session) -> None:
    session.execute(update(SyncStateRow).where(SyncStateRow.id == 1).values(generation=SyncStateRow.generation + 1))


def _event(
    session: Session,
    kind: EventKind,
    name: str,
    *,
    version: int | None = None,
    alias: str | None = None,
    reason: str = "",
    actor: str = "",
) -> None:
    log.info("event %s %s v%s %s %s", kind.value, name, version, alias or "", reason)
    session.add(EventRow(name=name, version=version, alias=alias, kind=kind.value, reason=reason, actor=actor))


def _utc(moment: datetime) -> datetime:
    # sqlite keeps no zone; everything is written in UTC
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _row_id(row: ModelVersionRow) -> VersionId:
    return VersionId(row.name, row.version, row.source or "", row.created_ms)


def _copy_record(row: ModelVersionRow, record: VersionRecord) -> None:
    row.source, row.created_ms, row.status = record.source, record.created_ms, record.status
    row.run_id, row.tags = record.run_id, dict(record.tags)


def _version_state(row: ModelVersionRow) -> VersionState:
    return VersionState(
        name=row.name,
        version=row.version,
        status=row.status,
        source=row.source,
        run_id=row.run_id,
        tags=dict(row.tags or {}),
        digest=row.digest,
        refused_reason=row.refused_reason,
        deleted=row.deleted,
        created_at=_utc(row.first_seen_at),
        artifact_uri=row.artifact_uri,
        listing=row.listing,
        created_ms=row.created_ms,
    )


def _arm(row: TrafficRow) -> Arm:
    return Arm(
        version=row.version,
        weight=float(row.weight),
        shadow=float(row.shadow),
        weight_tag=row.weight_tag,
        rolled_back=row.rolled_back_reason,
    )
