"""Score one chunk of a file job: read it, check its columns against the version's signature,
predict a batch of rows at a time through the inference service, commit its output once.

Each batch is one call in the version's lane for jobs' batches (gateway.dataplane.batching,
``aside``): one job's batch at a time, beside the requests' batches, never one of them, so a
request arriving meanwhile goes at once instead of waiting for the batch (the version's
requests are batched by one worker at a time); jobs' batches take at most half the queue. While
the version has requests a chunk is read and converted on its own thread alone (not pyarrow's
pool of every core): the other cores are for them; with none, on every core, as any batch
scorer's reader does. The chunk in flight beside it reads or commits while this one predicts
(GATEWAY_JOBS_MAX_CHUNKS_PER_PROCESS). A batch is GATEWAY_JOBS_BATCH_ROWS rows while the version
has requests (one waiting, or one queued within ``QUIET_SECONDS``); with none, the rest of the
chunk goes in one call, as it always does in a ``--role jobs`` process (``whole``). Between two
batches the chunk waits as long as the last one took, times (1 − share) / share
(GATEWAY_JOBS_PREDICT_SHARE, while the version still has requests): requests then run alone,
neither queued behind a batch nor sharing the GIL with it, and the chunk takes at most that share
of the time. With no requests the chunk goes whole and never waits: fewer calls,
each with MLflow's schema enforcement and a hop to the inference thread, is what brings a job's
rows a second near one plain Python loop's. The predict runs where the version runs (this process, or
its sandboxed worker for an isolated version), with the lease and timeout a request has.

What fails and what the runner is told:
- the chunk's input cannot be read, lacks a column the signature needs, or the model raises on
  its rows: :class:`ChunkRejected`, with the chunk's range (and the batch's rows in it): that
  chunk fails, the job goes on or fails as GATEWAY_JOBS_ON_BAD_CHUNK says;
- the output refuses the write: retried with backoff (0.5 s, doubling) while the refusal may
  pass, then :class:`~gateway.jobs.files.errors.OutputUnwritable` fails the whole job (its input
  is never touched).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.types.schema import ColSpec, DataType

from gateway.dataplane.batching import VersionQueue
from gateway.dataplane.loader import LoadedModel
from gateway.dataplane.predictor import InferenceService
from gateway.errors import ChunkRejected, InvalidInput, ModelRaised
from gateway.jobs.files.chunks import ChunkSpec
from gateway.jobs.files.errors import JobFileError, OutputUnwritable, one_line
from gateway.jobs.files.readers import read_chunk
from gateway.jobs.files.writers import OutputLocation
from gateway.routing.catalog import Resolved
from gateway.wire.mlflow_scoring import ScoringInput

_FIRST_BACKOFF = 0.5  # seconds before the first retry of an output write
QUIET_SECONDS = 1.0  # a version with no request queued for this long is predicted a chunk at a time


@dataclass(frozen=True, slots=True)
class FileJob:
    """A file job's settings, as submitted."""

    output: OutputLocation
    id_column: str | None
    params: dict[str, Any] | None

    @classmethod
    def of(cls, spec: dict[str, Any]) -> FileJob:
        return cls(
            OutputLocation.parse(spec["output"], spec["output_format"]), spec.get("id_column"), spec.get("params")
        )


def signature_columns(model: LoadedModel) -> list[str] | None:
    """The input columns the version's signature names, or None (no signature, or tensors)."""
    schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
    if schema is None or not schema.has_input_names():
        return None
    return [str(name) for name in schema.input_names()]


# MLflow's column types as Arrow's, for reading text (CSV, JSON lines) as the signature says.
_ARROW_TYPES = {
    DataType.boolean: pa.bool_(),
    DataType.integer: pa.int32(),
    DataType.long: pa.int64(),
    DataType.float: pa.float32(),
    DataType.double: pa.float64(),
    DataType.string: pa.string(),
    DataType.binary: pa.binary(),
}


def signature_types(model: LoadedModel) -> dict[str, pa.DataType]:
    """The Arrow type of each named input column of the version's signature that has one."""
    schema = model.metadata.get_input_schema()  # type: ignore[no-untyped-call]
    if schema is None or not schema.has_input_names():
        return {}
    types = {}
    for spec in schema.inputs:
        if isinstance(spec, ColSpec) and spec.name and isinstance(spec.type, DataType) and spec.type in _ARROW_TYPES:
            types[str(spec.name)] = _ARROW_TYPES[spec.type]
    return types


def predictions_table(raw: Any) -> pa.Table:
    """A pyfunc's answer as columns: a DataFrame's own, else ``prediction`` (one column per
    output for a 2-D array: ``prediction_0``...)."""
    if isinstance(raw, pd.DataFrame):
        return pa.Table.from_pandas(raw, preserve_index=False)
    if isinstance(raw, pd.Series):
        return pa.table({"prediction": pa.array(raw.to_numpy())})
    array = np.asarray(raw)
    if array.ndim == 2 and array.dtype != object:
        return pa.table({f"prediction_{i}": array[:, i] for i in range(array.shape[1])})
    if array.ndim == 1 and array.dtype != object:
        return pa.table({"prediction": array})
    return pa.table({"prediction": pa.array(list(raw))})


