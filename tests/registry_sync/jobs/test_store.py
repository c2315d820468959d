"""The job queue on sqlite and on PostgreSQL: claims, leases that lapse, each chunk counted
once, cancel, fail-fast or finish, retention."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, select, update

from registry_sync.identity import VersionId
from registry_sync.jobs.records import (
    CANCELLED,
    FAILED,
    FILES,
    INLINE,
    PARTIAL,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Ending,
    NewJob,
)
from registry_sync.jobs.store import JobStore
from registry_sync.lease import db_now
from registry_sync.state import JobChunkRow, JobRow

IRIS = VersionId("iris", 1, "models:/m-1", 1)
OTHER = VersionId("wine", 2, "models:/m-2", 2)


def store(engine: Engine, holder: str, **options: float) -> JobStore:
    return JobStore(engine, lease_seconds=30.0, retention_seconds=3600.0, holder=holder, **options)  # type: ignore[arg-type]


def files_job(version: VersionId = IRIS, chunks: int = 3, *, fail_fast: bool = False) -> NewJob:
    return NewJob(FILES, version, {"input": "x"}, [{"i": i} for i in range(chunks)], fail_fast=fail_fast)


def lapse(engine: Engine) -> None:
    """What time does to the leases of a process that stopped renewing (without waiting)."""
    with engine.begin() as connection:
        connection.execute(update(JobChunkRow).values(lease_until=db_now() - 1))


def test_chunks_are_claimed_in_order_once_each_and_the_last_end_ends_the_job(engine: Engine) -> None:
    a, b = store(engine, "a"), store(engine, "b")
    job_id = a.submit(files_job())
    assert a.job(job_id).state == QUEUED  # type: ignore[union-attr]
    first, second = a.claim(), b.claim()
    assert first is not None and second is not None
    assert (first.index, second.index, first.spec) == (0, 1, {"i": 0})
    assert a.job(job_id).state == RUNNING  # type: ignore[union-attr]
    third = a.claim()
    assert third is not None and third.index == 2
    assert a.claim() is None and b.claim() is None
    assert a.finish(job_id, 0, rows=10).counted
    assert not b.finish(job_id, 0, rows=10).counted  # not b's chunk
    assert b.finish(job_id, 1, rows=20).ended is None
    assert a.finish(job_id, 2, rows=5).ended == SUCCEEDED
    job = a.job(job_id)
    assert job is not None and (job.state, job.rows_done, job.chunks_done) == (SUCCEEDED, 35, 3)
    assert job.finished_at is not None and job.expires_at is not None


def test_a_lapsed_lease_is_claimed_again_and_counted_once(engine: Engine) -> None:
    dead, alive = store(engine, "dead"), store(engine, "alive")
    job_id = dead.submit(files_job(chunks=1))
    assert dead.claim() is not None
    assert alive.claim() is None  # held under a live lease
    lapse(engine)
    redo = alive.claim()
    assert redo is not None and redo.attempts == 2
    assert not dead.finish(job_id, 0, rows=7).counted  # the dead one woke up: its end does not count
    assert alive.finish(job_id, 0, rows=7).ended == SUCCEEDED
    assert alive.job(job_id).rows_done == 7  # type: ignore[union-attr]


def test_a_process_never_claims_again_a_chunk_it_is_still_running(engine: Engine) -> None:
    """Its lease lapsed while the database was down: the process that scores it renews or
    finishes it once the database is back; claiming it too would score it twice."""
    a = store(engine, "a")
    job_id = a.submit(files_job(chunks=2))
    first = a.claim()
    assert first is not None and first.index == 0
    lapse(engine)
    second = a.claim(running={(job_id, 0)})
    assert second is not None and (second.index, second.attempts) == (1, 1)
    lapse(engine)
    assert a.claim(running={(job_id, 0), (job_id, 1)}) is None
    assert a.renew({(job_id, 0), (job_id, 1)}) == {(job_id, 0), (job_id, 1)}
    assert a.finish(job_id, 0, rows=3).counted and a.finish(job_id, 1, rows=4).ended == SUCCEEDED


def holders(engine: Engine, job_id: str) -> dict[int, tuple[str, str | None]]:
    with engine.begin() as connection:
        rows = connection.execute(
            select(JobChunkRow.index, JobChunkRow.state, JobChunkRow.holder).where(JobChunkRow.job_id == job_id)
        ).all()
    return {int(index): (str(state), holder) for index, state, holder in rows}


def test_a_finish_claims_its_jobs_next_chunk_and_every_row_counts_once(engine: Engine) -> None:
    """The next chunk claimed in the finishing transaction is the finisher's, as a claim's
    would be: never one another process holds, never the same one twice, each counted once."""
    a, b = store(engine, "a"), store(engine, "b")
    job_id = a.submit(files_job(chunks=4))
    first, second = a.claim(), b.claim()
    assert first is not None and second is not None and (first.index, second.index) == (0, 1)
    ending = a.finish(job_id, 0, rows=10, claim_next=first, running={(job_id, 0)})
    assert ending.counted and ending.ended is None and ending.next is not None
    assert (ending.next.index, ending.next.attempts, ending.next.spec) == (2, 1, {"i": 2})
    # the job's own fields as a claim() reads them (the finish takes them from its sibling)
    assert (ending.next.kind, ending.next.version, ending.next.job_spec) == (first.kind, first.version, first.job_spec)
    assert holders(engine, job_id) == {0: ("done", "a"), 1: ("running", "b"), 2: ("running", "a"), 3: ("queued", None)}
    third = b.finish(job_id, 1, rows=20, claim_next=second)
    assert third.next is not None and third.next.index == 3
    assert a.finish(job_id, 2, rows=30, claim_next=ending.next).next is None  # the last one is b's
    last = b.finish(job_id, 3, rows=40, claim_next=third.next)
    assert (last.counted, last.ended, last.next) == (True, SUCCEEDED, None)
    job = a.job(job_id)
    assert job is not None and (job.rows_done, job.chunks_done) == (100, 4)


def test_a_finish_that_does_not_count_claims_nothing(engine: Engine) -> None:
    """A chunk no longer this holder's (another took it over, or never had it) neither counts
    nor hands its holder a next chunk: the queue stays as it was."""
    a, b = store(engine, "a"), store(engine, "b")
    job_id = a.submit(files_job(chunks=2))
    claimed = a.claim()
    assert claimed is not None
    assert b.finish(job_id, 0, rows=10, claim_next=claimed) == Ending(False)
    assert holders(engine, job_id) == {0: ("running", "a"), 1: ("queued", None)}
    assert a.job(job_id).rows_done == 0  # type: ignore[union-attr]


def test_a_finish_leaves_another_jobs_chunk_to_claim(engine: Engine) -> None:
    """The chunk a claim would take next belongs to another job (a version held here comes
    first): the finish takes none, and claim() takes that one."""
    a = store(engine, "a")
    iris = a.submit(files_job(IRIS, chunks=1))
    wine = a.submit(files_job(OTHER, chunks=2))
    claimed = a.claim(held={("wine", 2)})
    assert claimed is not None and (claimed.job_id, claimed.index) == (wine, 0)
    assert a.finish(wine, 0, rows=1, claim_next=claimed, held={("iris", 1)}).next is None
    assert holders(engine, wine)[1] == ("queued", None) and holders(engine, iris)[0] == ("queued", None)
    taken = a.claim(held={("iris", 1)})
    assert taken is not None and (taken.job_id, taken.index) == (iris, 0)
    ending = a.finish(iris, 0, rows=1, claim_next=taken, held={("iris", 1)})
    assert ending.ended == SUCCEEDED and ending.next is None  # its job ended: wine's chunk is claim()'s


def test_renew_keeps_the_lease_and_tells_which_chunks_are_no_longer_held(engine: Engine) -> None:
    a, b = store(engine, "a"), store(engine, "b")
    kept, cancelled = a.submit(files_job(chunks=1)), a.submit(files_job(chunks=1))
    assert a.claim() is not None and a.claim() is not None
    assert a.renew({(kept, 0), (cancelled, 0)}) == {(kept, 0), (cancelled, 0)}
    assert b.cancel(cancelled)
    assert a.renew({(kept, 0), (cancelled, 0)}) == {(kept, 0)}
    assert a.job(cancelled).state == CANCELLED  # type: ignore[union-attr]
    assert not a.finish(cancelled, 0, rows=1).counted
    assert not b.cancel(cancelled)  # ended already


def test_a_process_prefers_the_chunks_of_versions_it_holds(engine: Engine) -> None:
    a = store(engine, "a")
    a.submit(files_job(IRIS, chunks=1))
    wine = a.submit(files_job(OTHER, chunks=1))
    claimed = a.claim(held={("wine", 2)})
    assert claimed is not None and claimed.job_id == wine


def test_a_bad_chunk_is_reported_and_the_job_ends_partial_or_fails_fast(engine: Engine) -> None:
    a = store(engine, "a")
    finishing = a.submit(files_job(chunks=2))
    assert a.claim() is not None and a.claim() is not None
    assert a.fail_chunk(finishing, 0, "rows 0-9: column 'x' missing").ended is None
    assert a.finish(finishing, 1, rows=3).ended == PARTIAL
    job = a.job(finishing)
    assert job is not None and job.chunks_failed == 1
    assert [(f.index, f.reason) for f in job.failures] == [(0, "rows 0-9: column 'x' missing")]

    fast = a.submit(files_job(chunks=3, fail_fast=True))
    assert a.claim() is not None
    assert a.fail_chunk(fast, 0, "unreadable").ended == FAILED
    assert a.claim() is None  # the rest were cancelled with the job
    assert a.job(fast).error == "chunk 0 failed: unreadable"  # type: ignore[union-attr]


def test_a_chunk_claimed_too_often_fails_whoever_held_it_last(engine: Engine) -> None:
    a, b = store(engine, "a", max_attempts=2), store(engine, "b", max_attempts=2)
    job_id = a.submit(files_job(chunks=1))
    for claimer in (a, b):  # each dies holding it
        assert claimer.claim() is not None
        lapse(engine)
    assert a.claim() is None  # b held it last: a fails it all the same
    job = a.job(job_id)
    assert job is not None and job.state == FAILED and "claimed 2 times" in job.failures[0].reason


def test_an_inline_result_is_kept_and_expired_jobs_are_deleted(engine: Engine) -> None:
    a = store(engine, "a")
    job_id = a.submit(NewJob(INLINE, IRIS, {"request": {"inputs": [1]}}, [{}]))
    assert a.claim() is not None
    a.finish(job_id, 0, rows=1, result=b'{"predictions": [0]}')
    assert a.result(job_id) == b'{"predictions": [0]}' and a.job(job_id).has_result  # type: ignore[union-attr]
    assert a.delete_expired() == 0
    with engine.begin() as connection:
        connection.execute(update(JobRow).values(expires_at=db_now() - 1))
    assert a.delete_expired() == 1
    assert a.job(job_id) is None and a.jobs() == []


def test_listing_by_model_state_and_owner(engine: Engine) -> None:
    a = store(engine, "a")
    mine = a.submit(NewJob(FILES, IRIS, {}, [{}], owner="k1"))
    theirs = a.submit(NewJob(FILES, OTHER, {}, [{}], owner="k2"))
    assert [job.id for job in a.jobs()] == [theirs, mine]  # the latest first
    assert [job.id for job in a.jobs(model="iris")] == [mine]
    assert [job.id for job in a.jobs(owner="k2")] == [theirs]
    a.cancel(theirs)
    assert [job.id for job in a.jobs(state=CANCELLED)] == [theirs]
    assert a.counts() == {QUEUED: 1, CANCELLED: 1} and a.open_jobs() == 1


def test_concurrent_claimers_never_share_a_chunk(engine: Engine) -> None:
    """Four processes (threads with their own holders) claim 40 chunks at once: each exactly once."""
    first = store(engine, "w0")
    job_id = first.submit(files_job(chunks=40))
    stores = [first] + [store(engine, f"w{i}") for i in range(1, 4)]
    got: list[list[int]] = [[] for _ in stores]
    start = threading.Barrier(len(stores))

    def work(slot: int) -> None:
        start.wait()
        while (claimed := stores[slot].claim()) is not None:
            got[slot].append(claimed.index)
            stores[slot].finish(job_id, claimed.index, rows=1)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(index for indices in got for index in indices) == list(range(40))
    job = first.job(job_id)
    assert job is not None and (job.state, job.rows_done) == (SUCCEEDED, 40)


def due(engine: Engine) -> None:
    """What time does to a callback's wait for its next delivery (without waiting)."""
    with engine.begin() as connection:
        connection.execute(update(JobRow).where(JobRow.callback_after.is_not(None)).values(callback_after=db_now() - 1))


