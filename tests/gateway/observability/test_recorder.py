"""The recorder: records off the request path, a bound in bytes whatever the sink does, counted
drops, sampling."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from gateway.metrics import GatewayMetrics
from gateway.observability.records.recorder import Recorder, record_size, recorder_for
from gateway.observability.records.sinks import FILE_NAME, EventSink, FileSink, HttpSink, Sink, sink_for
from gateway.settings import GatewaySettings
from tests.gateway.observability.records_support import a_record, receiver, silent_server
from tests.support.waiting import wait_until

SOURCE = "/registry-gateway/test-host"


def dropped(metrics: GatewayMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("gateway_records_dropped_total", {"reason": reason}) or 0.0


def written(metrics: GatewayMetrics, sink: str) -> float:
    return metrics.registry.get_sample_value("gateway_records_written_total", {"sink": sink}) or 0.0


def a_recorder(sink: Sink, metrics: GatewayMetrics, **options: object) -> Recorder:
    settings: dict[str, object] = {
        "sample": 1.0,
        "redact": (),
        "max_bytes": 1 << 20,
        "batch_size": 100,
        "source": SOURCE,
    } | options
    return Recorder(sink, metrics=metrics, **settings)  # type: ignore[arg-type]


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


def test_offered_records_are_written_in_order_and_counted(tmp_path: Path, metrics: GatewayMetrics) -> None:
    recorder = a_recorder(FileSink(tmp_path, max_bytes=1 << 30, backups=1), metrics, batch_size=7)
    recorder.start()
    for i in range(50):
        recorder.offer(a_record(request_id=f"req-{i}"))
    recorder.close()
    lines = (tmp_path / FILE_NAME).read_bytes().splitlines()
    assert [JSONFormat().read(None, line).get_extension("requestid") for line in lines] == [
        f"req-{i}" for i in range(50)
    ]
    assert written(metrics, "file") == 50
    assert recorder.queued_bytes == 0


def test_a_hung_sink_never_blocks_offer_and_the_queue_stays_within_its_bytes(metrics: GatewayMetrics) -> None:
    record = a_record()
    size = record_size(record)
    max_bytes = 50 * size + size // 2
    offers = 5000
    with silent_server() as silent:
        # The server accepts and never answers: the writer's POST hangs for the client's whole
        # timeout, far longer than this test.
        recorder = a_recorder(HttpSink(silent.url, mode="structured", timeout=120), metrics, max_bytes=max_bytes)
        recorder.start()
        recorder.offer(record)
        assert silent.accepted.wait(30), "the writer never reached the sink"
        most = 0

        def offer_all() -> None:
            nonlocal most
            for _ in range(offers):
                recorder.offer(record)
                most = max(most, recorder.queued_bytes)

        offering = threading.Thread(target=offer_all)
        offering.start()
        offering.join(60)
        assert not offering.is_alive(), "offer() blocked while the writer was stuck"
        # The batch being written counts against the bound too: 50 fit, one of them in flight.
        assert most == recorder.queued_bytes == 50 * size <= max_bytes
        assert dropped(metrics, "queue_full") == offers - 49
        started = time.monotonic()
        recorder.close(timeout=0.5)
        # ...within its timeout, not the 120 s the write it leaves behind could take
        assert time.monotonic() - started < 5
        assert dropped(metrics, "shutdown") == 49
        assert recorder.queued_bytes == size
    # The server gone, the abandoned write fails, is counted, and its thread ends.
    wait_until(lambda: dropped(metrics, "sink_error") == 1, timeout=30, what="the abandoned write to end")


def test_a_failing_sink_drops_and_counts_and_warns_once(
    metrics: GatewayMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    with receiver(status=500) as server:
        recorder = a_recorder(sink_for(server.url, GatewaySettings()), metrics, batch_size=1)
        with caplog.at_level(logging.WARNING, logger="gateway.records"):
            for i in range(3):
                recorder.offer(a_record(request_id=f"req-{i}"))
            recorder.start()
            # Each failure backs off (0.1 s, then 0.2 s) before the next batch is tried.
            wait_until(lambda: dropped(metrics, "sink_error") == 3, timeout=20, what="three failed writes")
            server.status = 200
            recorder.offer(a_record(request_id="after"))
            recorder.close()
        assert len(server.received()) == 4
    assert written(metrics, "http") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and server.url in r.getMessage()]
    assert len(warnings) == 1, warnings  # at most one a 30 s
    assert "answered 500" in warnings[0] and "1 dropped since the last warning" in warnings[0]


def test_a_record_that_cannot_be_made_is_dropped_alone(tmp_path: Path, metrics: GatewayMetrics) -> None:
    recorder = a_recorder(FileSink(tmp_path, max_bytes=1 << 30, backups=1), metrics)
    recorder.offer(a_record(request_id="before"))
    recorder.offer(a_record(request_id="no time", time=math.nan))  # no event has no time
    recorder.offer(a_record(request_id="after"))
    recorder.start()
    recorder.close()
    assert dropped(metrics, "unreadable") == 1
    assert written(metrics, "file") == 2
    assert len((tmp_path / FILE_NAME).read_bytes().splitlines()) == 2


def test_offer_never_raises_even_for_garbage(metrics: GatewayMetrics, tmp_path: Path) -> None:
    recorder = a_recorder(FileSink(tmp_path, max_bytes=1 << 30, backups=1), metrics)
    recorder.offer(a_record(request=None))  # type: ignore[arg-type]
    assert dropped(metrics, "unreadable") == 1
    recorder.close()


def test_after_close_records_are_dropped_as_shutdown(tmp_path: Path, metrics: GatewayMetrics) -> None:
    recorder = a_recorder(FileSink(tmp_path, max_bytes=1 << 30, backups=1), metrics)
    recorder.offer(a_record())
    recorder.offer(a_record())
    recorder.close()  # never started: nothing was written, and the sink is closed
    recorder.offer(a_record())
    recorder.start()  # does nothing once closed
    assert dropped(metrics, "shutdown") == 3
    assert recorder.queued_bytes == 0
    assert not (tmp_path / FILE_NAME).exists()


class FlakySink(EventSink):
    """A sink with a bug (it raises something other than SinkFailed) once: a fault no real
    sink can be made to produce on purpose."""

    kind = "file"

    def __init__(self) -> None:
        self.events: list[CloudEvent] = []
        self.failed = False

    def write(self, events: list[CloudEvent]) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug")
        self.events += events

    def close(self) -> None:
        pass


def test_a_sink_bug_costs_its_batch_not_the_writer(metrics: GatewayMetrics) -> None:
    sink = FlakySink()
    recorder = a_recorder(sink, metrics, batch_size=2)
    for _ in range(4):
        recorder.offer(a_record())
    recorder.start()
    wait_until(lambda: len(sink.events) == 2, timeout=20, what="the batch after the failed one")
    recorder.close()
    assert dropped(metrics, "sink_error") == 2 and written(metrics, "file") == 2


# --- sampling ---


@pytest.fixture
def seeded() -> Iterator[None]:
    state = random.getstate()
    random.seed(20240611)
    yield
    random.setstate(state)


def test_sampling_at_0_and_1_never_draws(metrics: GatewayMetrics, tmp_path: Path, seeded: None) -> None:
    sink = FileSink(tmp_path, max_bytes=1 << 20, backups=0)
    state = random.getstate()
    never, always = a_recorder(sink, metrics, sample=0.0), a_recorder(sink, metrics, sample=1.0)
    assert not any(never.sampled() for _ in range(1000))
    assert all(always.sampled() for _ in range(1000))
    assert never.sampled(override=1.0) and not always.sampled(override=0.0)  # a version's tag wins
    assert random.getstate() == state
    sink.close()


@pytest.mark.parametrize(("sample", "override", "ratio"), [(0.25, None, 0.25), (0.9, 0.1, 0.1), (0.0, 0.5, 0.5)])
def test_sampling_draws_the_ratio(
    metrics: GatewayMetrics, tmp_path: Path, seeded: None, sample: float, override: float | None, ratio: float
) -> None:
    sink = FileSink(tmp_path, max_bytes=1 << 20, backups=0)
    recorder = a_recorder(sink, metrics, sample=sample)
    n = 20_000
    hits = sum(recorder.sampled(override) for _ in range(n))
    # Binomial(n, ratio): 5 standard deviations leave about one failure in 1.7 million seeds.
    assert abs(hits - n * ratio) <= 5 * math.sqrt(n * ratio * (1 - ratio))
    sink.close()


# --- from the settings ---


def test_no_sink_no_recorder(metrics: GatewayMetrics) -> None:
    assert recorder_for(GatewaySettings(records_sink=None), metrics) is None


def test_the_recorder_from_the_settings_reports_its_queue(tmp_path: Path, metrics: GatewayMetrics) -> None:
    settings = GatewaySettings(records_sink=f"file://{tmp_path}", records_queue_mb=1, records_sample=0.5)
    recorder = recorder_for(settings, metrics)
    assert recorder is not None
    record = a_record()
    recorder.offer(record)  # not started: it waits
    assert metrics.registry.get_sample_value("gateway_records_queued_bytes") == record_size(record)
    recorder.start()
    recorder.close()
    assert metrics.registry.get_sample_value("gateway_records_queued_bytes") == 0
    assert written(metrics, "file") == 1
