"""What a registry version *is*: its name, number, source and creation time.

MLflow reuses version numbers once a model is deleted and registered again, and two
registries (staging and production, or one rebuilt from scratch) share names and
numbers. So nothing that outlives a moment may be keyed by name + number alone: the
pinned digest, the loaded model, the metadata read from its MLmodel all belong to one
:class:`VersionId`. A version re-created under an old number is a different VersionId.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VersionId:
    name: str
    version: int
    source: str
    """Where the registry says the version came from (``models:/m-<id>`` in MLflow 3)."""
    created_ms: int | None
    """The registry's creation timestamp; None only for rows recorded before it was kept."""

    @property
    def uid(self) -> str:
        """A short stable fingerprint of the whole identity, for keys on disk and in logs."""
        raw = f"{self.name}\0{self.version}\0{self.source}\0{self.created_ms}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def same_version(self, other: VersionId) -> bool:
        """True when ``other`` is this version as the registry showed it at another moment.

        A row recorded before creation times were kept (``created_ms`` None) matches on its
        source alone, so upgrading the state database does not throw its pins away.
        """
        if (self.name, self.version, self.source) != (other.name, other.version, other.source):
            return False
        return self.created_ms is None or other.created_ms is None or self.created_ms == other.created_ms

    def __str__(self) -> str:
        return f"'{self.name}' version {self.version}"