def test_a_callback_delivery_is_claimed_by_one_process_and_re_sent_with_backoff_until_given_up(
    engine: Engine,
) -> None:
    a, b = store(engine, "a"), store(engine, "b")
    silent = a.submit(NewJob(INLINE, IRIS, {"request": {}}, [{}]))
    job_id = a.submit(NewJob(INLINE, IRIS, {"request": {}, "callback": "http://receiver/hook"}, [{}]))
    assert a.due_callbacks() == [] and a.claim_callback(job_id, attempts=3, hold=15) is None  # not ended yet
    for _ in range(2):
        claimed = a.claim()
        assert claimed is not None
        a.finish(claimed.job_id, claimed.index, rows=1)
    assert a.due_callbacks() == [job_id]  # ended, with a callback (the silent job has none)
    assert a.claim_callback(job_id, attempts=3, hold=15) == 1
    assert b.claim_callback(job_id, attempts=3, hold=15) is None  # a's to send, for the hold
    assert b.due_callbacks() == []
    assert a.callback_failed(job_id, 1, attempts=3, backoff=100.0)  # due again in 100 s, not now
    with engine.connect() as connection:
        wait = connection.scalar(select(JobRow.callback_after - db_now()).where(JobRow.id == job_id))
    assert 99 < wait <= 100
    assert b.claim_callback(job_id, attempts=3, hold=15) is None
    due(engine)
    assert b.claim_callback(job_id, attempts=3, hold=15) == 2 and a.claim_callback(job_id, attempts=3, hold=15) is None
    assert b.callback_failed(job_id, 2, attempts=3, backoff=100.0)
    with engine.connect() as connection:
        wait = connection.scalar(select(JobRow.callback_after - db_now()).where(JobRow.id == job_id))
    assert 199 < wait <= 200  # doubled
    due(engine)
    assert a.claim_callback(job_id, attempts=3, hold=15) == 3
    assert not a.callback_failed(job_id, 3, attempts=3, backoff=100.0)  # the last: given up
    due(engine)
    assert a.due_callbacks() == [] and a.claim_callback(job_id, attempts=3, hold=15) is None
    assert a.job(silent).state == a.job(job_id).state == SUCCEEDED  # type: ignore[union-attr]


def test_a_delivered_callback_is_never_due_again_and_a_dead_sender_is_replaced(engine: Engine) -> None:
    a, b = store(engine, "a"), store(engine, "b")
    job_id = a.submit(NewJob(INLINE, IRIS, {"request": {}, "callback": "http://receiver/hook"}, [{}]))
    assert a.cancel(job_id)  # a cancel ends it too
    assert a.claim_callback(job_id, attempts=5, hold=15) == 1  # ... and a dies mid-POST
    due(engine)  # its hold lapses
    assert b.due_callbacks() == [job_id] and b.claim_callback(job_id, attempts=5, hold=15) == 2
    b.mark_notified(job_id)
    due(engine)
    assert b.due_callbacks() == [] and a.claim_callback(job_id, attempts=5, hold=15) is None
