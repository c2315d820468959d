"""The job queue on the state database: jobs, their chunks, and who holds which chunk.

A job is submitted with its chunks in one transaction (:meth:`JobStore.submit`); from then on
every serving process of the fleet may claim its chunks. Claiming is one conditional UPDATE of
a chunk that is queued, or running under a lease that lapsed (its process died): on PostgreSQL
the candidate is first read ``FOR UPDATE SKIP LOCKED``, so claimers never wait on each other's
rows; on sqlite (one host, one writer at a time) the UPDATE's own ``WHERE`` decides, and a
claimer that lost the race (rowcount 0) tries the next candidate. Leases are on the database's
clock (:class:`registry_sync.lease.db_now`), renewed by the holder's heartbeat
(:meth:`JobStore.renew`), which also tells the holder which chunks are no longer its own (the job
was cancelled or failed, or its lease lapsed and another process took the chunk over).

A chunk is counted once: finishing it is an UPDATE that holds only while the chunk is still
running under this holder, in the transaction that adds its rows to the job. A chunk redone by
another process after a lapse writes the same output part again (its commit is idempotent by
index: gateway.jobs.files.writers) and counts its rows once, when it finishes. The ends of one
job's chunks are serialised on the job's row (each transaction updates it first), so exactly one
of them sees that no chunk is left and ends the job.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from registry_sync.identity import VersionId
from registry_sync.jobs.records import (
    CANCELLED,
    CHUNK_CANCELLED,
    CHUNK_DONE,
    CHUNK_FAILED,
    ENDED,
    FAILED,
    PARTIAL,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    ChunkFailure,
    Claimed,
    Ending,
    Job,
    NewJob,
)
from registry_sync.jobs.wakeups import notify
from registry_sync.lease import db_now, new_holder_id
from registry_sync.repository import StateUnavailable
from registry_sync.state import JobChunkRow, JobRow

_CLAIM_TRIES = 8  # candidates tried before a claim gives up for this round (sqlite: others won them)
_LISTED = 100  # jobs one listing returns at most
_DELETED = 500  # expired jobs deleted per statement
_MAX_CALLBACK_DELAY = 3600.0  # the longest wait between two deliveries of a callback
_OPEN = (QUEUED, RUNNING)
# A job's columns but its result (an inline answer, up to megabytes: read by result() alone)
_JOB = [column for column in JobRow.__table__.c if column.name != "result"] + [
    JobRow.result.is_not(None).label("has_result")
]


_Candidate = tuple[str, int, int, dict[str, Any]]  # a claimable chunk: job id, index, attempts so far, spec


def _claimable() -> Any:
    """A chunk any process may claim: queued, or running under a lease that lapsed (its process died)."""
    return or_(JobChunkRow.state == QUEUED, and_(JobChunkRow.state == RUNNING, JobChunkRow.lease_until < db_now()))


# The statements every chunk runs (a claim, a finish), built once with their parameters bound
# at each call: building one (SQLAlchemy's coercions and cache key) cost several times what
# sqlite then spends running it, a millisecond or two a chunk under the GIL the predicts need.
_chunks, _jobs = cast(Table, JobChunkRow.__table__), cast(Table, JobRow.__table__)
_CANDIDATE = (
    select(_chunks.c.job_id, _chunks.c.index, _chunks.c.attempts, _chunks.c.spec)
    .where(_claimable(), tuple_(_chunks.c.job_id, _chunks.c.index).not_in(bindparam("skipped_", expanding=True)))
    # the versions held here first (each a (name, number)), then the oldest job's first chunk
    .order_by(
        case((tuple_(_chunks.c.model, _chunks.c.version).in_(bindparam("held_", expanding=True)), 0), else_=1),
        _chunks.c.job_id,
        _chunks.c.index,
    )
    .limit(1)
    .with_for_update(skip_locked=True)  # PostgreSQL; sqlite renders no lock
)
_TAKE = (
    update(_chunks)
    .where(_chunks.c.job_id == bindparam("job_id_"), _chunks.c.index == bindparam("index_"), _claimable())
    .values(
        state=RUNNING,
        holder=bindparam("holder_"),
        lease_until=db_now() + bindparam("lease_"),
        attempts=_chunks.c.attempts + 1,
        started_at=func.coalesce(_chunks.c.started_at, db_now()),
    )
)
_START_JOB = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id_"), _jobs.c.state == QUEUED)
    .values(state=RUNNING, started_at=db_now())
)
_READ_JOB = select(*_JOB).where(_jobs.c.id == bindparam("job_id_"))
_LOCK_JOB = update(_jobs).where(_jobs.c.id == bindparam("job_id_")).values(id=_jobs.c.id)
_END_OWN_CHUNK = (
    update(_chunks)
    .where(
        _chunks.c.job_id == bindparam("job_id_"),
        _chunks.c.index == bindparam("index_"),
        _chunks.c.state == RUNNING,
        _chunks.c.holder == bindparam("holder_"),
    )
    .values(
        state=bindparam("state_"),
        rows=bindparam("rows_"),
        failure=bindparam("failure_"),
        lease_until=None,
        finished_at=db_now(),
    )
)
_COUNT_ROWS = (
    update(_jobs)
    .where(_jobs.c.id == bindparam("job_id_"))
    .values(rows_done=_jobs.c.rows_done + bindparam("rows_"), chunks_done=_jobs.c.chunks_done + 1)
)
_OPEN_CHUNKS = select(func.count()).where(_chunks.c.job_id == bindparam("job_id_"), _chunks.c.state.in_(_OPEN))


def new_job_id() -> str:
    """Sortable by submission time (milliseconds, hex), then random: the queue's order."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


