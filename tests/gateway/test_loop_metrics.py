"""The loop-owned counters and histograms expose exactly what prometheus_client's would."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 1, 30)
# Below, on and between the bounds, past the last one, zero and a negative value.
VALUES = (0.0005, 0.001, 0.0010001, 0.01, 0.5, 1.0, 29.9, 30.0, 31.0, 0.0, -1.0)


def _exposition(registry: CollectorRegistry) -> str:
    """/metrics as text, with each series' creation time (a clock reading) replaced."""
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", generate_latest(registry).decode())


def test_the_same_observations_give_the_same_exposition_as_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    counter = Counter("gw_requests", "Requests", ["model", "status"], registry=theirs)
    histogram = Histogram("gw_seconds", "Seconds", ["model"], buckets=BUCKETS, registry=theirs)
    loop_counter = LoopCounter("gw_requests", "Requests", ["model", "status"], registry=ours)
    loop_histogram = LoopHistogram("gw_seconds", "Seconds", ["model"], buckets=BUCKETS, registry=ours)
    for index, value in enumerate(VALUES):
        model, status = ("iris", "200") if index % 3 else ("wine", "400")
        counter.labels(model, status).inc(index)
        loop_counter.inc((model, status), index)
        histogram.labels(model).observe(value)
        loop_histogram.observe((model,), value)
    assert _exposition(ours) == _exposition(theirs)
    assert ours.get_sample_value("gw_seconds_bucket", {"model": "iris", "le": "1.0"}) == theirs.get_sample_value(
        "gw_seconds_bucket", {"model": "iris", "le": "1.0"}
    )
    assert ours.get_sample_value("gw_requests_total", {"model": "wine", "status": "400"}) == 0 + 3 + 6 + 9


def test_a_metric_name_can_be_registered_once_per_registry() -> None:
    registry = CollectorRegistry(auto_describe=True)
    LoopCounter("gw_requests", "Requests", ["model"], registry=registry)
    try:
        Counter("gw_requests", "Requests again", ["model"], registry=registry)
    except ValueError as exc:
        assert "Duplicated timeseries" in str(exc)
    else:
        raise AssertionError("a second gw_requests was registered")
