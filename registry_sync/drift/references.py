"""Each version's drift reference, in the state database: computed once, read by every replica.

A reference belongs to a version identity (``registry_sync/identity.py``): one row per model
name and number, holding the identity it was computed for, so a version re-created under an
old number finds no reference (:meth:`ReferenceStore.get` compares identities) and gets its
own, which replaces the row. Its status says what a drift page can show:

- ``ready``: a :class:`~registry_sync.drift.profile.Profile` of the inputs (and, unless
  ``outputs_reason`` says why not, of the version's outputs on them), from ``source_kind``
  (``dataset``, ``tag``, ``artifact``; ``baseline`` for the first requests a version served,
  a weaker reference) at ``source_uri``;
- ``failed``: a source was found and could not be used; ``reason`` says why;
- ``none``: no source; ``reason`` says which were looked for.

The sync leader writes them (``registry_sync/drift/builder.py``, and the baseline window);
nothing here bumps the generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, delete, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from registry_sync.drift.profile import Profile
from registry_sync.identity import VersionId
from registry_sync.repository import transaction, upsert
from registry_sync.state import DriftReferenceRow

Status = Literal["ready", "failed", "none"]
SourceKind = Literal["dataset", "tag", "artifact", "baseline"]

READY: Status = "ready"
FAILED: Status = "failed"
NONE: Status = "none"


@dataclass(frozen=True, slots=True)
class Reference:
    version: VersionId
    status: Status
    computed_at: float
    """Seconds since the epoch."""
    source_kind: SourceKind | None = None
    source_uri: str | None = None
    reason: str | None = None
    """Why it failed, or why there is none."""
    profile: Profile | None = None
    """Set when ready."""
    outputs_reason: str | None = None
    """Why a ready reference has no profile of the outputs (None when it has one)."""
    tags_digest: str = ""
    """The version's ``gateway.drift.*`` tags it was computed under (builder.drift_tags_digest)."""

    @property
    def weaker(self) -> bool:
        """A baseline window (the first requests served), not the training data: drift
        against it says the traffic changed since, not that it left what the version learned."""
        return self.source_kind == "baseline"

    @property
    def rows(self) -> int:
        return self.profile.rows if self.profile is not None else 0


class ReferenceStore:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _session(self) -> AbstractContextManager[Session]:
        return transaction(self._sessions)

    def save(self, reference: Reference) -> None:
        """Keep ``reference`` as its version's, replacing whatever the number had."""
        version = reference.version
        row = {
            "name": version.name,
            "version": version.version,
            "source": version.source,
            "created_ms": version.created_ms,
            "status": reference.status,
            "source_kind": reference.source_kind,
            "source_uri": reference.source_uri,
            "reason": reference.reason,
            "outputs_reason": reference.outputs_reason,
            "profile": reference.profile.to_json() if reference.profile is not None else None,
            "rows": reference.rows,
            "sampled_from": reference.profile.sampled_from if reference.profile is not None else 0,
            "tags_digest": reference.tags_digest,
            "computed_at": reference.computed_at,
        }
        with self._session() as session:
            session.execute(
                upsert(
                    session,
                    DriftReferenceRow,
                    [row],
                    keys=["name", "version"],
                    update=lambda statement: {
                        key: statement.excluded[key] for key in row if key not in ("name", "version")
                    },
                )
            )

    def get(self, version: VersionId) -> Reference | None:
        """The reference of this version identity (None for another identity's row)."""
        with self._session() as session:
            row = session.get(DriftReferenceRow, (version.name, version.version))
            if row is None:
                return None
            reference = _reference(row)
        return reference if reference.version.same_version(version) else None

    def list(self, names: Sequence[str] | None = None) -> list[Reference]:
        """Every reference kept (of ``names`` only, when given), by name and number."""
        query = select(DriftReferenceRow).order_by(DriftReferenceRow.name, DriftReferenceRow.version)
        if names is not None:
            query = query.where(DriftReferenceRow.name.in_(list(names)))
        with self._session() as session:
            return [_reference(row) for row in session.scalars(query)]

    def stamps(self) -> dict[tuple[str, int], float]:
        """When each reference kept was computed, by (name, number): a light read (no profile)
        for a reader that keeps the references and fetches only those that changed."""
        query = select(DriftReferenceRow.name, DriftReferenceRow.version, DriftReferenceRow.computed_at)
        with self._session() as session:
            return {(name, version): at for name, version, at in session.execute(query)}

    def of(self, keys: Sequence[tuple[str, int]]) -> Sequence[Reference]:
        """The references of these (name, number), those kept."""
        if not keys:
            return []
        query = select(DriftReferenceRow).where(
            tuple_(DriftReferenceRow.name, DriftReferenceRow.version).in_(list(keys))
        )
        with self._session() as session:
            return [_reference(row) for row in session.scalars(query)]

    def forget(self, keys: Sequence[tuple[str, int]]) -> int:
        """Drop the references of these (name, number): versions deleted from the registry."""
        if not keys:
            return 0
        with self._session() as session:
            statement = delete(DriftReferenceRow).where(
                tuple_(DriftReferenceRow.name, DriftReferenceRow.version).in_(list(keys))
            )
            return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]


def _reference(row: DriftReferenceRow) -> Reference:
    return Reference(
        version=VersionId(row.name, row.version, row.source or "", row.created_ms),
        status=row.status,  # type: ignore[arg-type]
        computed_at=row.computed_at,
        source_kind=row.source_kind,  # type: ignore[arg-type]
        source_uri=row.source_uri,
        reason=row.reason,
        profile=Profile.from_json(row.profile) if row.profile is not None else None,
        outputs_reason=row.outputs_reason,
        tags_digest=row.tags_digest or "",
    )