class JobStore:
    """Jobs and their chunks in the state database. Blocking: callers use threads."""

    def __init__(
        self,
        engine: Engine,
        *,
        lease_seconds: float,
        retention_seconds: float,
        max_attempts: int = 5,
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.holder = holder or new_holder_id()
        self._lease = lease_seconds
        self._retention = retention_seconds
        self._max_attempts = max_attempts

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise StateUnavailable(f"{type(exc).__name__}: {exc}") from exc

    # --- submitting ----------------------------------------------------------------------

    def open_jobs(self) -> int:
        """Jobs queued or running, fleet-wide."""
        with self._begin() as connection:
            return int(connection.scalar(select(func.count()).where(JobRow.state.in_(_OPEN))) or 0)

    def submit(self, job: NewJob) -> str:
        job_id = new_job_id()
        now = db_now()
        version = job.id
        with self._begin() as connection:
            connection.execute(
                insert(JobRow).values(
                    id=job_id,
                    kind=job.kind,
                    model=version.name,
                    version=version.version,
                    source=version.source,
                    created_ms=version.created_ms,
                    alias=job.alias,
                    owner=job.owner,
                    state=QUEUED,
                    spec=job.spec,
                    fail_fast=job.fail_fast,
                    rows_total=job.rows_total,
                    rows_done=0,
                    chunks_total=len(job.chunks),
                    chunks_done=0,
                    chunks_failed=0,
                    submitted_at=now,
                    notified=False,
                    callback_attempts=0,
                    callback_after=now if job.spec.get("callback") else None,  # due once the job ends
                )
            )
            if job.chunks:
                connection.execute(
                    insert(JobChunkRow),
                    [
                        {
                            "job_id": job_id,
                            "index": index,
                            "model": version.name,
                            "version": version.version,
                            "spec": spec,
                            "state": QUEUED,
                            "attempts": 0,
                        }
                        for index, spec in enumerate(job.chunks)
                    ],
                )
            notify(connection)  # every process's runner claims at once, not at its next poll
        return job_id

    # --- claiming and holding ------------------------------------------------------------

    def claim(
        self, *, held: Collection[tuple[str, int]] = (), running: Collection[tuple[str, int]] = ()
    ) -> Claimed | None:
        """The next chunk for this process, or None: the oldest job's first, those of the
        versions in ``held`` (name, number) before any other. Never one of ``running`` (job id,
        index): chunks this process is still working on, whose lease may have lapsed while the
        database did not answer (they are renewed or finished once it does)."""
        skipped: list[tuple[str, int]] = list(running)
        for _ in range(_CLAIM_TRIES):
            with self._begin() as connection:
                candidate = self._candidate(connection, held, skipped)
                if candidate is None:
                    return None
                job_id, index, attempts, _ = candidate
                if attempts >= self._max_attempts:  # its processes kept dying under it (or giving it back)
                    reason = f"claimed {attempts} times without finishing"
                    self._fail(connection, job_id, index, reason, owned=False)
                    continue
                claimed = self._take(connection, candidate)
                if claimed is None:
                    skipped.append((job_id, index))  # another process won it between the read and the write
                    continue
                return claimed
        return None

    @staticmethod
    def _candidate(
        connection: Connection, held: Collection[tuple[str, int]], skipped: Collection[tuple[str, int]]
    ) -> _Candidate | None:
        """The chunk a claim would take next (job id, index, attempts so far, its spec), read
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: the oldest job's first, those of ``held``
        versions before."""
        candidate = connection.execute(_CANDIDATE, {"held_": list(held), "skipped_": list(skipped)}).first()
        if candidate is None:
            return None
        return str(candidate[0]), int(candidate[1]), int(candidate[2]), dict(candidate[3] or {})

    def _take(self, connection: Connection, candidate: _Candidate, *, sibling: Claimed | None = None) -> Claimed | None:
        """Hold the chunk under this process's lease, or None if it is claimable no more (another
        process won it between the read and this write: sqlite, which locks no row on reading).
        ``sibling``: a chunk of the same job this process held (its finish claims this one): the
        job is running and its row is known, so neither is written or read again."""
        job_id, index, attempts, spec = candidate
        taken = cast(
            CursorResult[Any],
            connection.execute(
                _TAKE, {"job_id_": job_id, "index_": index, "holder_": self.holder, "lease_": self._lease}
            ),
        )
        if taken.rowcount != 1:
            return None
        if sibling is not None:
            return replace(sibling, index=index, spec=spec, attempts=attempts + 1)
        connection.execute(_START_JOB, {"job_id_": job_id})
        row = connection.execute(_READ_JOB, {"job_id_": job_id}).first()
        if row is None:
            return None
        return Claimed(
            job_id=job_id,
            index=index,
            kind=row.kind,
            version=VersionId(row.model, row.version, row.source, row.created_ms),
            job_spec=dict(row.spec),
            spec=spec,
            attempts=attempts + 1,
        )

    def renew(self, chunks: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
        """Extend the lease of ``chunks`` (held by this process); the ones still its own. A
        chunk missing from the answer was cancelled, failed with its job, or taken over."""
        if not chunks:
            return set()
        with self._begin() as connection:
            connection.execute(
                update(JobChunkRow)
                .where(JobChunkRow.holder == self.holder, JobChunkRow.state == RUNNING)
                .values(lease_until=db_now() + self._lease)
            )
            rows = connection.execute(
                select(JobChunkRow.job_id, JobChunkRow.index).where(
                    JobChunkRow.holder == self.holder, JobChunkRow.state == RUNNING
                )
            ).all()
        return {(str(job_id), int(index)) for job_id, index in rows} & set(chunks)

    def give_back(self, job_id: str, index: int) -> None:
        """Return a held chunk to the queue untouched (its version could not be loaded now)."""
        with self._begin() as connection:
            connection.execute(
                update(JobChunkRow)
                .where(JobChunkRow.job_id == job_id, JobChunkRow.index == index, JobChunkRow.holder == self.holder)
                .where(JobChunkRow.state == RUNNING)
                .values(state=QUEUED, holder=None, lease_until=None)
            )
            notify(connection)

    # --- ending chunks and jobs ------------------------------------------------------------

    def finish(
        self,
        job_id: str,
        index: int,
        *,
        rows: int,
        result: bytes | None = None,
        claim_next: Claimed | None = None,
        held: Collection[tuple[str, int]] = (),
        running: Collection[tuple[str, int]] = (),
    ) -> Ending:
        """The chunk is done (its output committed): its rows count, once. With ``claim_next``
        (this chunk's claim), the same transaction also claims the chunk :meth:`claim` would hand
        this process next (``held`` and ``running`` as there), if that is one of this job's
        (``Ending.next``): a job's chunks follow one another with one transaction each, not two.
        A chunk of another job is left to :meth:`claim` (taking it here would lock a second job's
        row while this one's is held: two processes doing so the other way round would deadlock)."""
        with self._begin() as connection:
            self._lock(connection, job_id)
            if not self._end_chunk(connection, job_id, index, state=CHUNK_DONE, rows=rows, failure=None):
                return Ending(False)
            counted = _COUNT_ROWS if result is None else _COUNT_ROWS.values(result=result)  # an inline job's answer
            connection.execute(counted, {"job_id_": job_id, "rows_": rows})
            ended = self._end_if_last(connection, job_id)
            following = None
            if claim_next is not None and ended is None:
                candidate = self._candidate(connection, held, running)
                if candidate is not None and candidate[0] == job_id and candidate[2] < self._max_attempts:
                    following = self._take(connection, candidate, sibling=claim_next)
            return Ending(True, ended, following)

    def fail_chunk(self, job_id: str, index: int, reason: str) -> Ending:
        """The chunk cannot be scored (bad input, a bad row): the job fails at once if it
        fails fast, else it goes on and reports this chunk."""
        with self._begin() as connection:
            return self._fail(connection, job_id, index, reason)

    def fail_job(self, job_id: str, reason: str) -> Ending:
        """The whole job fails (its version was deleted or refused, its output cannot be written)."""
        with self._begin() as connection:
            self._lock(connection, job_id)
            return Ending(True, FAILED if self._end_job(connection, job_id, FAILED, reason) else None)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job not ended yet; its running chunks hear it at their next heartbeat."""
        with self._begin() as connection:
            self._lock(connection, job_id)
            return self._end_job(connection, job_id, CANCELLED, "cancelled")

    def _fail(self, connection: Connection, job_id: str, index: int, reason: str, *, owned: bool = True) -> Ending:
        self._lock(connection, job_id)
        if not self._end_chunk(connection, job_id, index, state=CHUNK_FAILED, rows=None, failure=reason, owned=owned):
            return Ending(False)
        connection.execute(update(JobRow).where(JobRow.id == job_id).values(chunks_failed=JobRow.chunks_failed + 1))
        if connection.scalar(select(JobRow.fail_fast).where(JobRow.id == job_id)):
            self._end_job(connection, job_id, FAILED, f"chunk {index} failed: {reason}")
            return Ending(True, FAILED)
        return Ending(True, self._end_if_last(connection, job_id))

    @staticmethod
    def _lock(connection: Connection, job_id: str) -> None:
        """Write the job's row first: on PostgreSQL its row lock, on sqlite the write lock, so
        the ends of one job's chunks run one after the other and see each other's."""
        connection.execute(_LOCK_JOB, {"job_id_": job_id})

    def _end_chunk(
        self,
        connection: Connection,
        job_id: str,
        index: int,
        *,
        state: str,
        rows: int | None,
        failure: str | None,
        owned: bool = True,
    ) -> bool:
        """End a chunk this process holds (``owned``), or, for one claimed too often, whoever held it."""
        if owned:
            ended = connection.execute(
                _END_OWN_CHUNK,
                {
                    "job_id_": job_id,
                    "index_": index,
                    "holder_": self.holder,
                    "state_": state,
                    "rows_": rows,
                    "failure_": failure,
                },
            )
        else:
            ended = connection.execute(
                update(JobChunkRow)
                .where(JobChunkRow.job_id == job_id, JobChunkRow.index == index, JobChunkRow.state.in_(_OPEN))
                .values(state=state, rows=rows, failure=failure, lease_until=None, finished_at=db_now())
            )
        return cast(CursorResult[Any], ended).rowcount == 1

    def _end_if_last(self, connection: Connection, job_id: str) -> str | None:
        left = connection.scalar(_OPEN_CHUNKS, {"job_id_": job_id})
        if left:
            return None
        failed = int(connection.scalar(select(JobRow.chunks_failed).where(JobRow.id == job_id)) or 0)
        total = int(connection.scalar(select(JobRow.chunks_total).where(JobRow.id == job_id)) or 0)
        if not failed:
            state, reason = SUCCEEDED, None
        elif failed == total:
            state, reason = FAILED, "every chunk failed"
        else:
            state, reason = PARTIAL, f"{failed} of {total} chunks failed"
        return state if self._end_job(connection, job_id, state, reason) else None

    def _end_job(self, connection: Connection, job_id: str, state: str, reason: str | None) -> bool:
        now = db_now()
        ended = cast(
            CursorResult[Any],
            connection.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_(_OPEN))
                .values(state=state, error=reason, finished_at=now, expires_at=now + self._retention)
            ),
        )
        if ended.rowcount != 1:
            return False
        connection.execute(
            update(JobChunkRow)
            .where(JobChunkRow.job_id == job_id, JobChunkRow.state.in_(_OPEN))
            .values(state=CHUNK_CANCELLED, lease_until=None)
        )
        return True

    # --- reading ---------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        with self._begin() as connection:
            row = connection.execute(select(*_JOB).where(JobRow.id == job_id)).first()
            if row is None:
                return None
            failed = connection.execute(
                select(JobChunkRow.index, JobChunkRow.failure, JobChunkRow.spec)
                .where(JobChunkRow.job_id == job_id, JobChunkRow.state == CHUNK_FAILED)
                .order_by(JobChunkRow.index)
                .limit(_LISTED)
            ).all()
        return _job(row, [ChunkFailure(int(i), str(reason or ""), dict(spec or {})) for i, reason, spec in failed])

    def result(self, job_id: str) -> bytes | None:
        with self._begin() as connection:
            value = connection.scalar(select(JobRow.result).where(JobRow.id == job_id))
        return bytes(value) if value is not None else None

    def jobs(self, *, model: str | None = None, state: str | None = None, owner: str | None = None) -> list[Job]:
        """The latest jobs first, at most a hundred."""
        query = select(*_JOB)
        if model is not None:
            query = query.where(JobRow.model == model)
        if state is not None:
            query = query.where(JobRow.state == state)
        if owner is not None:
            query = query.where(JobRow.owner == owner)
        with self._begin() as connection:
            rows = connection.execute(query.order_by(JobRow.id.desc()).limit(_LISTED)).all()
        return [_job(row, []) for row in rows]

    def counts(self) -> dict[str, int]:
        """Jobs per state, every state there is."""
        with self._begin() as connection:
            rows = connection.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        return {str(state): int(count) for state, count in rows}

    # --- callbacks -------------------------------------------------------------------------

    def due_callbacks(self) -> list[str]:
        """Ended jobs whose callback is due a delivery now (the first, or a re-send), the
        longest waiting first, at most a hundred."""
        with self._begin() as connection:
            ids = connection.scalars(
                select(JobRow.id)
                .where(JobRow.callback_after <= db_now(), JobRow.state.in_(ENDED), JobRow.notified.is_(False))
                .order_by(JobRow.callback_after)
                .limit(_LISTED)
            ).all()
        return [str(job_id) for job_id in ids]

    def claim_callback(self, job_id: str, *, attempts: int, hold: float) -> int | None:
        """Claim the next delivery of an ended job's callback for this process: its number
        (1, 2, ...), or None when none is due (not ended, delivered, given up, not yet time,
        ``attempts`` made already, or another process claimed it first: one conditional UPDATE
        decides between processes). No other process claims the job's next one for ``hold``
        seconds (the time this one may take), so that a sender that dies mid-way is replaced."""
        with self._begin() as connection:
            row = connection.execute(
                select(JobRow.callback_attempts).where(
                    JobRow.id == job_id,
                    JobRow.callback_after <= db_now(),
                    JobRow.state.in_(ENDED),
                    JobRow.notified.is_(False),
                )
            ).first()
            if row is None:
                return None
            done = int(row[0])
            mine = and_(JobRow.id == job_id, JobRow.callback_attempts == done, JobRow.callback_after <= db_now())
            if done >= attempts:  # its last sender died mid-way: given up
                connection.execute(update(JobRow).where(mine).values(callback_after=None))
                return None
            claimed = cast(
                CursorResult[Any],
                connection.execute(
                    update(JobRow)
                    .where(mine, JobRow.notified.is_(False))
                    .values(callback_attempts=done + 1, callback_after=db_now() + hold)
                ),
            )
        return done + 1 if claimed.rowcount == 1 else None

    def callback_failed(self, job_id: str, number: int, *, attempts: int, backoff: float) -> bool:
        """Delivery ``number`` (this process's claim) was not taken: the next is due ``backoff``
        seconds from now, doubled for each delivery before this one (at most an hour), or none
        past ``attempts``. Whether another is to come."""
        last = number >= attempts
        delay = min(backoff * 2.0 ** (number - 1), _MAX_CALLBACK_DELAY)
        with self._begin() as connection:
            connection.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.callback_attempts == number, JobRow.notified.is_(False))
                .values(callback_after=None if last else db_now() + delay)
            )
        return not last

    def mark_notified(self, job_id: str) -> None:
        """The receiver took the callback: nothing more to send."""
        with self._begin() as connection:
            connection.execute(update(JobRow).where(JobRow.id == job_id).values(notified=True, callback_after=None))

    def delete_expired(self) -> int:
        """Delete jobs past their retention, with their chunks; how many."""
        with self._begin() as connection:
            ids = [
                str(job_id)
                for job_id in connection.scalars(
                    select(JobRow.id).where(JobRow.expires_at < db_now()).limit(_DELETED)
                ).all()
            ]
            if ids:
                connection.execute(delete(JobChunkRow).where(JobChunkRow.job_id.in_(ids)))
                connection.execute(delete(JobRow).where(JobRow.id.in_(ids)))
        return len(ids)


def _job(row: Row[Any], failures: list[ChunkFailure]) -> Job:
    return Job(
        id=row.id,
        kind=row.kind,
        version=VersionId(row.model, row.version, row.source, row.created_ms),
        alias=row.alias,
        owner=row.owner,
        state=row.state,
        spec=dict(row.spec),
        rows_total=row.rows_total,
        rows_done=row.rows_done,
        chunks_total=row.chunks_total,
        chunks_done=row.chunks_done,
        chunks_failed=row.chunks_failed,
        error=row.error,
        submitted_at=row.submitted_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        expires_at=row.expires_at,
        has_result=bool(row.has_result),
        failures=failures,
    )


__all__ = ["ENDED", "JobStore", "new_job_id"]
