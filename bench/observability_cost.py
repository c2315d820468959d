"""The cost of seeing inside (issue 26): ``--only observability``.

Load on the default route (``/models/iris/predict``) at 32 connections, one gateway worker
pinned like the other sections, each point on a gateway of its own (these settings are read
at start), in this order: everything off but the access log (the default); tracing on with
1% of traces sampled (``GATEWAY_TRACING=otlp``, ``OTEL_TRACES_SAMPLER=traceidratio``,
``OTEL_TRACES_SAMPLER_ARG=0.01``), exported over OTLP/HTTP to a receiver in the bench's own
process; inference records of 10% of requests to a file sink (``GATEWAY_RECORDS_SINK=file://``,
``GATEWAY_RECORDS_SAMPLE=0.1``); the access log off (``GATEWAY_ACCESS_LOG=false``: what the
default's line costs); the default again. The baseline is the mean of the two default points,
so that drift over the run shows.

This module holds the pure parts (verdicts, report); bench/run.py drives.
"""

from __future__ import annotations

from typing import Any

from report import mean_rate, point, rate, ratio_table, ratio_target

MODEL = "iris"
CONNECTIONS = 32
OFF_BEFORE, TRACING, RECORDS, NO_ACCESS_LOG, OFF_AFTER = (
    "default (tracing and records off)",
    "tracing on, 1% sampled",
    "records: 10% to a file",
    "access log off",
    "default (again)",
)
TRACING_ENV = {
    "GATEWAY_TRACING": "otlp",
    "OTEL_TRACES_SAMPLER": "traceidratio",
    "OTEL_TRACES_SAMPLER_ARG": "0.01",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
}
RECORDS_SAMPLE = "0.1"
TARGETS = {TRACING: 0.97, RECORDS: 0.95}  # issue 26: <= 3% and <= 5% of c32 throughput


def baseline(data: dict[str, Any]) -> float | None:
    return mean_rate(data, (OFF_BEFORE, OFF_AFTER))


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    if not data:
        return []
    base = baseline(data)
    out = [
        ratio_target(
            data,
            label,
            base,
            target,
            f"observability: {label} at {CONNECTIONS} conns within {100 - 100 * target:.0f}% of the default",
        )
        for label, target in TARGETS.items()
    ]
    before, after = rate(point(data, OFF_BEFORE)), rate(point(data, OFF_AFTER))
    if before and after:
        out.append(
            ("observability: the default's two points (the run's drift, information)", f"{after / before:.2f}×", None)
        )
    quiet = rate(point(data, NO_ACCESS_LOG))
    if base and quiet:
        out.append(("observability: the access log off, over the default (information)", f"{quiet / base:.2f}×", None))
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## The cost of seeing inside (issue 26)", ""]
    lines += [
        f"`POST /models/{MODEL}/predict` at {CONNECTIONS} conns, each point on a gateway of its own. "
        "**Tracing**: `GATEWAY_TRACING=otlp`, 1% of traces sampled (`traceidratio`), exported over "
        "OTLP/HTTP to a receiver in the bench process. **Records**: `GATEWAY_RECORDS_SINK=file://...`, "
        f"`GATEWAY_RECORDS_SAMPLE={RECORDS_SAMPLE}`. **Access log off**: `GATEWAY_ACCESS_LOG=false` "
        "(the default writes a line per request, off the request path). ÷ default: over the mean of "
        "the two default points.",
        "",
    ]
    lines += ratio_table(data, baseline(data), "÷ default")
    for note in data.get("notes", []):
        lines += ["", note]
    return lines
