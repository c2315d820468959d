"""Run jobs' chunks in a serving process: claim, score, finish; a heartbeat keeps the claims.

Order of events for one chunk:
1. claim (registry_sync/jobs/store.py): the oldest job's next chunk, those of versions loaded
   here first, at most GATEWAY_JOBS_MAX_CHUNKS_PER_PROCESS at once;
2. the version pinned at submission is looked up again: deleted, refused, or re-created under
   its number (another identity), the job fails with that reason;
3. score it (an inline job: its predict body, as a request would be, behind requests; a file
   chunk: gateway.jobs.scoring);
4. finish it: its rows count once, and the last chunk's end ends the job (and sends its
   callback, if it has one: gateway.jobs.callback). A state database that does not answer
   then is waited for (the chunk's output is committed: redoing it would score it again).

A runner claims at its poll (GATEWAY_JOBS_POLL_SECONDS), when a job is submitted to this
process, and on PostgreSQL whenever any process queued chunks (registry_sync/jobs/wakeups.py).

Meanwhile a heartbeat renews the claims every third of GATEWAY_JOBS_LEASE_SECONDS and hears of
chunks no longer this process's (their job cancelled or failed): their tasks are cancelled. A
process that dies holds its chunks until their lease lapses; another process claims them then
and does them again (the output part of a chunk is written whole, under its index: never twice).

What cannot be done now before the chunk is scored (the version cannot be loaded at the moment,
the input's store or the state database do not answer, this process is stopping) gives the chunk
back to the queue: it is claimed again, up to GATEWAY_JOBS_MAX_ATTEMPTS times. A chunk whose lease
lapsed while the database did not answer is still this process's: it is never claimed again here
(store.claim's ``running``), and the heartbeat renews it once the database answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable

import anyio.to_thread
import orjson
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from gateway import errors
from gateway.dataplane.predictor import InferenceService
from gateway.jobs.callback import CallbackDeliveries, Callbacks
from gateway.jobs.files.chunks import ChunkSpec
from gateway.jobs.files.errors import JobFileError, OutputUnwritable, one_line
from gateway.jobs.scoring import ChunkScorer, FileJob
from gateway.metrics import GatewayMetrics
from gateway.routing.catalog import Catalog, Resolved
from gateway.settings import GatewaySettings
from gateway.wire.selectors import parse_selector
from registry_sync.errors import RegistryError
from registry_sync.identity import VersionId
from registry_sync.jobs.records import FAILED, INLINE, PARTIAL, STATES, Claimed, Ending
from registry_sync.jobs.store import JobStore
from registry_sync.jobs.wakeups import Listener
from registry_sync.repository import StateUnavailable

log = logging.getLogger(__name__)

Key = tuple[str, int]  # (job id, chunk index)

# The version is gone for good: the job fails with the reason.
_GONE = (errors.ModelNotFound, errors.VersionNotFound, errors.VersionRefused, errors.VersionNotReady)
# Not now: the chunk goes back to the queue.
_NOT_NOW = (
    errors.Overloaded,
    errors.ShuttingDown,
    errors.ModelLoadFailed,
    errors.LoadsThrottled,
    errors.WorkerUnavailable,
    errors.WorkersExhausted,
    errors.ModelTooLarge,
    errors.NotReady,
    RegistryError,
)
# The chunk's own input: that chunk fails.
_BAD_INPUT = (errors.InvalidInput, errors.ModelRaised, errors.MalformedRequest, errors.PredictTimeout)
_HOUSEKEEPING_SECONDS = 60.0
_FINISH_FIRST_RETRY = 0.2
# How long a scored chunk waits for the state database to answer again before it is given back
# (and redone by whoever claims it): a restart or a failover takes seconds to a minute or two.
_FINISH_PATIENCE_SECONDS = 600.0


def _wake_from(loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
    """``wake`` on ``loop``, from another thread (the wake-ups' listener); nothing once the loop closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(wake)


def _unreachable(exc: StateUnavailable) -> bool:
    """The database did not answer (down, restarting, its connection lost, sqlite locked), as
    opposed to refusing the statement: only the first is worth waiting for."""
    cause = exc.__cause__
    return isinstance(cause, OperationalError | InterfaceError) or bool(
        isinstance(cause, DBAPIError) and cause.connection_invalidated
    )


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        inference: InferenceService,
        catalog: Catalog,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
        *,
        held: Callable[[], Iterable[VersionId]],
        runs_chunks: bool,
        whole_chunks: bool = False,
        leave_to_jobs: Callable[[], bool] | None = None,
    ) -> None:
        """``whole_chunks``: predict a chunk in one call (a ``--role jobs`` process: no requests
        to give way to). ``leave_to_jobs``: asked in a thread before each round of claims,
        whether ``--role jobs`` processes run the chunks now (GATEWAY_JOBS_ON_SERVING=auto)."""
        self._store = store
        self._inference = inference
        self._catalog = catalog
        self._metrics = metrics
        self._held = held
        self._max = settings.jobs_max_chunks_per_process if runs_chunks else 0
        self._lease = settings.jobs_lease_seconds
        self._poll = settings.jobs_poll_seconds
        self._max_result = settings.jobs_max_result_bytes
        self._scorer = ChunkScorer(
            inference,
            batch_rows=settings.jobs_batch_rows,
            output_retries=settings.jobs_output_retries,
            whole=whole_chunks,
            predict_share=settings.jobs_predict_share,
        )
        self._leave_to_jobs = leave_to_jobs
        self._leaving = False
        self._leaving_asked = -float("inf")  # when leave_to_jobs last answered (time.monotonic)
        self._stopping = False
        self._unstarted: list[Key] = []  # chunks a finishing one claimed while this runner stopped
        self.deliveries = CallbackDeliveries(
            store,
            Callbacks(settings.jobs_callback_secret),
            attempts=settings.jobs_callback_attempts,
            backoff=settings.jobs_callback_backoff_seconds,
        )
        self._running: dict[Key, asyncio.Task[None]] = {}
        self._finishing: set[Key] = set()  # chunks whose end is being recorded: that decides, not the heartbeat
        self._ends: dict[str, set[asyncio.Event]] = {}  # job id: its waiting reads', each set when it ends here
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._notifying: set[asyncio.Task[None]] = set()
        self.wakeups: Listener | None = None
        """On PostgreSQL, what wakes this runner when chunks are queued by any process."""

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="jobs housekeeping"))
        self._tasks.append(asyncio.create_task(self.deliveries.run(), name="jobs callbacks"))
        if self._max > 0:
            self._tasks.append(asyncio.create_task(self._claiming(), name="jobs claiming"))
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="jobs heartbeat"))
            self.wakeups = Listener.for_engine(
                self._store.engine, functools.partial(_wake_from, asyncio.get_running_loop(), self.wake)
            )
            if self.wakeups is not None:
                self.wakeups.start()

    def wake(self) -> None:
        """A job was submitted here: look for chunks now, not at the next poll."""
        self._wake.set()

    async def until_ended(self, job_id: str, timeout: float) -> None:
        """Return when this process ends the job (its last chunk, a failure, a cancel here), or
        after ``timeout`` seconds: a job ended by another process is seen by reading it again."""
        waiting, event = self._ends.setdefault(job_id, set()), asyncio.Event()
        waiting.add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            waiting.discard(event)
            if not waiting and self._ends.get(job_id) is waiting:
                del self._ends[job_id]

    def drop(self, job_id: str) -> None:
        """The job ended elsewhere (cancelled here): stop its chunks now."""
        for (running_job, _), task in list(self._running.items()):
            if running_job == job_id and task is not asyncio.current_task():
                task.cancel()

    async def stop(self) -> None:
        self._stopping = True
        if self.wakeups is not None:
            await anyio.to_thread.run_sync(self.wakeups.stop)
        for task in self._tasks:
            task.cancel()
        held = list(self._running)
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._tasks, *self._running.values(), *self._notifying, return_exceptions=True)
        for job_id, index in [*held, *self._unstarted]:  # another process takes them at once, not a lease later
            with contextlib.suppress(StateUnavailable):
                await anyio.to_thread.run_sync(self._store.give_back, job_id, index)

    # --- claiming ----------------------------------------------------------------------------

    async def _claiming(self) -> None:
        while True:
            self._wake.clear()
            while len(self._running) < self._max and not await self._left_to_jobs():
                held = {(version.name, version.version) for version in self._held()}
                try:
                    claim = functools.partial(self._store.claim, held=held, running=set(self._running))
                    claimed = await anyio.to_thread.run_sync(claim)
                except StateUnavailable as exc:
                    log.warning("cannot claim job chunks now: %s", exc)
                    break
                if claimed is None:
                    break
                self._start(claimed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    def _start(self, claimed: Claimed) -> None:
        key = (claimed.job_id, claimed.index)
        if self._stopping:  # claimed by a chunk's finish while stopping: given back by stop()
            self._unstarted.append(key)
            return
        task = asyncio.create_task(self._run(claimed), name=f"job {claimed.job_id} chunk {claimed.index}")
        self._running[key] = task
        task.add_done_callback(lambda _, key=key: self._ended(key))  # type: ignore[misc]
        self._metrics.job_chunks_running.set(len(self._running))

    def _may_claim_next(self) -> bool:
        """Whether a chunk's finish may claim its job's next chunk for this process, as the
        claiming loop would: not while stopping, nor while chunks are left to ``--role jobs``
        processes, nor when the last asking whether they are is older than a poll (the loop
        asks again then)."""
        if self._stopping:
            return False
        if self._leave_to_jobs is None:
            return True
        return not self._leaving and time.monotonic() - self._leaving_asked < self._poll

    async def _left_to_jobs(self) -> bool:
        """Whether ``--role jobs`` processes run the chunks now, so this one claims none."""
        if self._leave_to_jobs is None:
            return False
        try:
            leaving = await anyio.to_thread.run_sync(self._leave_to_jobs)
        except RegistryError as exc:  # the fleet unread: claim as a lone process would
            log.warning("cannot read the fleet for jobs processes: %s", exc)
            leaving = False
        else:
            self._leaving_asked = time.monotonic()
        if leaving != self._leaving:
            self._leaving = leaving
            log.info("jobs' chunks %s", "left to --role jobs processes" if leaving else "run here again")
        return leaving

    def _ended(self, key: Key) -> None:
        self._running.pop(key, None)
        self._metrics.job_chunks_running.set(len(self._running))
        self._wake.set()  # room for another

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            if not self._running:
                continue
            asked = set(self._running)
            try:
                still = await anyio.to_thread.run_sync(self._store.renew, asked)
            except StateUnavailable as exc:
                log.warning("cannot renew job chunk leases: %s", exc)
                continue
            # Only the chunks asked about: one claimed while the renewal was on its way is not in
            # its answer, and is this process's all the same. Nor one whose end is being recorded:
            # a finish committed just before the renewal read is not in its answer either, and
            # cancelling it then would count a chunk done as lost; the finish says whether it counted.
            for key in asked - still - self._finishing:
                task = self._running.get(key)
                if task is not None:
                    task.cancel()  # cancelled or failed with its job, or taken over

    async def _housekeeping(self) -> None:
        while True:
            try:
                deleted = await anyio.to_thread.run_sync(self._store.delete_expired)
                if deleted:
                    log.info("deleted %d jobs past their retention", deleted)
                self._metrics.jobs_now(await anyio.to_thread.run_sync(self._store.counts), STATES)
            except StateUnavailable as exc:
                log.warning("job housekeeping skipped: %s", exc)
            await asyncio.sleep(_HOUSEKEEPING_SECONDS)

    # --- one chunk -----------------------------------------------------------------------------

    async def _run(self, claimed: Claimed) -> None:
        job_id, index, model = claimed.job_id, claimed.index, claimed.version.name
        ending: Ending | None
        try:
            served = await self._pinned(claimed.version)
            if claimed.kind == INLINE:
                rows, result = 1, await self._inline(served, claimed)
            else:
                spec = ChunkSpec.from_json(claimed.spec)
                rows, result = await self._scorer.score(served, index, spec, FileJob.of(claimed.job_spec)), None
            ending = await self._finish(claimed, rows, result)
            if ending.next is not None:  # at once: no await before it is this runner's (or stop's)
                self._start(ending.next)
            self._metrics.job_chunk_ended("done" if ending.counted else "lost", model=model, rows=rows)
        except asyncio.CancelledError:
            self._metrics.job_chunk_ended("lost", model=model)
            raise
        except (*_GONE, errors.VersionReplaced, OutputUnwritable) as exc:
            reason = str(exc)
            ending = await self._store_call(lambda: self._store.fail_job(job_id, reason))
        except (*_NOT_NOW, StateUnavailable) as exc:
            await self._give_back(claimed, str(exc))
            return
        except JobFileError as exc:
            if exc.transient:
                await self._give_back(claimed, exc.reason)
                return
            ending = await self._fail_chunk(claimed, exc.reason)
        except errors.ChunkRejected as exc:
            ending = await self._fail_chunk(claimed, exc.reason)
        except _BAD_INPUT as exc:
            ending = await self._fail_chunk(claimed, str(exc))
        except Exception as exc:  # a chunk must never take the runner down
            log.exception("job %s chunk %d failed unexpectedly", job_id, index)
            ending = await self._fail_chunk(claimed, f"{type(exc).__name__}: {exc}")
        if ending is not None and ending.ended is not None:
            self.ended(job_id, ending.ended, model)

    async def _finish(self, claimed: Claimed, rows: int, result: bytes | None) -> Ending:
        """Record a scored chunk's end. While the state database does not answer (a restart, a
        failover), try again with backoff rather than give the chunk up: its output is
        committed, and a redo would score it again. The end counts only if the chunk is still
        this process's (store.finish): taken over by another process meanwhile, it does not
        count. The heartbeat leaves a finishing chunk to this answer; stopping the process
        cancels it."""
        key = (claimed.job_id, claimed.index)
        self._finishing.add(key)
        try:
            return await self._record_finish(claimed, rows, result)
        finally:
            self._finishing.discard(key)

    async def _record_finish(self, claimed: Claimed, rows: int, result: bytes | None) -> Ending:
        delay = _FINISH_FIRST_RETRY
        deadline = time.monotonic() + _FINISH_PATIENCE_SECONDS
        while True:
            # its job's next chunk claimed in the same transaction, this one's slot passed on to it
            finish = functools.partial(
                self._store.finish,
                claimed.job_id,
                claimed.index,
                rows=rows,
                result=result,
                claim_next=claimed if self._may_claim_next() else None,
                held={(version.name, version.version) for version in self._held()},
                running=set(self._running),
            )
            call = asyncio.ensure_future(anyio.to_thread.run_sync(finish))
            try:
                try:
                    return await asyncio.shield(call)
                except asyncio.CancelledError:
                    # Stopping (or the chunk taken from it): the transaction goes on in its thread,
                    # and a next chunk it claims is this runner's to start or give back (stop()).
                    with contextlib.suppress(StateUnavailable):
                        following = (await call).next
                        if following is not None:
                            self._start(following)
                    raise
            except StateUnavailable as exc:
                if not _unreachable(exc) or time.monotonic() > deadline:
                    raise  # the chunk goes back to the queue, as before it was scored
                log.warning(
                    "cannot record job %s chunk %d's end now, trying again in %.1f s: %s",
                    claimed.job_id,
                    claimed.index,
                    delay,
                    exc,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._lease / 3)

    async def _pinned(self, pinned: VersionId) -> Resolved:
        resolved = await self._catalog.resolve(pinned.name, parse_selector(str(pinned.version)), take_over=False)
        if not resolved.id.same_version(pinned):
            raise errors.VersionReplaced(pinned)
        return resolved

    async def _inline(self, served: Resolved, claimed: Claimed) -> bytes:
        body = orjson.dumps(claimed.job_spec["request"])
        prediction = await self._inference.predict(served, body, "application/json", background=True)
        if len(prediction.body) > self._max_result:
            raise errors.ChunkRejected(
                f"the answer is {len(prediction.body)} bytes, over GATEWAY_JOBS_MAX_RESULT_BYTES ({self._max_result}); "
                "send such inputs as a file job"
            )
        return prediction.body

    async def _fail_chunk(self, claimed: Claimed, reason: str) -> Ending | None:
        self._metrics.job_chunk_ended("failed", model=claimed.version.name)
        stored = one_line(reason)  # a model's message can quote a whole input
        return await self._store_call(lambda: self._store.fail_chunk(claimed.job_id, claimed.index, stored))

    async def _give_back(self, claimed: Claimed, reason: str) -> None:
        log.info("job %s chunk %d given back (%s)", claimed.job_id, claimed.index, reason)
        self._metrics.job_chunk_ended("given_back", model=claimed.version.name)
        await self._store_call(lambda: self._store.give_back(claimed.job_id, claimed.index))

    async def _store_call(self, call: Callable[[], Ending | None]) -> Ending | None:
        try:
            return await anyio.to_thread.run_sync(call)
        except StateUnavailable as exc:  # the lease lapses, and another process redoes the chunk
            log.warning("cannot record a job chunk's end: %s", exc)
            return None

    # --- ended jobs ------------------------------------------------------------------------------

    def ended(self, job_id: str, state: str, model: str) -> None:
        """The job ended here: counted, its chunks here stopped if it failed, its callback sent.
        A job that ended otherwise ended because every chunk had: a chunk of it still running
        here has recorded its end and is about to count it (two chunks in flight), and
        cancelling it would count it lost."""
        for event in self._ends.pop(job_id, ()):
            event.set()
        if state in (FAILED, PARTIAL):
            self._metrics.job_failures.labels(model).inc()
        if state == FAILED:
            self.drop(job_id)
        task = asyncio.create_task(self._notify(job_id), name=f"job {job_id} callback")
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def _notify(self, job_id: str) -> None:
        """Its callback's first delivery, now (a re-send, if it fails, is the sweep's)."""
        try:
            await self.deliveries.deliver(job_id)
        except StateUnavailable as exc:  # the sweep sends it once the database answers
            log.warning("job %s callback not sent now: %s", job_id, exc)
