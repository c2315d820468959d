"""What the job queue hands out: a job as its readers see it, a claimed chunk, a new job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from registry_sync.identity import VersionId

JobState = Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
QUEUED: JobState = "queued"
RUNNING: JobState = "running"
SUCCEEDED: JobState = "succeeded"
PARTIAL: JobState = "partial"  # every chunk ran; some failed (listed with their range and reason)
FAILED: JobState = "failed"
CANCELLED: JobState = "cancelled"
ENDED: frozenset[str] = frozenset({SUCCEEDED, PARTIAL, FAILED, CANCELLED})
STATES: tuple[str, ...] = (QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELLED)

# A chunk's states: queued, running (under a holder's lease), done, failed, cancelled.
CHUNK_DONE = "done"
CHUNK_FAILED = "failed"
CHUNK_CANCELLED = "cancelled"

INLINE = "inline"
FILES = "files"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A submission, its version pinned: the store gives it an id and its chunks' rows."""

    kind: str
    id: VersionId
    spec: dict[str, Any]
    chunks: list[dict[str, Any]]  # each chunk's input spec; an inline job has one, empty
    alias: str | None = None
    owner: str | None = None
    fail_fast: bool = False
    rows_total: int | None = None


@dataclass(frozen=True, slots=True)
class ChunkFailure:
    index: int
    reason: str
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    version: VersionId
    alias: str | None
    owner: str | None
    state: str
    spec: dict[str, Any]
    rows_total: int | None
    rows_done: int
    chunks_total: int
    chunks_done: int
    chunks_failed: int
    error: str | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    has_result: bool
    failures: list[ChunkFailure] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.state in ENDED


@dataclass(frozen=True, slots=True)
class Claimed:
    """A chunk this process holds until it finishes it or its lease lapses."""

    job_id: str
    index: int
    kind: str
    version: VersionId
    job_spec: dict[str, Any]
    spec: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class Ending:
    """What finishing or failing a chunk did: whether this process's work counted (False: the
    chunk was no longer its own), and the job's state if that ended it."""

    counted: bool
    ended: str | None = None
    next: Claimed | None = None  # the job's next chunk, claimed in the same transaction (JobStore.finish)
