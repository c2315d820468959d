"""Request ids, the access log and JSON logs, as a user of a running gateway meets them."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.demo import IRIS
from gateway.observability import context
from gateway.observability.logs import ACCESS_LOGGER, AccessLog, RequestFilter, logging_config
from tests.conftest import Registry, iris_split
from tests.support.servers import gateway_server
from tests.support.waiting import until, wait_until

pytestmark = pytest.mark.anyio
ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_a_request_id_is_echoed_or_made_and_names_the_access_line(
    make_gateway: Callable[..., Any], lines: Lines
) -> None:
    async with make_gateway() as gateway:
        sent = await gateway.client.post(
            f"/models/{IRIS}/versions/1/predict", json=ROW, headers={"X-Request-ID": "order-42"}
        )
        made = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=ROW)
        bad = await gateway.client.post(
            f"/models/{IRIS}/versions/1/predict",
            content=b"{",
            headers={"X-Request-ID": "\x01", "Content-Type": "application/json"},
        )
        probe = await gateway.client.get("/health/live")
        assert sent.headers["x-request-id"] == "order-42"
        assert len(made.headers["x-request-id"]) == 16 and made.headers["x-request-id"] != "order-42"
        assert bad.status_code == 400 and bad.headers["x-request-id"] != "\x01"  # not printable: a new id
        assert probe.headers["x-request-id"]

        def access() -> list[logging.LogRecord]:
            return [r for r in lines.records if r.name == ACCESS_LOGGER]

        await until(lambda: len(access()) >= 4, what="four access lines")
    by_id = {getattr(r, "request_id", None): r for r in access()}
    line = by_id["order-42"]
    text = line.getMessage()
    assert f"model={IRIS} version=1 arm=named request_id=order-42" in text and " 200 " in text
    assert line.model == IRIS and line.version == 1 and line.status == 200
    assert by_id[bad.headers["x-request-id"]].status == 400
    assert "/health/live" in by_id[probe.headers["x-request-id"]].getMessage()


def test_the_access_log_drops_lines_rather_than_wait_for_a_stuck_writer() -> None:
    log = AccessLog(max_pending=3)  # never started: nothing drains it, as with a stuck stderr
    for _ in range(10):
        log.request_done("POST", "/p", 200, 0.001, None, None)
    assert log.dropped == 7


def test_json_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    import logging.config

    from gateway.observability import context

    logging.config.dictConfig(logging_config("json", logging.INFO))
    try:
        request = context.begin(b"abc-1")
        token = context.enter(request)
        try:
            logging.getLogger("gateway.test").warning("about %s", "this request")
        finally:
            context.leave(token)
        logging.getLogger("gateway.test").warning("about nothing")
    finally:
        logging.config.dictConfig(logging_config("text", logging.WARNING))
    first, second = (json.loads(line) for line in capsys.readouterr().err.strip().splitlines()[-2:])
    assert first["message"] == "about this request" and first["request_id"] == "abc-1"
    assert first["level"] == "WARNING" and first["logger"] == "gateway.test" and "time" in first
    assert "request_id" not in second


def test_serve_logs_json_lines_with_its_own_access_log(server_registry: Registry, tmp_path: Path) -> None:
    """A real `registry-gateway serve` with GATEWAY_LOG_FORMAT=json: every line it logs is a
    JSON object, uvicorn's included, and the access line names the model and the request."""
    import httpx

    env = {"GATEWAY_WARM_ALIASES": "", "GATEWAY_LOG_FORMAT": "json"}
    process, base = gateway_server(tracking_uri=server_registry.tracking_uri, workdir=tmp_path, env=env)
    process.start()
    try:
        headers = {"X-Request-ID": "json-1"}
        answer = httpx.post(f"{base}/models/{IRIS}/versions/1/predict", json=ROW, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text

        def logged() -> list[dict[str, Any]]:
            text = process.log.read_text()
            if not text.endswith("\n"):  # the writer is part-way through its last line
                text = text[: text.rfind("\n") + 1]
            return [json.loads(line) for line in text.splitlines() if line.strip()]  # every whole line: JSON

        until_sync(lambda: any(r.get("request_id") == "json-1" for r in logged()), what="the access line")
    finally:
        process.stop()
    records = logged()
    access = [r for r in records if r["logger"] == ACCESS_LOGGER and r.get("request_id") == "json-1"]
    assert len(access) == 1, records
    assert access[0]["model"] == IRIS and access[0]["version"] == 1 and access[0]["status"] == 200
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert any(r["logger"] == "gateway.cli" and r["message"].startswith("state database: ") for r in records)
    assert not [r for r in records if "color_message" in r]  # uvicorn's copy with ANSI codes
    for record in records:  # ISO 8601, with its zone, the same on every line (the access log's own too)
        stamp = datetime.fromisoformat(record["time"])
        assert stamp.utcoffset() == timedelta(0) and record["time"].endswith("+00:00"), record


def until_sync(predicate: Callable[[], bool], *, what: str) -> None:
    wait_until(predicate, timeout=30, what=what)


@pytest.fixture
def configured() -> Iterator[Callable[[str], io.StringIO]]:
    """logging_config applied, its handler writing into a string; the suite's config after."""
    saved = logging.getLogger().handlers[:], logging.getLogger().level

    def configure(log_format: str) -> io.StringIO:
        logging.config.dictConfig(logging_config(log_format, logging.INFO))
        stream = io.StringIO()
        logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
        return stream

    yield configure
    root = logging.getLogger()
    root.handlers[:], level = saved
    root.setLevel(level)


def some_lines() -> list[tuple[Any, ...]]:
    served = context.begin(b"order-42")
    served.model, served.version, served.arm, served.trace_id = "iris é", 3, "canary", "ab" * 16
    unrouted = context.begin(None)  # a request that never reached a model (a probe, a 404)
    now = time.time()
    return [
        ("POST", "/models/iris/predict", 200, 0.001234, now, served, "127.0.0.1:5555"),
        ("GET", "/health/live", 200, 0.0002, now + 0.999, unrouted, None),
        ("GET", '/odd "path" ü', 404, 1.5, now + 1.0004, None, "[::1]:80"),
    ]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_access_logs_own_writer_writes_exactly_what_logging_would(
    configured: Callable[[str], io.StringIO], log_format: str
) -> None:
    stream = configured(log_format)
    log, lines = AccessLog(), some_lines()
    for line in lines:
        log._emit(*line)  # through logging, as with a handler of the user's own
    through_logging = stream.getvalue()
    assert through_logging.count("\n") == 3
    assert "".join(log.format_line(log_format, *line) for line in lines) == through_logging  # type: ignore[arg-type]

    stream.truncate(0), stream.seek(0)
    log.start()
    for method, path, status, seconds, _, request, client in lines:
        log.request_done(method, path, status, seconds, request, client)
    log.close()  # writes what waits
    written = stream.getvalue().splitlines()
    assert len(written) == 3 and all(log_format != "json" or json.loads(line) for line in written)
    assert "request_id=order-42" in written[0] and log.dropped == 0


def test_another_handler_or_filter_sends_access_lines_through_logging(configured: Callable[[str], io.StringIO]) -> None:
    configured("text")
    log, lines = AccessLog(), Lines()
    logging.getLogger().addHandler(lines)
    assert log._direct() is None  # a handler of the user's own sees each line
    logging.getLogger().removeHandler(lines)
    assert log._direct() is not None
    access = logging.getLogger(ACCESS_LOGGER)
    muted = logging.Filter("nothing")
    access.addFilter(muted)
    try:
        assert log._direct() is None
    finally:
        access.removeFilter(muted)
    logging.getLogger().handlers[0].setFormatter(logging.Formatter("%(message)s"))
    assert log._direct() is None  # a formatter the writer does not know
