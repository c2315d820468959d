"""The HTTP sink against a real local server, read back with the CloudEvents SDK."""

from __future__ import annotations

import json

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from gateway.observability.records.events import event_for
from gateway.observability.records.record import SinkFailed
from gateway.observability.records.sinks import HttpSink, sink_for
from gateway.settings import GatewaySettings
from tests.gateway.observability.records_support import a_record, closed_port, receiver

SOURCE = "/registry-gateway/test-host"


def events(n: int) -> list[CloudEvent]:
    return [event_for(a_record(request_id=f"req-{i}"), source=SOURCE, redact=()) for i in range(n)]


def test_structured_mode_posts_a_batch_of_structured_events() -> None:
    with receiver() as server:
        sink = sink_for(server.url, GatewaySettings(records_http_mode="structured"))
        assert sink.kind == "http"
        sent = events(3)
        sink.write(sent)
        sink.close()
        [request] = server.received()
    assert request.headers["content-type"] == "application/cloudevents-batch+json"
    batch = json.loads(request.body)
    read = [JSONFormat().read(None, json.dumps(item)) for item in batch]
    assert [event.get_id() for event in read] == [event.get_id() for event in sent]
    assert read[2].get_data() == sent[2].get_data()


def test_binary_mode_posts_each_event_with_ce_headers_over_one_connection() -> None:
    with receiver() as server:
        sink = sink_for(server.url, GatewaySettings(records_http_mode="binary"))
        sent = events(3)
        sink.write(sent)
        sink.close()
        received = server.received()
    assert len(received) == 3
    assert len({request.client for request in received}) == 1  # keep-alive: one connection
    for request, event in zip(received, sent, strict=True):
        assert request.headers["ce-specversion"] == "1.0" and request.headers["content-type"] == "application/json"
        read = from_binary(HTTPMessage(request.headers, request.body), JSONFormat())
        assert read.get_id() == event.get_id()
        assert read.get_type() == event.get_type() and read.get_subject() == event.get_subject()
        assert read.get_data() == event.get_data()


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_an_answer_other_than_2xx_is_a_failure(mode: str) -> None:
    with receiver(status=500) as server:
        sink = HttpSink(server.url, mode="binary" if mode == "binary" else "structured")
        with pytest.raises(SinkFailed, match="answered 500") as failed:
            sink.write(events(2))
        sink.close()
    assert failed.value.written == 0


def test_an_unreachable_endpoint_is_a_failure_without_its_credentials() -> None:
    sink = HttpSink(f"http://user:hunter2@127.0.0.1:{closed_port()}/records", mode="structured")
    with pytest.raises(SinkFailed) as failed:
        sink.write(events(1))
    sink.close()
    assert "hunter2" not in str(failed.value)
