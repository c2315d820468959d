"""The process's own metrics on /metrics: CPU, memory and the garbage collector's work."""

from __future__ import annotations

import gc

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import GatewayMetrics


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def test_collections_are_counted_by_generation_as_the_collector_makes_them() -> None:
    metrics = GatewayMetrics()
    full = ("python_gc_collections_total", (("generation", "2"),))
    before = _samples(metrics)
    assert {(name, labels) for name, labels in before if name.startswith("python_gc_")} == {
        (f"python_gc_{what}_total", (("generation", str(n)),))
        for what in ("collections", "objects_collected", "objects_uncollectable")
        for n in range(3)
    }
    gc.collect()
    gc.collect()
    assert _samples(metrics)[full] >= before[full] + 2  # read at scrape time: the new ones count


def test_the_process_own_cpu_and_memory_are_exported() -> None:
    samples = {name for name, _ in _samples(GatewayMetrics())}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= samples


def test_many_registries_in_one_process_leave_the_collector_no_hooks() -> None:
    hooks = len(gc.callbacks)
    for _ in range(5):
        GatewayMetrics().render()
    assert len(gc.callbacks) == hooks
