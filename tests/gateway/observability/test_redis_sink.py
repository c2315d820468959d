"""The Redis stream sink, against the Redis on 127.0.0.1:6379 (tests/support/redis.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cloudevents.core.formats.json import JSONFormat

from gateway.observability.records.events import event_for
from gateway.observability.records.record import SinkFailed
from gateway.observability.records.sinks import DEFAULT_STREAM, RedisSink, sink_for
from gateway.settings import GatewaySettings
from tests.gateway.observability.records_support import a_record, closed_port
from tests.support.redis import redis_client, redis_url

SOURCE = "/registry-gateway/test-host"


@pytest.fixture
def stream() -> Iterator[tuple[Any, str]]:
    client = redis_client()
    name = f"registry-gateway:test-records:{uuid.uuid4().hex}"
    yield client, name
    client.delete(name)
    client.close()


def with_stream(name: str) -> str:
    url = redis_url()
    return f"{url}{'&' if '?' in url else '?'}stream={name}"


def test_events_are_added_to_the_named_stream_with_fields_to_filter_on(stream: tuple[Any, str]) -> None:
    client, name = stream
    sink = sink_for(with_stream(name), GatewaySettings())
    assert sink.kind == "redis"
    sent = [event_for(a_record(request_id=f"req-{i}", version=i), source=SOURCE, redact=()) for i in range(3)]
    sink.write(sent)
    sink.close()
    entries = client.xrange(name)
    assert [fields[b"version"] for _, fields in entries] == [b"0", b"1", b"2"]
    assert {fields[b"model"] for _, fields in entries} == {b"iris"}
    read = [JSONFormat().read(None, fields[b"event"]) for _, fields in entries]
    assert [event.get_id() for event in read] == [event.get_id() for event in sent]


def test_the_stream_stays_near_its_maxlen(stream: tuple[Any, str]) -> None:
    client, name = stream
    sink = sink_for(with_stream(name), GatewaySettings(records_redis_maxlen=100))
    event = event_for(a_record(), source=SOURCE, redact=())
    for _ in range(10):
        sink.write([event] * 100)
    sink.close()
    # MAXLEN ~ keeps at least maxlen entries and trims whole nodes of stream-node-max-entries
    node = int(client.config_get("stream-node-max-entries")["stream-node-max-entries"])
    assert 100 <= client.xlen(name) <= 100 + node


def test_the_stream_parameter_is_the_sinks_not_the_clients() -> None:
    assert RedisSink("redis://127.0.0.1:6379/0", maxlen=10).stream == DEFAULT_STREAM
    sink = RedisSink("redis://127.0.0.1:6379/0?stream=mine&health_check_interval=5", maxlen=10)
    assert sink.stream == "mine"
    assert "stream" not in sink._client.connection_pool.connection_kwargs  # what from_url was given


def test_an_unreachable_redis_is_a_failure() -> None:
    sink = RedisSink(f"redis://:hunter2@127.0.0.1:{closed_port()}/0", maxlen=10)
    with pytest.raises(SinkFailed) as failed:
        sink.write([event_for(a_record(), source=SOURCE, redact=())])
    sink.close()
    assert "hunter2" not in str(failed.value)
