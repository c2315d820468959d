"""The drift references this process knows: read from the state database at the drift interval.

The sync leader computes each version's reference once and keeps it in the state database
(``registry_sync/drift/references.py``); every process reads them here, never recomputes one.
The binning thread asks :meth:`ReferenceBook.get` for a version's bins (a dict read: no I/O);
the monitor refreshes the book every GATEWAY_DRIFT_INTERVAL_SECONDS. The one call site of the
reference store's reads and of its ``save`` (a baseline's) on the live side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from registry_sync.drift.profile import Profile
from registry_sync.drift.references import READY, Reference, ReferenceStore, SourceKind
from registry_sync.identity import VersionId

BASELINE: SourceKind = "baseline"  # the source kind of a reference profiled from the first requests served


@dataclass(frozen=True, slots=True)
class KnownReference:
    """A version's reference as the state database holds it."""

    status: str  # ready, failed or none (no source: a baseline is collected)
    source_kind: str | None
    source_uri: str | None
    reason: str | None
    profile: Profile | None
    rows: int
    computed_at: float | None
    outputs_reason: str | None = None  # why a ready reference has no profile of the outputs

    @property
    def weaker(self) -> bool:
        """A baseline of the first requests served, not the data the version was trained on."""
        return self.source_kind == BASELINE


class ReferenceBook:
    def __init__(self, store: ReferenceStore) -> None:
        self._store = store
        self._known: dict[VersionId, KnownReference] = {}
        self._stamps: dict[tuple[str, int], float] = {}  # computed_at of each reference held

    def get(self, version: VersionId) -> KnownReference | None:
        return self._known.get(version)

    def known(self) -> dict[VersionId, KnownReference]:
        return dict(self._known)

    def refresh(self) -> None:
        """Bring every reference up to date (blocking: in a thread): a light read of when each
        was computed, then the profiles of those new or recomputed since the last refresh only
        (a registry of many versions is not read and parsed whole every interval)."""
        stamps = self._store.stamps()
        changed = [key for key, at in stamps.items() if self._stamps.get(key) != at]
        unchanged = stamps.keys() - set(changed)  # a reference gone from the database goes here too
        found = {v: known for v, known in self._known.items() if (v.name, v.version) in unchanged}
        for reference in self._store.of(changed):
            found[reference.version] = KnownReference(
                reference.status,
                reference.source_kind,
                reference.source_uri,
                reference.reason,
                reference.profile,
                reference.rows,
                reference.computed_at,
                reference.outputs_reason,
            )
        self._known, self._stamps = found, stamps

    def save_baseline(self, version: VersionId, profile: Profile) -> None:
        """A baseline profiled from the first requests served (blocking: in a thread). It keeps
        the row's tags digest, so the leader's builder does not take it for a changed version."""
        now = time.time()
        existing = self._store.get(version)
        digest = existing.tags_digest if existing is not None else ""
        self._store.save(Reference(version, READY, now, source_kind=BASELINE, profile=profile, tags_digest=digest))
        self._known[version] = KnownReference(READY, BASELINE, None, None, profile, profile.rows, now)
