"""Prometheus metrics of one gateway, in a registry of its own (no process globals).

Labels carry only names the registry confirmed: a request for a model that does not
exist is counted under ``model="_unknown"`` so garbage cannot grow the label space.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from gateway.loop_metrics import LoopCounter, LoopHistogram

if TYPE_CHECKING:
    from gateway.runtimes.base import Placement

UNKNOWN = "_unknown"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Waits in a version's queue and batch runs are often tens of microseconds.
_STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, *_LATENCY_BUCKETS)
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GarbageCollection(Collector):
    """Python's cyclic garbage collector, by generation, read from ``gc.get_stats()`` at each
    scrape under the names prometheus_client's own collector uses (``python_gc_*``), which
    dashboards know. That collector counts in a ``gc.callbacks`` hook it can never remove, one
    per registry; this process makes a registry per app (the tests make hundreds)."""

    def collect(self) -> Iterator[Metric]:
        families = {
            "collections": CounterMetricFamily(
                "python_gc_collections", "Collections of each generation", labels=["generation"]
            ),
            "collected": CounterMetricFamily(
                "python_gc_objects_collected", "Objects collected, by generation", labels=["generation"]
            ),
            "uncollectable": CounterMetricFamily(
                "python_gc_objects_uncollectable", "Uncollectable objects found, by generation", labels=["generation"]
            ),
        }
        for generation, stats in enumerate(gc.get_stats()):
            for key, family in families.items():
                family.add_metric([str(generation)], stats[key])
        yield from families.values()


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process's own (CPU seconds, resident memory, open files; from /proc) and its
        # garbage collector's: what every Python service exports, and what explains a p99.
        ProcessCollector(registry=r)
        r.register(GarbageCollection())
        # What every request updates, on the event loop: plain numbers, no lock (gateway.loop_metrics).
        self.requests = LoopCounter(
            "gateway_requests", "Prediction requests answered", ["model", "version", "status"], registry=r
        )
        self.latency = LoopHistogram(
            "gateway_request_duration_seconds",
            "Time to answer a prediction request, including any load",
            ["model", "version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.hits = LoopCounter(
            "gateway_cache_hits", "Requests that found their version loaded (or loading)", ["model"], registry=r
        )
        self.misses = Counter("gateway_cache_misses", "Requests that started a load", ["model"], registry=r)
        self.loads = Counter(
            "gateway_model_loads", "Model loads by outcome", ["model", "version", "outcome"], registry=r
        )
        self.load_seconds = Histogram(
            "gateway_model_load_seconds",
            "Time to fetch and load a version",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "gateway_cache_evictions", "Versions evicted from the model cache", ["model"], registry=r
        )
        self.loaded_models = Gauge("gateway_loaded_models", "Versions held in memory", registry=r)
        self.runtimes = Gauge(
            "gateway_version_runtime",
            "1 for each loaded version, labelled by where it runs: in_process, or isolated in a worker of "
            "its own environment (its key), and the device it computes on (cpu, cuda:0...); at most "
            "GATEWAY_MAX_LOADED_MODELS series",
            ["model", "version", "runtime", "environment", "device"],
            registry=r,
        )
        self.loaded_bytes = Gauge("gateway_loaded_bytes", "Measured bytes of the versions held in memory", registry=r)
        self.swaps = Counter("gateway_swaps", "Blue-green alias swaps by outcome", ["model", "outcome"], registry=r)
        self.sync_runs = Counter("gateway_sync_runs", "Registry sync passes by outcome", ["outcome"], registry=r)
        self.sync_seconds = Histogram(
            "gateway_sync_seconds", "Time of one registry sync pass", buckets=_LOAD_BUCKETS, registry=r
        )
        self.refusals = Counter("gateway_refusals", "Versions refused for a sha256 mismatch", registry=r)
        self.writebacks = Counter(
            "gateway_mlflow_writebacks",
            "The sync leader's write-backs of production figures to MLflow, by outcome (success, failure)",
            ["outcome"],
            registry=r,
        )
        self.last_sync_age = Gauge(
            "gateway_sync_last_success_age_seconds",
            "Seconds since the last successful registry sync (+Inf before the first)",
            registry=r,
        )
        self.last_sync_age.set_function(self._last_sync_age)
        self.batch_size = LoopHistogram(
            "gateway_batch_size",
            "Requests coalesced into one predict call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.rejected = Counter(
            "gateway_rejected", "Requests refused with 503 because a version's queue was full", ["model"], registry=r
        )
        self.batches = LoopCounter(
            "gateway_batches",
            "Predict calls (batches) by where they ran: the event loop (a version whose batches "
            "cost under GATEWAY_INLINE_PREDICT_MS of CPU) or the inference pool",
            ["model", "runs_on"],
            registry=r,
        )
        self.fast_path = LoopCounter(
            "gateway_predictions_by_path",
            "Requests predicted by the flavor's own predict (fast) or through pyfunc",
            ["model", "path"],
            registry=r,
        )
        self.prediction_cache_lookups = Counter(
            "gateway_prediction_cache_lookups", "Prediction cache lookups by result", ["result"], registry=r
        )
        self._cache_hit = self.prediction_cache_lookups.labels("hit")
        self._cache_miss = self.prediction_cache_lookups.labels("miss")
        self._cache_error = self.prediction_cache_lookups.labels("error")
        self.last_sync_success: float | None = None
        self.usage: dict[str, Counter] = {}  # track_usage's, when the usage room counts
        self.usage_by_caller = False
        self.sync_leader = Gauge(
            "gateway_sync_leader", "1 while this process holds the sync leader lease, else 0", registry=r
        )

        self.artifact_bytes = Gauge(
            "gateway_artifact_downloaded_bytes",
            "Bytes this process downloaded from artifact stores (versions fetched to serve or verify)",
            registry=r,
        )

        self.key_requests = LoopCounter(  # counted on the event loop, where the gate runs
            "gateway_key_requests",
            "Requests by API key name (never the secret) and outcome: allowed, forbidden (a scope "
            "the key lacks) or limited (429)",
            ["key", "outcome"],
            registry=r,
        )
        self.token_requests = LoopCounter(
            "gateway_token_requests",
            "Requests with an identity provider's token (all subjects together: a label per caller "
            "would grow without bound) by outcome: allowed, forbidden or limited",
            ["outcome"],
            registry=r,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures",
            "Requests answered 401, by reason: missing or unknown key, or token_<why> for a token "
            "(expired, not_yet_valid, audience, issuer, signature, algorithm, kid, malformed, too_large...)",
            ["reason"],
            registry=r,
        )
        self.limited_requests = Counter(
            "gateway_limited", "Requests answered 429, by the limit used up", ["limit"], registry=r
        )
        self.limits_redis_errors = Counter(
            "gateway_limits_redis_errors",
            "Rate limit checks that Redis failed (the process counted alone meanwhile)",
            registry=r,
        )
        self.loads_throttled = Counter(
            "gateway_loads_throttled", "Cold loads refused (503) past GATEWAY_MAX_LOADS_PER_MINUTE", registry=r
        )

        self.arm_requests = LoopCounter(
            "gateway_traffic_requests",
            "Default-route requests by model and arm (default, canary, shadow) and outcome (ok, error)",
            ["model", "arm", "outcome"],
            registry=r,
        )
        self.arm_latency = LoopHistogram(
            "gateway_traffic_duration_seconds",
            "Time to answer a default-route request, by model and arm",
            ["model", "arm"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            "gateway_shadow_dropped",
            "Shadow requests dropped: the shadow queue or half the version's own queue was full, "
            "the version was unloaded, or its shadows are paused",
            ["model"],
            registry=r,
        )
        self.shadow_pauses = Counter(
            "gateway_shadow_pauses",
            "Pauses of a shadow version's shadows after GATEWAY_SHADOW_PAUSE_AFTER_FAILURES failures in a row",
            ["model"],
            registry=r,
        )
        self.shadow_agreement = Counter(
            "gateway_shadow_agreement",
            "Shadow answers compared with the primary's: agree (equal classes, floats within the tolerance) or differ",
            ["model", "result"],
            registry=r,
        )
        self.canary_rollbacks = Counter(
            "gateway_canary_rollbacks", "Canaries whose weight the guard took away", ["model"], registry=r
        )

        # Where a request's time goes (the latency split): at most one series per loaded version.
        self.queue_seconds = LoopHistogram(
            "gateway_queue_seconds",
            "Time a request waited in its version's queue before its batch started",
            ["model", "version"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.compute_seconds = LoopHistogram(
            "gateway_compute_seconds",
            "Time of one batch's predict call (the model itself); its count is the batches run",
            ["model", "version"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.codec_seconds = LoopHistogram(
            "gateway_codec_seconds",
            "Time one batch spent decoding its requests' bodies (stage=decode) or encoding the answers (encode)",
            ["model", "version", "stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.memory_budget = Gauge(
            "gateway_memory_budget_bytes", "The loaded versions' memory budget (GATEWAY_MAX_MEMORY_MB)", registry=r
        )
        self.records_written = Counter(
            "gateway_records_written",
            "Inference records a sink accepted, by sink kind (file, http, redis, parquet, delta)",
            ["sink"],
            registry=r,
        )
        self.records_dropped = Counter(
            "gateway_records_dropped",
            "Inference records dropped, by reason: queue_full (the sink is slower than traffic, or "
            "down), sink_error (a write failed), unreadable (the record could not be made)",
            ["reason"],
            registry=r,
        )
        self.record_traces_total = Counter(
            "gateway_record_traces",
            "Recorded predictions as MLflow traces and labels as expectations (GATEWAY_RECORDS_TRACES), "
            "by outcome: written, expectation, failed (MLflow down or refusing), queue_full, shutdown",
            ["outcome"],
            registry=r,
        )
        self.records_queued_bytes = Gauge(
            "gateway_records_queued_bytes",
            "Bytes of inference records waiting for their sink (at most GATEWAY_RECORDS_QUEUE_MB)",
            registry=r,
        )
        # Streams (predict_stream over SSE and the OpenAI routes: gateway/dataplane/streaming.py)
        self.streams_open = Gauge(
            "gateway_streams_open", "Streams open in this process (at most GATEWAY_MAX_STREAMS)", registry=r
        )
        self.stream_first_event_seconds = LoopHistogram(
            "gateway_stream_first_event_seconds",
            "Time from a stream's version being leased to its first chunk",
            ["model", "version"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.stream_events = LoopCounter(
            "gateway_stream_events", "Chunks streamed to clients", ["model", "version"], registry=r
        )
        self.stream_seconds = LoopHistogram(
            "gateway_stream_duration_seconds",
            "How long a stream stayed open, from its version leased to its end (whatever ended it)",
            ["model", "version"],
            buckets=(*_LATENCY_BUCKETS, 60, 120, 300, 600),
            registry=r,
        )
        self.streams_ended = Counter(
            "gateway_streams_ended",
            "Streams by how they ended: done, error, idle, disconnected, slow_reader, shutdown",
            ["reason"],
            registry=r,
        )

        # Ground truth and live quality (gateway/quality/): computed at an interval, never per request
        self.feedback_labels = Counter(
            "gateway_feedback_labels",
            "Labels received (POST /feedback) by model, version, arm and outcome: accepted, duplicate, "
            "invalid, expired (model, version and arm are _unknown for unknown request ids)",
            ["model", "version", "arm", "status"],
            registry=r,
        )
        self.feedback_dropped = Counter(
            "gateway_feedback_dropped",
            "Predictions not kept for feedback, by reason: buffer_full (the state database is slower "
            "than traffic, or down), write_error, unreadable (not a scoring answer with rows, or not JSON)",
            ["reason"],
            registry=r,
        )
        self.quality = Gauge(
            "gateway_quality",
            "Live quality of a version and arm over its latest labels (GATEWAY_QUALITY_WINDOW): accuracy, "
            "precision_macro, recall_macro, f1_macro, log_loss; or mae, rmse",
            ["model", "version", "arm", "metric"],
            registry=r,
        )
        self.quality_labels = Gauge(
            "gateway_quality_labels",
            "Labels in the window live quality is computed over, by model, version and arm",
            ["model", "version", "arm"],
            registry=r,
        )
        self._quality_shown: set[tuple[str, ...]] = set()
        self.quality_rollbacks = Counter(
            "gateway_quality_rollbacks",
            "Canaries the guard rolled back on live quality (also in gateway_canary_rollbacks)",
            ["model"],
            registry=r,
        )

        # Drift (gateway/drift/): sampled on the request path, binned and judged off it
        self.feature_drift = Gauge(
            "gateway_feature_drift",
            "Drift of a version's feature (an output: output:<name>) over the fleet's window against "
            "its reference: psi, statistic (Kolmogorov-Smirnov or chi-square), p_value",
            ["model", "version", "feature", "statistic"],
            registry=r,
        )
        self.feature_outliers = Gauge(
            "gateway_feature_outlier_share",
            "Share of a feature's rows in the window that are outliers: outside the reference's range, "
            "unseen categories, values not of the column's type",
            ["model", "version", "feature"],
            registry=r,
        )
        self.feature_missing = Gauge(
            "gateway_feature_missing_share",
            "Share of a feature's rows in the window that are missing (a request without the column included)",
            ["model", "version", "feature"],
            registry=r,
        )
        self.drift_rows = Gauge(
            "gateway_drift_window_rows",
            "Rows in a version's drift window over the fleet (sampled: GATEWAY_DRIFT_SAMPLE)",
            ["model", "version"],
            registry=r,
        )
        self.drift_flagged = Gauge(
            "gateway_drift_flagged",
            "Features of a version flagged as drifting now (0: none; see gateway/drift/monitor.py)",
            ["model", "version"],
            registry=r,
        )
        self.drift_mismatched = Gauge(
            "gateway_drift_mismatched_share",
            "Share of a version's sampled requests whose columns were not its reference's (missing or extra)",
            ["model", "version"],
            registry=r,
        )
        self._drift_shown: dict[Any, set[tuple[str, ...]]] = {}
        self.drift_dropped = Counter(
            "gateway_drift_dropped",
            "Sampled requests not binned for drift, by reason: buffer_full, no_reference (none ready yet), "
            "unreadable (not a table), error",
            ["reason"],
            registry=r,
        )

        # Jobs (gateway/jobs/): the fleet's queue as this process last read it, and its own work
        self.jobs = Gauge(
            "gateway_jobs",
            "Jobs in the state database by state (queued, running, ...), fleet-wide, as last read here",
            ["state"],
            registry=r,
        )
        self.job_chunks_running = Gauge(
            "gateway_job_chunks_running", "Job chunks this process is scoring now", registry=r
        )
        self.job_rows = Counter(
            "gateway_job_rows", "Rows this process scored for jobs (rate(): rows per second)", ["model"], registry=r
        )
        self.job_chunks = Counter(
            "gateway_job_chunks",
            "Job chunks this process ended, by outcome: done, failed (bad input), lost (cancelled or taken over), "
            "given_back (its version could not be loaded now)",
            ["outcome"],
            registry=r,
        )
        self.job_failures = Counter(
            "gateway_job_failures", "Jobs that ended failed or partial here, by model", ["model"], registry=r
        )

    def _last_sync_age(self) -> float:
        if self.last_sync_success is None:
            return float("inf")
        return time.monotonic() - self.last_sync_success

    def follow_leadership(self, leading: Callable[[], bool]) -> None:
        """``gateway_sync_leader`` reads ``leading`` at every scrape."""
        self.sync_leader.set_function(lambda: 1.0 if leading() else 0.0)

    def follow_downloads(self, downloaded: Callable[[], int]) -> None:
        """``gateway_artifact_downloaded_bytes`` reads ``downloaded`` at every scrape."""
        self.artifact_bytes.set_function(lambda: float(downloaded()))

    def writeback_finished(self, ok: bool) -> None:
        self.writebacks.labels("success" if ok else "failure").inc()

    def swap_finished(self, model: str, *, outcome: str) -> None:
        self.swaps.labels(model, outcome).inc()

    def sync_finished(self, *, outcome: str, seconds: float, refused: int) -> None:
        self.sync_runs.labels(outcome).inc()
        if outcome == "success":
            self.last_sync_success = time.monotonic()
        self.sync_seconds.observe(seconds)
        if refused:
            self.refusals.inc(refused)

    def request_finished(self, *, model: str, version: str, status: int, seconds: float) -> None:
        self.requests.inc((model, version, str(status)))
        self.latency.observe((model, version), seconds)

    def arm_finished(self, *, model: str, arm: str, ok: bool, seconds: float) -> None:
        self.arm_requests.inc((model, arm, "ok" if ok else "error"))
        self.arm_latency.observe((model, arm), seconds)

    def shadow_was_dropped(self, model: str) -> None:
        self._child(self.shadow_dropped, model).inc()

    def shadow_paused(self, model: str) -> None:
        self._child(self.shadow_pauses, model).inc()

    def shadow_compared(self, model: str, *, agree: bool) -> None:
        self._child(self.shadow_agreement, model, "agree" if agree else "differ").inc()

    def cache_hit(self, model: str) -> None:
        self.hits.inc((model,))

    def cache_miss(self, model: str) -> None:
        self._child(self.misses, model).inc()

    def load_finished(self, model: str, version: int, *, outcome: str, seconds: float) -> None:
        self.loads.labels(model, str(version), outcome).inc()
        self.load_seconds.labels(model).observe(seconds)

    def evicted(self, model: str, version: int) -> None:
        self.evictions.labels(model).inc()

    def runtime_loaded(self, model: str, version: int, placement: Placement) -> None:
        self.runtimes.labels(*self._runtime_labels(model, version, placement)).set(1)

    def runtime_unloaded(self, model: str, version: int, placement: Placement) -> None:
        try:
            self.runtimes.remove(*self._runtime_labels(model, version, placement))
        except KeyError:
            pass

    @staticmethod
    def _runtime_labels(model: str, version: int, placement: Placement) -> tuple[str, ...]:
        return model, str(version), placement.runtime, placement.environment or "", placement.device

    def cache_size(self, *, models: int, size_bytes: int) -> None:
        self.loaded_models.set(models)
        self.loaded_bytes.set(size_bytes)

    def batch_finished(self, model: str, *, size: int, fast: int, on_loop: bool = False) -> None:
        self.batch_size.observe((model,), size)
        self.batches.inc((model, "loop" if on_loop else "pool"))
        if fast:
            self.fast_path.inc((model, "fast"), fast)
        if size - fast:
            self.fast_path.inc((model, "pyfunc"), size - fast)

    def batch_timed(
        self, model: str, version: int, *, waits: list[float], compute: float, decode: float, encode: float
    ) -> None:
        """One batch of a version ran: each request's wait in the queue, and the batch's stages."""
        label = str(version)
        for wait in waits:
            self.queue_seconds.observe((model, label), wait)
        self.compute_seconds.observe((model, label), compute)
        self.codec_seconds.observe((model, label, "decode"), decode)
        self.codec_seconds.observe((model, label, "encode"), encode)

    def records_written_to(self, sink: str, count: int) -> None:
        self._child(self.records_written, sink).inc(count)

    def records_were_dropped(self, reason: str, count: int = 1) -> None:
        self._child(self.records_dropped, reason).inc(count)

    def record_traces(self, outcome: str, count: int = 1) -> None:
        self._child(self.record_traces_total, outcome).inc(count)

    def follow_records_queue(self, queued_bytes: Callable[[], int]) -> None:
        """``gateway_records_queued_bytes`` reads ``queued_bytes`` at every scrape."""
        self.records_queued_bytes.set_function(lambda: float(queued_bytes()))

    def labels_received(self, *, model: str, version: str, arm: str, status: str, count: int = 1) -> None:
        self._child(self.feedback_labels, model, version, arm, status).inc(count)

    def feedback_was_dropped(self, reason: str, count: int = 1) -> None:
        self._child(self.feedback_dropped, reason).inc(count)

    def quality_now(self, figures: dict[tuple[str, str, str], tuple[int, dict[str, float]]]) -> None:
        """Replace the quality gauges with these figures by (model, version, arm): a version
        that left (no labels in the window, or gone from the registry) leaves the gauges."""
        shown: set[tuple[str, ...]] = set()
        for (model, version, arm), (labels, metrics) in figures.items():
            self.quality_labels.labels(model, version, arm).set(labels)
            shown.add((model, version, arm))
            for metric, value in metrics.items():
                self.quality.labels(model, version, arm, metric).set(value)
                shown.add((model, version, arm, metric))
        for gone in self._quality_shown - shown:  # removed after the new ones are set: no gap
            (self.quality if len(gone) == 4 else self.quality_labels).remove(*gone)
        self._quality_shown = shown

    def jobs_now(self, counts: dict[str, int], states: Iterable[str]) -> None:
        for state in states:
            self.jobs.labels(state).set(counts.get(state, 0))

    def job_chunk_ended(self, outcome: str, *, model: str, rows: int = 0) -> None:
        self.job_chunks.labels(outcome).inc()
        if rows:
            self.job_rows.labels(model).inc(rows)

    def drift_was_dropped(self, reason: str, count: int = 1) -> None:
        self._child(self.drift_dropped, reason).inc(count)

    def drift_now(self, figures: Iterable[Any]) -> None:
        """Replace the drift gauges with these versions' figures (``VersionDrift``): a version
        that left (its window emptied, or gone from the registry) leaves the gauges."""
        shown: dict[Any, set[tuple[str, ...]]] = {}

        def put(gauge: Any, value: float | None, *labels: str) -> None:
            if value is not None:
                gauge.labels(*labels).set(value)
                shown.setdefault(gauge, set()).add(labels)

        for drift in figures:
            model, version = drift.id.name, str(drift.id.version)
            put(self.drift_rows, drift.window.rows, model, version)
            put(self.drift_flagged, len(drift.flagged), model, version)
            put(self.drift_mismatched, drift.mismatched_share, model, version)
            for kind, feature in drift.worst_first():
                name = feature.name if kind == "input" else f"output:{feature.name}"
                put(self.feature_drift, feature.psi, model, version, name, "psi")
                put(self.feature_drift, feature.statistic, model, version, name, "statistic")
                put(self.feature_drift, feature.p_value, model, version, name, "p_value")
                put(self.feature_outliers, feature.outlier_share, model, version, name)
                put(self.feature_missing, feature.missing_share, model, version, name)
        for gauge, labels in self._drift_shown.items():  # removed after the new ones are set: no gap
            for gone in labels - shown.get(gauge, set()):
                gauge.remove(*gone)
        self._drift_shown = shown

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: labels() takes a lock and builds tuples."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def queue_full(self, model: str) -> None:
        self._child(self.rejected, model).inc()

    def prediction_cache(self, *, hit: bool) -> None:
        (self._cache_hit if hit else self._cache_miss).inc()

    def prediction_cache_error(self) -> None:
        self._cache_error.inc()

    def key_used(self, key: str, outcome: str) -> None:
        self.key_requests.inc((key, outcome))

    def token_used(self, outcome: str) -> None:
        self.token_requests.inc((outcome,))

    def auth_failed(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def track_usage(self, *, by_caller: bool) -> None:
        """The usage counters (gateway.admission.usage), per model and version, and per caller
        too when ``by_caller`` (GATEWAY_USAGE_METRICS_BY_CALLER: one series per caller, model
        and version, so off by default). Added to at each usage flush, not per request."""
        labels = ["model", "version", *(["caller"] if by_caller else [])]
        self.usage_by_caller = by_caller
        self.usage = {
            figure: Counter(
                f"gateway_usage_{figure}",
                f"Usage counted per model and version: {text}",
                labels,
                registry=self.registry,
            )
            for figure, text in (
                ("requests", "prediction requests of identified callers (or anyone, without keys)"),
                ("rows", "input rows, where a request decoded to a frame or an array"),
                ("errors", "requests answered 4xx or 5xx once a version was chosen"),
                ("predict_seconds", "seconds of the model's own predict (a batch's, for each of its requests)"),
                ("tokens", "tokens the OpenAI routes' answers reported (usage.total_tokens)"),
            )
        }

    def usage_flushed(self, model: str, version: int, caller: str, figures: dict[str, float]) -> None:
        labels = (model, str(version), caller) if self.usage_by_caller else (model, str(version))
        for figure, value in figures.items():
            if value:
                self.usage[figure].labels(*labels).inc(value)

    def limited(self, limit: str) -> None:
        self.limited_requests.labels(limit).inc()

    def limits_redis_error(self) -> None:
        self.limits_redis_errors.inc()

    def load_throttled(self) -> None:
        self.loads_throttled.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
