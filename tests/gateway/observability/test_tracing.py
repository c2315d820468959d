"""Traces read back from a real OTLP receiver (tests/support/otlp.py): a batched request
still reads as one trace, the caller's trace id is kept, and tracing off makes nothing."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.demo import IRIS
from tests.conftest import Registry, iris_split
from tests.support import models as fault_models
from tests.support.models import GatedPredict, log_pyfunc
from tests.support.otlp import OtlpProtocol, OtlpReceiver, ReceivedSpan
from tests.support.versions import entry
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

_names = itertools.count()
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


@pytest.fixture
def receiver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """A receiver, and the standard OTEL_* variables pointing the gateway's exporter at it."""
    protocol: OtlpProtocol = getattr(request, "param", "http/protobuf")
    with OtlpReceiver(protocol) as running:
        for key, value in running.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # ms: export soon, tests wait less
        yield running


def traceparent(n: int) -> tuple[str, str]:
    trace_id = f"{n:032x}"
    return trace_id, f"00-{trace_id}-{PARENT_SPAN}-01"


def of_trace(spans: list[ReceivedSpan], trace_id: str) -> dict[str, list[ReceivedSpan]]:
    found: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        if span.trace_id == trace_id:
            found.setdefault(span.name, []).append(span)
    return found


def batching_version(registry: Registry, prefix: str) -> tuple[str, int]:
    """A version whose predict the test holds (GatedPredict), tagged to batch."""
    name = f"{prefix}-{next(_names)}"
    version = registry.log(log_pyfunc, name, GatedPredict())
    registry.client.set_model_version_tag(name, str(version), "gateway.batching", "true")
    return name, version


async def queued_behind_a_held_request(
    gateway: Any, name: str, version: int, callers: list[tuple[str, str]]
) -> list[httpx.Response]:
    """One untraced request held in predict, the callers' requests (each with its traceparent)
    queued behind it, then all answered: the callers' requests run as one batch."""
    url = f"/models/{name}/versions/{version}/predict"
    fault_models.PREDICT_GATE.clear()
    fault_models.PREDICT_ENTERED.clear()
    first = asyncio.create_task(gateway.client.post(url, json={"dataframe_records": [{"x": 1.0}]}))
    await until(fault_models.PREDICT_ENTERED.is_set, what="the first request to enter predict")
    rest = [
        asyncio.create_task(
            gateway.client.post(url, json={"dataframe_records": [{"x": float(i)}]}, headers={"traceparent": header})
        )
        for i, (_, header) in enumerate(callers, start=2)
    ]
    queued = len(callers)
    await until(
        lambda: entry(gateway.services.cache, name, version).model.queue.waiting == queued, what=f"{queued} queued"
    )
    fault_models.PREDICT_GATE.set()
    return list(await asyncio.gather(first, *rest))


async def test_a_batched_request_reads_as_one_trace_under_the_callers_trace_id(
    registry: Registry, make_gateway: Callable[..., Any], receiver: OtlpReceiver
) -> None:
    name, version = batching_version(registry, "traced-batch")
    route = "POST /models/{name}/versions/{version}/predict"
    async with make_gateway(tracing="otlp", batch_max_wait_ms=0) as gateway:
        callers = [traceparent(n) for n in (0xA1, 0xA2, 0xA3)]
        answers = await queued_behind_a_held_request(gateway, name, version, callers)
        assert [a.status_code for a in answers] == [200] * 4
        for (trace_id, _), answer in zip(callers, answers[1:], strict=True):
            assert answer.headers["x-trace-id"] == trace_id  # the caller's trace, continued

        def complete(spans: list[ReceivedSpan]) -> bool:
            return all({route, "queue", "batch"} <= of_trace(spans, t).keys() for t, _ in callers)

        spans = receiver.wait_for(complete)
        # the latency split counts the same: four requests waited in the queue, two batches ran
        labels = {"model": name, "version": str(version)}
        sample = gateway.services.metrics.registry.get_sample_value
        assert sample("gateway_queue_seconds_count", labels) == 4
        assert sample("gateway_compute_seconds_count", labels) == 2
        for stage in ("decode", "encode"):
            assert sample("gateway_codec_seconds_count", {**labels, "stage": stage}) == 2

    shared = []
    for (trace_id, _), answer in zip(callers, answers[1:], strict=True):
        found = of_trace(spans, trace_id)
        (server,) = found[route]
        assert server.kind == "SERVER"
        assert server.parent_span_id == PARENT_SPAN  # a child of the caller's span
        assert server.resource["service.name"] == "gateway-under-test"
        assert server.attributes["gateway.model"] == name
        assert server.attributes["gateway.version"] == version
        assert server.attributes["http.response.status_code"] == 200
        assert server.attributes["gateway.request_id"] == answer.headers["x-request-id"]
        (queue,) = found["queue"]
        (batch,) = found["batch"]
        assert queue.parent_span_id == server.span_id and batch.parent_span_id == server.span_id
        assert queue.end_ns <= batch.start_ns + 1_000  # it waited, then its batch ran (µs of rounding)
        assert batch.attributes["gateway.batch.size"] == 3  # the three that queued behind the first
        ran = found.get("predict", [])
        if ran:  # the batch's own span (the first sampled request's): its stages, links to all
            shared.append(batch)
            assert {s.parent_span_id for s in found["decode"] + ran + found["encode"]} == {batch.span_id}
    (ran_it,) = shared  # exactly one batch span ran the batch; the others link to it
    requests = {of_trace(spans, t)[route][0].span_id for t, _ in callers}
    assert {span_id for _, span_id, _ in ran_it.links} == requests
    for trace_id, _ in callers:
        (batch,) = of_trace(spans, trace_id)["batch"]
        if batch is not ran_it:
            assert [(t, s) for t, s, _ in batch.links] == [(ran_it.trace_id, ran_it.span_id)]


