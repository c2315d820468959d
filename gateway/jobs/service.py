"""What the job routes call, knowing nothing of HTTP: submit, read, list, cancel, fetch a result.

Who sees a job (docs/security.md: Jobs): without keys or tokens, everyone; a caller with the
``read`` or ``admin`` scope, every job; any other caller (a ``predict:`` key), the jobs it
submitted itself, and no other is said to exist (404, as for a job never submitted). Cancelling
takes the submitter or ``admin``.
"""

from __future__ import annotations

import time

import anyio.to_thread

from gateway.admission.gate import Caller
from gateway.dataplane.predictor import InferenceService
from gateway.errors import Forbidden, JobNotFound, JobResultMissing, JobsFull
from gateway.jobs.runner import JobRunner
from gateway.jobs.submission import document_of, file_job, inline_job
from gateway.jobs.views import MAX_WAIT_SECONDS
from gateway.settings import GatewaySettings
from registry_sync.jobs.records import CANCELLED, ENDED, Job
from registry_sync.jobs.store import JobStore

# How often a waiting read looks at the job again: an end in this process wakes it at once, an
# end in another process (the fleet's) is seen within this
_WAIT_READ_SECONDS = 0.25


def _sees_all(caller: Caller | None) -> bool:
    return caller is None or caller.scopes.read or caller.scopes.admin


class JobService:
    def __init__(
        self, store: JobStore, inference: InferenceService, runner: JobRunner, settings: GatewaySettings
    ) -> None:
        self.store = store
        self._inference = inference
        self._runner = runner
        self._settings = settings

    async def submit(self, name: str, version: str | None, body: bytes, caller: Caller | None) -> Job:
        """The job queued, its version pinned now (an alias resolved as a predict would)."""
        document = document_of(body)
        if version is None:
            resolved = await self._inference.default_version(name, take_over=False)
        else:
            resolved = await self._inference.choose(name, path=version, take_over=False)
        if await anyio.to_thread.run_sync(self.store.open_jobs) >= self._settings.jobs_max_open:
            raise JobsFull(self._settings.jobs_max_open)
        owner = caller.name if caller is not None else None
        if "request" in document:
            job = inline_job(document, resolved.id, alias=resolved.alias, owner=owner)
        else:
            settings = self._settings
            job = await anyio.to_thread.run_sync(
                lambda: file_job(document, resolved.id, alias=resolved.alias, owner=owner, settings=settings)
            )
        job_id = await anyio.to_thread.run_sync(self.store.submit, job)
        self._runner.wake()
        return await self.read(job_id, caller)

    async def read(self, job_id: str, caller: Caller | None, *, wait: float = 0.0) -> Job:
        """The job now; with ``wait`` (seconds, at most MAX_WAIT_SECONDS), once it has ended or
        when ``wait`` has passed, whichever comes first: a client follows a job without polling."""
        job = await self._read(job_id, caller)
        deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS)
        while job.state not in ENDED and (left := deadline - time.monotonic()) > 0:
            await self._runner.until_ended(job_id, min(left, _WAIT_READ_SECONDS))
            job = await self._read(job_id, caller)
        return job

    async def _read(self, job_id: str, caller: Caller | None) -> Job:
        job = await anyio.to_thread.run_sync(self.store.job, job_id)
        if job is None or not (_sees_all(caller) or (caller is not None and job.owner == caller.name)):
            raise JobNotFound(job_id)
        return job

    async def list(self, caller: Caller | None, *, model: str | None, state: str | None) -> list[Job]:
        owner = None if _sees_all(caller) or caller is None else caller.name
        return await anyio.to_thread.run_sync(lambda: self.store.jobs(model=model, state=state, owner=owner))

    async def cancel(self, job_id: str, caller: Caller | None) -> Job:
        job = await self.read(job_id, caller)
        if caller is not None and not caller.scopes.admin and job.owner != caller.name:
            raise Forbidden(caller.name, "admin (or the key that submitted the job)")
        if await anyio.to_thread.run_sync(self.store.cancel, job_id):
            self._runner.ended(job_id, CANCELLED, job.version.name)
        return await self.read(job_id, caller)

    async def result(self, job_id: str, caller: Caller | None) -> bytes:
        job = await self.read(job_id, caller)
        result = await anyio.to_thread.run_sync(self.store.result, job_id) if job.has_result else None
        if result is None:
            raise JobResultMissing(job_id, job.state, job.kind)
        return result
