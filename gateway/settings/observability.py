"""Logs' format, traces and inference records."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from gateway.settings.section import SettingsSection, comma_list


class ObservabilitySettings(SettingsSection):
    """Logs' format, traces and inference records."""

    log_format: Literal["text", "json"] = "text"
    """``text``: one readable line per event. ``json``: one JSON object per line (time, level,
    logger, message, and the request id of the request it is about), for log pipelines."""

    tracing: Literal["off", "otlp"] = "off"
    """``otlp``: export OpenTelemetry traces (a span per request, its queue wait, the batch that
    ran it, codec, loads, warm-ups, sync passes, environment builds) to an OTLP receiver, as the
    standard ``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME`` and ``OTEL_TRACES_SAMPLER[_ARG]``
    variables say. ``off`` (the default) costs nothing: no span is made."""

    tracing_spans: Literal["all", "requests"] = "all"
    """Which spans a sampled request makes. ``all``: its request span, its ``queue`` wait and the
    ``batch`` that ran it (with ``decode``, ``predict`` and ``encode``). ``requests``: the request
    span alone, with those times as its attributes (``gateway.queue.seconds``,
    ``gateway.batch.size``, ``gateway.batch.predict.seconds``...): one span where there were six,
    for a tracing backend that stores or bills by the span. It measured no cheaper for the
    gateway itself (docs/observability.md: What it costs)."""

    mlflow_traces: bool = False
    """MLflow's own traces of the models served in this process (a ``ResponsesAgent`` traces every
    call, as does code under ``@mlflow.trace``), which MLflow logs per call to the tracking server
    it knows (here, the registry's): about 25 ms a request (bench/README.md, Streams), and a
    trace per served request in the registry's experiments. Off (the default): MLflow's tracing
    is disabled in the gateway's process; the gateway's own traces (``tracing``) do not depend on it."""

    records_sink: str | None = None
    """Where inference records (each sampled request's inputs and outputs) go. As CloudEvents:
    ``file:///dir`` (rotating JSON-lines files), ``http(s)://...`` (batched POSTs) or
    ``redis://host:port/db?stream=name`` (a Redis stream). As inference tables (Parquet,
    hive-partitioned by model, version and date; failed requests, shadows and labels too):
    ``parquet+file:///dir`` or ``parquet+s3://bucket/prefix`` (with the artifact store's
    ``AWS_*`` and ``MLFLOW_S3_ENDPOINT_URL``); the same as Delta Lake tables, a commit per
    rolled file: ``delta+file:///dir`` or ``delta+s3://bucket/prefix`` (the ``tables-delta``
    extra). Unset (the default): none are made."""

    records_sample: float = Field(default=1.0, ge=0, le=1)
    """The share of requests recorded when a sink is set; a version's MLflow tag
    ``gateway.records.sample`` overrides it for that version."""

    records_redact: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated input column (or tensor) names whose values never reach a record; a body
    whose columns cannot be read is recorded without its inputs while any name is set."""

    records_queue_mb: float = Field(default=64, gt=0)
    """Most memory that records waiting for their sink may hold; past it (a slow or dead sink)
    records are dropped and counted (``gateway_records_dropped_total``), never waited for."""

    records_http_mode: Literal["structured", "binary"] = "structured"
    """CloudEvents HTTP mode of an http(s) sink: ``structured`` posts batches
    (``application/cloudevents-batch+json``); ``binary`` posts one event per request, its
    attributes in ``ce-*`` headers."""

    records_batch_size: int = Field(default=100, ge=1)
    """Most records one write to a sink carries."""

    records_file_max_mb: float = Field(default=100, gt=0)
    """Size at which a file sink's ``records.jsonl`` rotates."""

    records_file_backups: int = Field(default=10, ge=0)
    """Rotated files a file sink keeps (``records.jsonl.1`` ...); older ones are deleted."""

    records_redis_maxlen: int = Field(default=100_000, ge=1)
    """A Redis stream sink's approximate length bound (``XADD ... MAXLEN ~``)."""

    records_traces: bool = False
    """Each recorded request (GATEWAY_RECORDS_SAMPLE's share) answered as an MLflow trace in the
    experiment ``records_traces_experiment``, linked to its version's LoggedModel where it has
    one, with the request id as the tag ``gateway.request_id``; a label posted later to
    ``POST /feedback`` is logged as an expectation (``label``) on its trace. Written by a thread of
    its own in batches, behind a queue bounded like the records' (GATEWAY_RECORDS_QUEUE_MB):
    what does not fit or MLflow does not take is counted (``gateway_record_traces_total``),
    never waited for. Off (the default): no traces."""

    records_traces_experiment: str = "registry-gateway traces"
    """The MLflow experiment the traces of ``records_traces`` go to (made if missing)."""

    records_table_roll_mb: float = Field(default=64, gt=0)
    """Size at which an inference table's file (one per partition being written) is closed and
    published, and the next begun."""

    records_table_roll_seconds: float = Field(default=60, gt=0)
    """Longest an inference table's file stays open: its rows become visible to readers when it
    is closed and published, at the latest this long after its first row."""

    @field_validator("records_sink")
    @classmethod
    def _records_sink(cls, value: str | None) -> str | None:
        if value is None or not value.strip() or value.strip().lower() == "off":
            return None
        value = value.strip()
        events = ("file://", "http://", "https://", "redis://", "rediss://")
        schemes = (*events, "parquet+file://", "parquet+s3://", "delta+file://", "delta+s3://")
        if not value.lower().startswith(schemes):
            raise ValueError(
                "must be file:///dir, an http(s):// URL, redis://host:port/db?stream=name, "
                "parquet+file:///dir, parquet+s3://bucket/prefix, delta+file:///dir or delta+s3://bucket/prefix"
            )
        return value

    @field_validator("log_format", "tracing", "tracing_spans", "records_http_mode", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def records_queue_bytes(self) -> int:
        return int(self.records_queue_mb * 1024 * 1024)

    @field_validator("records_redact", mode="before")
    @classmethod
    def _split_redact(cls, value: object) -> object:
        return comma_list(value)