async def test_with_request_spans_only_a_batched_request_carries_its_split_as_attributes(
    registry: Registry, make_gateway: Callable[..., Any], receiver: OtlpReceiver
) -> None:
    """GATEWAY_TRACING_SPANS=requests: one span a request, no queue or batch spans; the batch's
    times are the request span's attributes, the same the latency split's metrics count."""
    name, version = batching_version(registry, "traced-requests")
    route = "POST /models/{name}/versions/{version}/predict"
    async with make_gateway(tracing="otlp", tracing_spans="requests", batch_max_wait_ms=0) as gateway:
        callers = [traceparent(n) for n in (0xB1, 0xB2)]
        answers = await queued_behind_a_held_request(gateway, name, version, callers)
        assert [a.status_code for a in answers] == [200] * 3
        spans = receiver.wait_for(lambda got: all(route in of_trace(got, t) for t, _ in callers))
    for trace_id, _ in callers:
        found = of_trace(spans, trace_id)
        assert set(found) == {route}  # the request's span alone
        (server,) = found[route]
        attributes = server.attributes
        assert attributes["gateway.batch.size"] == 2  # the two that queued behind the first
        assert attributes["gateway.queue.seconds"] > 0
        times = [attributes[f"gateway.batch.{stage}.seconds"] for stage in ("decode", "predict", "encode")]
        assert all(t >= 0 for t in times)
        assert attributes["gateway.queue.seconds"] + sum(times) <= (server.end_ns - server.start_ns) / 1e9


@pytest.mark.parametrize("receiver", ["grpc"], indirect=True)
async def test_grpc_exporter_and_background_spans(
    registry: Registry, make_gateway: Callable[..., Any], receiver: OtlpReceiver
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc; a cold load has a span of its own, as does a sync pass."""
    async with make_gateway(tracing="otlp") as gateway:
        answer = await gateway.client.post(
            f"/models/{IRIS}/versions/1/predict", json=iris_split([[5.1, 3.5, 1.4, 0.2]])
        )
        assert answer.status_code == 200
        await gateway.services.poller.sync(reason="test")
        trace_id = answer.headers["x-trace-id"]

        def seen(spans: list[ReceivedSpan]) -> bool:
            names = {s.name for s in spans}
            return {"model.load", "registry.sync"} <= names and any(s.trace_id == trace_id for s in spans)

        spans = receiver.wait_for(seen)
    load = next(s for s in spans if s.name == "model.load")
    assert load.attributes == {"gateway.model": IRIS, "gateway.version": 1}
    server = next(s for s in spans if s.trace_id == trace_id and s.kind == "SERVER")
    assert server.parent_span_id is None  # no traceparent sent: a trace of its own


async def test_sampled_out_and_off_make_no_spans_and_say_no_trace(
    registry: Registry, make_gateway: Callable[..., Any], receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    body = iris_split([[5.1, 3.5, 1.4, 0.2]])
    async with make_gateway(tracing="otlp") as gateway:
        answer = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=body)
        assert answer.status_code == 200 and "x-trace-id" not in answer.headers
        assert answer.headers["x-request-id"]
    # closing the gateway flushed its exporter: had a span been made, it would be here
    assert [s.name for s in receiver.spans() if s.resource.get("service.name") == "gateway-under-test"] == []
    os.environ.pop("OTEL_TRACES_SAMPLER")
    async with make_gateway() as gateway:  # GATEWAY_TRACING off (the default)
        assert not gateway.services.tracing.enabled
        answer = await gateway.client.post(
            f"/models/{IRIS}/versions/1/predict", json=body, headers={"traceparent": traceparent(7)[1]}
        )
        assert answer.status_code == 200 and "x-trace-id" not in answer.headers
