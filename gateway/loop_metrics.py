"""Counters and histograms for the metrics every request updates, kept as plain numbers.

prometheus_client's ``Counter.inc`` and ``Histogram.observe`` take a lock and pass through
several layers of checks on every call; the five or six such calls a prediction makes were 8%
of the gateway's CPU at 32 connections (bench/lane_profile.py). These families are updated only
from the event loop's thread, where every request's accounting happens, so an update is a
dict lookup and an addition with no lock; a scrape (any thread) reads the numbers as they are,
and registers them through the standard collector interface, so ``/metrics``, its names and
its exposition are those a ``Counter`` or ``Histogram`` of the same name would give (with
``_created``).

Only for metrics updated on the event loop: anything a worker thread counts stays a
prometheus_client metric.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class LoopCounter:
    """A labelled counter (``<name>_total``, ``<name>_created``) for the event loop's thread."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *, registry: CollectorRegistry
    ) -> None:
        self.name = name
        self._documentation = documentation
        self.labelnames = list(labelnames)
        self._values: dict[Labels, list[float]] = {}  # labels -> [value, created]
        registry.register(self)

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        value = self._values.get(labels)
        if value is None:
            self._values[labels] = [amount, time.time()]
        else:
            value[0] += amount

    def values(self) -> dict[Labels, float]:
        """Each series' value now (read on the event loop's thread, where it is updated)."""
        return {labels: value for labels, (value, _) in list(self._values.items())}

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self._documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self._documentation, labels=self.labelnames)
        for labels, (value, created) in list(self._values.items()):
            family.add_metric(labels, value, created=created)
        yield family


class LoopHistogram:
    """A labelled histogram (``_bucket``, ``_count``, ``_sum``, ``_created``) for the event
    loop's thread; ``buckets`` are the upper bounds, ``+Inf`` added."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self._documentation = documentation
        self.labelnames = list(labelnames)
        self._bounds = [float(bound) for bound in buckets]
        # ``le`` as prometheus_client writes it (``1.0``, ``+Inf``), so the series are the same.
        self._bucket_names = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[Labels, _Series] = {}
        registry.register(self)

    def observe(self, labels: Labels, value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = _Series(len(self._bounds) + 1)
        series.counts[bisect.bisect_left(self._bounds, value)] += 1  # the first bound >= value
        series.sum += value

    def buckets(self) -> dict[Labels, tuple[dict[str, int], float]]:
        """Each series' bucket counts now (upper bound as ``le`` -> observations in that bucket,
        not cumulative) and its sum; read on the event loop's thread, where they are updated."""
        return {
            labels: (dict(zip(self._bucket_names, series.counts, strict=True)), series.sum)
            for labels, series in list(self._series.items())
        }

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self._documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self._documentation, labels=self.labelnames)
        for labels, series in list(self._series.items()):
            cumulative, buckets = 0.0, []
            for bucket, count in zip(self._bucket_names, list(series.counts), strict=True):
                cumulative += count
                buckets.append((bucket, cumulative))
            family.add_metric(labels, buckets, series.sum)
            named = dict(zip(self.labelnames, labels, strict=True))
            family.samples.append(Sample(f"{self.name}_created", named, series.created))
        yield family


class _Series:
    __slots__ = ("counts", "sum", "created")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()