class ChunkScorer:
    """Scores file chunks through one inference service."""

    def __init__(
        self,
        scorer: InferenceService,
        *,
        batch_rows: int,
        output_retries: int,
        whole: bool = False,
        predict_share: float = 1.0,
    ) -> None:
        self._scorer = scorer
        self._batch_rows = batch_rows
        self._retries = output_retries
        self._whole = whole
        self._share = predict_share
        self.pauses = 0
        """Pauses taken between two calls of a chunk to give way to requests (for tests)."""

    async def score(self, served: Resolved, index: int, chunk: ChunkSpec, job: FileJob) -> int:
        """The chunk scored and its output committed as part ``index``: its rows."""
        # Text is read as the signature types its columns (a CSV's "007" stays a string), the
        # same in every chunk; a Parquet file's own types stand.
        types = await self._input_types(served) if chunk.file.format != "parquet" else None
        # While the version has requests, decoded on this thread alone: the other cores are for
        # them, not pyarrow's pool; with none, on every core, as any batch scorer's reader does.
        threads = self._whole or self.quiet(served)
        try:
            read = functools.partial(read_chunk, chunk, types=types, use_threads=threads)
            table = await anyio.to_thread.run_sync(read)
        except JobFileError as exc:
            if exc.transient:
                raise
            raise ChunkRejected(one_line(exc.reason)) from exc
        if job.id_column is not None and job.id_column not in table.column_names:
            raise ChunkRejected(f"{chunk.file.uri} ({chunk.range}): no id column '{job.id_column}'")
        parts = []
        offset = 0
        while offset < table.num_rows:
            gives_way = not (self._whole or self.quiet(served))
            size = self._batch_rows if gives_way else table.num_rows - offset
            rows = table.slice(offset, size)
            where = f"{chunk.file.uri} ({chunk.range}, rows {offset}-{offset + rows.num_rows - 1} of the chunk)"
            began = time.perf_counter()
            parts.append(await self._predict(served, rows, job, where, threads=threads and not gives_way))
            offset += rows.num_rows
            if gives_way and offset < table.num_rows:
                await self._give_way(served, time.perf_counter() - began)
        output = pa.concat_tables(parts) if parts else pa.table({"prediction": pa.array([], pa.null())})
        if job.id_column is not None:
            output = output.add_column(0, job.id_column, table.column(job.id_column))
        await self._commit(job.output, index, output)
        return int(table.num_rows)

    def quiet(self, served: Resolved) -> bool:
        """Whether the version has no request to give way to: none waiting in its queue, none
        queued within QUIET_SECONDS (a version not loaded here yet has none)."""
        model = self._scorer.loaded(served.id)
        queue: VersionQueue | None = model.queue if model is not None else None
        if queue is None:
            return True
        return queue.waiting == 0 and time.perf_counter_ns() - queue.last_request_ns > QUIET_SECONDS * 1e9

    async def _give_way(self, served: Resolved, spent: float) -> None:
        """After a call of ``spent`` seconds (the clock's, from its queueing to its answer), wait
        ``spent * (1 - share) / share`` before the next while the version still has requests:
        a chunk then predicts at most ``share`` of the time, and requests have the rest to
        themselves (neither queued behind its batch nor sharing the GIL with it)."""
        if self._share >= 1.0 or self.quiet(served):
            return
        self.pauses += 1
        await asyncio.sleep(spent * (1.0 - self._share) / self._share)

    async def _input_types(self, served: Resolved) -> dict[str, pa.DataType]:
        model = self._scorer.loaded(served.id)
        if model is None:  # cold here: loaded (as the chunk's first batch would load it) for its signature
            await self._scorer.call(served, lambda model: b"", kind=None, body=b"", background=True)
            model = self._scorer.loaded(served.id)
        return signature_types(model) if model is not None else {}

    async def _predict(self, served: Resolved, rows: pa.Table, job: FileJob, where: str, *, threads: bool) -> pa.Table:
        found: list[pa.Table] = []

        def work(model: LoadedModel) -> bytes:  # in the inference thread, with the version leased
            needed = signature_columns(model)
            frame = rows
            if needed is not None:
                missing = [name for name in needed if name not in rows.column_names]
                if missing:
                    raise ChunkRejected(f"{where}: columns missing for the version's signature: {', '.join(missing)}")
                frame = rows.select(needed)
            elif job.id_column is not None:
                frame = rows.drop_columns([job.id_column])
            raw = model.predict(ScoringInput(frame.to_pandas(use_threads=threads), job.params))
            try:
                found.append(predictions_table(raw))
            except (pa.ArrowException, ValueError, TypeError) as exc:
                raise ChunkRejected(f"{where}: predictions not a table: {exc}") from exc
            return b""

        try:
            await self._scorer.call(served, work, kind=None, body=b"", background=True, aside=True)
        except (InvalidInput, ModelRaised) as exc:
            raise ChunkRejected(f"{where}: {exc}") from exc
        if found[0].num_rows != rows.num_rows:
            raise ChunkRejected(f"{where}: {found[0].num_rows} predictions for {rows.num_rows} rows")
        return found[0]

    async def _commit(self, output: OutputLocation, index: int, table: pa.Table) -> None:
        delay = _FIRST_BACKOFF
        for attempt in range(self._retries + 1):
            try:
                await anyio.to_thread.run_sync(_commit_part(output, index, table))
                return
            except OutputUnwritable as exc:
                if not exc.transient or attempt == self._retries:
                    raise
            await asyncio.sleep(delay)
            delay *= 2


def _commit_part(output: OutputLocation, index: int, table: pa.Table) -> Callable[[], str]:
    return lambda: output.commit(index, table)
