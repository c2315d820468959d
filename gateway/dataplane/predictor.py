"""Serve a prediction, knowing nothing of HTTP: choose the version, lease it, score.

A deterministic version's answer may come from the prediction cache. Otherwise the
request joins its version's queue (gateway.dataplane.batching); decoding, predict and encoding
run in an inference thread, a batch at a time (gateway.dataplane.inference). The lease is
returned when that work finishes, not when the request gives up, so a model is never
unloaded under a predict still running.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from gateway.admission.limits import LoadBudget
from gateway.dataplane.batching import Call, Request, TensorCall, VersionQueue
from gateway.dataplane.cache import ModelCache
from gateway.dataplane.deadlines import Deadlines
from gateway.dataplane.inference import score_batch
from gateway.dataplane.loader import LoadedModel
from gateway.dataplane.prediction_cache import PredictionCache, cache_key
from gateway.errors import AliasNotFound, InvalidSelector, PredictTimeout, SelectorConflict
from gateway.metrics import GatewayMetrics
from gateway.observability.tracing import Tracing
from gateway.routing.catalog import Catalog, Resolved
from gateway.routing.traffic import NAMED, SHADOW, TrafficSplit
from gateway.wire.selectors import Selector, parse_selector
from registry_sync.identity import VersionId


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch: int = 64
    max_wait: float = 0.0  # seconds
    max_queue: int = 256
    workers: int = 4  # concurrent predicts for a version that does not batch
    inline_cpu: float = 0.001  # seconds: a fast-path batch costing less runs on the event loop


@dataclass(frozen=True, slots=True)
class Prediction:
    body: bytes  # the JSON response, ready to send
    served: Resolved


class InferenceService:
    def __init__(
        self,
        catalog: Catalog,
        cache: ModelCache,
        *,
        default_alias: str,
        predict_timeout_seconds: float,
        executor: ThreadPoolExecutor,
        metrics: GatewayMetrics,
        batching: BatchPolicy | None = None,
        answers: PredictionCache | None = None,
        load_budget: LoadBudget | None = None,
        split: TrafficSplit | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._catalog = catalog
        self._cache = cache
        self._default = parse_selector(default_alias)
        self._timeout = predict_timeout_seconds
        self._deadlines = Deadlines(predict_timeout_seconds)
        self._executor = executor
        self._metrics = metrics
        self._batching = batching or BatchPolicy()
        self._answers = answers
        self._load_budget = load_budget  # cold loads for requests; warm swaps do not count
        self._split = split  # canaries of the default route (gateway.routing.traffic)
        self._tracing = tracing or Tracing.off()

    async def choose(
        self,
        name: str,
        *,
        path: str | None = None,
        header: str | None = None,
        route_key: str | None = None,
        take_over: bool = True,
    ) -> Resolved:
        """The concrete version a request is for (see docs/user-guide.md: Choosing a version). A request
        that names a version gets exactly it; the default route may go to a canary. ``take_over=False``
        for a read that only looks (metadata, a listing): it never has a warm alias loaded here."""
        # An X-Model-Version sent empty is a selector, a malformed one (400), not "no header":
        # serving the default version would hide the client's mistake.
        if path is not None or header is not None:
            return replace(await self._named(name, path=path, header=header, take_over=take_over), route=NAMED)
        default = await self.default_version(name, take_over=take_over)
        return self._split.pick(default, route_key) if self._split is not None else default

    async def _named(self, name: str, *, path: str | None, header: str | None, take_over: bool) -> Resolved:
        if path is not None:
            chosen = await self._resolve(name, path, take_over=take_over)
            if header is not None:
                other = await self._resolve(name, header, take_over=take_over)
                if other.version != chosen.version:
                    raise SelectorConflict(
                        name=name, path=path, header=header, path_version=chosen.version, header_version=other.version
                    )
            return chosen
        assert header is not None
        return await self._resolve(name, header, take_over=take_over)

    async def _resolve(self, name: str, raw: str, *, take_over: bool) -> Resolved:
        selector = parse_selector(raw)
        try:
            return await self._catalog.resolve(name, selector, take_over=take_over)
        except AliasNotFound:
            # "-1" names no alias of this model: it was meant as a version number, and none is below 1
            if selector.negative_number:
                raise InvalidSelector(
                    raw, f"version numbers start at 1, and model '{name}' has no alias '{selector.raw}'"
                ) from None
            raise

    async def default_version(self, name: str, *, take_over: bool = True) -> Resolved:
        """The default alias's version (else latest), before any traffic split; ``take_over``
        as for choose."""
        if not self._catalog.knows(name):
            await self._catalog.look_again(name)  # registered a moment ago?
        try:
            # A known model without the default alias is served at latest: not a miss
            # worth asking the registry about again.
            return await self._catalog.resolve(name, self._default, look_again=False, take_over=take_over)
        except AliasNotFound:
            return await self._catalog.resolve(name, Selector("latest", "latest"))

    def loaded(self, version: VersionId) -> LoadedModel | None:
        """The version as loaded here, or None; never loads it."""
        return self._cache.peek(version)

    def batches(self, version: VersionId) -> bool:
        """Whether this loaded version's requests share batches (then one inference thread
        runs them all, a batch at a time); False for a version not loaded here."""
        model = self._cache.peek(version)
        return model is not None and model.batching and self._batching.max_batch > 1

    async def predict(self, served: Resolved, body: bytes, media_type: str, *, background: bool = False) -> Prediction:
        """An MLflow scoring body: batched with its version's other requests, fast path if it can.
        ``background`` (a job's): it queues behind requests, in at most half the queue."""
        return await self._run(served, (body, media_type), media_type, body, background=background)

    async def call(
        self,
        served: Resolved,
        work: Call | TensorCall,
        *,
        kind: str | None,
        body: bytes,
        background: bool = False,
        aside: bool = False,
    ) -> Prediction:
        """Another protocol's request: ``work`` decodes, predicts and encodes in the inference
        thread, with the same lease, queue, timeout and answer cache. ``kind`` and ``body``
        key the cache: together they must say everything ``work`` answers from (None: never
        cached, a job's chunk). ``background`` as for predict; ``aside`` (a job's batch of
        rows): beside the requests' batches, never one of them (VersionQueue.submit)."""
        return await self._run(served, work, kind, body, background=background, aside=aside)

    async def _run(
        self,
        served: Resolved,
        request: Request,
        kind: str | None,
        body: bytes,
        *,
        background: bool,
        aside: bool = False,
    ) -> Prediction:
        if served.fallback is not None and not self._cache.holds(served.id):
            served = served.fallback  # a canary unloaded since it was chosen: never a cold load for a split
        lease = await self._cache.acquire(served.id, budget=self._load_budget)
        try:
            model = lease.model
            key = None
            if self._answers is not None and model.deterministic and model.digest and kind is not None:
                key = cache_key(model.digest, kind, body)
                cached = await self._answers.get(key)
                if cached is not None:
                    lease.release()
                    return Prediction(cached, served)
            job = self._queue(model).submit(
                request, lease, background=background or served.route == SHADOW, aside=aside
            )
        except BaseException:
            lease.release()
            raise
        # From here the job holds the lease, and its worker returns it when the work is over.
        # The request waits on the job's own future, failed by one shared timer after the
        # predict timeout (gateway.dataplane.deadlines) and cancelled with the request: a job
        # given up on before a worker took it is dropped, a running predict finishes (see Job).
        self._deadlines.add(job.future)
        try:
            response = await job.future
        except TimeoutError as exc:
            raise PredictTimeout(served.name, served.version, self._timeout) from exc
        if key is not None and self._answers is not None:
            self._answers.put(key, response)
        return Prediction(response, served)

    def _queue(self, model: LoadedModel) -> VersionQueue:
        queue: VersionQueue | None = model.queue
        if queue is None:
            batching = model.batching and self._batching.max_batch > 1
            queue = VersionQueue(
                model=model,
                run=score_batch,
                executor=model.calls_on(self._executor),
                metrics=self._metrics,
                max_batch=self._batching.max_batch if batching else 1,
                max_wait=self._batching.max_wait if batching else 0.0,
                max_queue=self._batching.max_queue,
                # one batch at a time per version; unbatched versions use the whole pool
                max_workers=1 if batching else self._batching.workers,
                inline_cpu=self._batching.inline_cpu,
                tracing=self._tracing,
            )
            model.queue = queue
        return queue

    async def close(self) -> None:
        if self._answers is not None:
            await self._answers.close()
