"""The process's log lines: text or JSON (``GATEWAY_LOG_FORMAT``), each naming the request it
is about, and the access log, a line per HTTP request written off the request path.

:func:`logging_config` is one ``logging.config.dictConfig`` for the root logger and uvicorn's,
given to uvicorn (which applies it in every worker process) and used by the CLI's commands.

The access log's lines go through :mod:`logging` like any other, unless the ``gateway.access``
logger's only way out is the handler :func:`logging_config` made: then its writer thread
formats them itself, the very same text or JSON, and writes what gathered in one call. Through
``logging`` a line cost 40 us (text) to 66 us (JSON) of the CPU the requests run on; this way
a few. Add a handler or a filter (or another formatter) and every line goes through
``logging`` again, so your configuration sees each one.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

from gateway.observability.context import RequestContext, current

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER = "gateway.access"


class RequestFilter(logging.Filter):
    """Puts the id (and trace id) of the request being served on each record made in its task;
    a record that already carries one (the access log's) keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            context = current()
            if context is not None:
                record.request_id = context.request_id
                trace_id = context.trace_id
                if trace_id is not None:
                    record.trace_id = trace_id
        return True


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, then ``request_id=...`` when the line is about a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None and record.name != ACCESS_LOGGER:  # the access line names it already
            line = f"{line} request_id={request_id}"
        return line


def iso_time(created: float) -> str:
    """A record's time as the JSON lines write it: ISO 8601 in UTC, to the millisecond, with
    its zone (``2026-11-25T12:15:43.123+00:00``)."""
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")


class JsonLinesFormatter(JsonFormatter):
    """python-json-logger's formatter, as :func:`logging_config` sets it up (by its own name, so
    the access log knows the lines it would make): the time in ISO 8601 with its zone, and
    without uvicorn's ``color_message`` (its message again, with ANSI color codes)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return iso_time(record.created)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data.pop("color_message", None)


class GatewayStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stream handler :func:`logging_config` makes (by its own name, for the same reason)."""


def logging_config(log_format: str, level: str | int) -> dict[str, Any]:
    """Root and uvicorn's loggers, to stderr, in ``log_format`` (text or json), at ``level``."""
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": JsonLinesFormatter,
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"()": TextFormatter}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestFilter}},
        "formatters": {"gateway": formatter},
        "handlers": {
            "stderr": {
                "()": GatewayStreamHandler,
                "stream": "ext://sys.stderr",
                "formatter": "gateway",
                "filters": ["request"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        # uvicorn's own loggers print through the root's handler (uvicorn's access log is off:
        # the gateway writes its own, naming the model and version)
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
    }


# method, path, status, seconds, wall time at the end, request context, client address
_Line = tuple[str, str, int, float, float, RequestContext | None, str | None]
_Direct = tuple[GatewayStreamHandler, Literal["text", "json"]]

FLUSH_SECONDS = 0.05  # how long a line may wait for its writer: the lines of 50 ms go in one write


class AccessLog:
    """A line per HTTP request on the ``gateway.access`` logger. The request path only appends
    a tuple to a bounded deque; one thread, waking every :data:`FLUSH_SECONDS`, makes, formats
    and writes the lines (see the module for how), so a slow stderr (a full pipe) costs dropped
    lines (counted in :attr:`dropped`), never a stalled request."""

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self._pending: collections.deque[_Line] = collections.deque()
        self._max_pending = max_pending
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._second = -1
        self._stamp = ""
        self.dropped = 0

    def start(self) -> None:
        self._closing.clear()
        self._thread = threading.Thread(target=self._write, name="access log", daemon=True)
        self._thread.start()

    def request_done(
        self, method: str, path: str, status: int, seconds: float, context: RequestContext | None, client: str | None
    ) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        self._pending.append((method, path, status, seconds, time.time(), context, client))

    def close(self, timeout: float = 2.0) -> None:
        """Write what waits, then stop the writer."""
        if self._thread is None:
            return
        self._closing.set()
        self._thread.join(timeout)
        self._thread = None

    def _write(self) -> None:
        while not self._closing.wait(FLUSH_SECONDS):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        lines: list[_Line] = []
        pending = self._pending
        while pending and len(lines) < self._max_pending:
            lines.append(pending.popleft())
        if not lines:
            return
        direct = self._direct()
        if direct is None:
            for line in lines:
                try:
                    self._emit(*line)
                except Exception:  # a broken handler must not end the thread (and stall nothing else)
                    self.dropped += 1
            return
        handler, kind = direct
        text = "".join([self.format_line(kind, *line) for line in lines])
        try:
            with handler.lock:  # type: ignore[union-attr]  # a StreamHandler always has its lock
                handler.stream.write(text)
                handler.stream.flush()
        except Exception:  # a closed or broken stream: these lines are lost, the thread goes on
            self.dropped += len(lines)

    def _direct(self) -> _Direct | None:
        """The handler to write to directly, and in which format, when it is the only way out
        of the access logger and nothing else would see the lines (see the module)."""
        logger: logging.Logger | None = self._logger
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        handlers: list[logging.Handler] = []
        while logger is not None:
            if logger.filters:
                return None
            handlers.extend(logger.handlers)
            logger = logger.parent if logger.propagate else None
        if len(handlers) != 1 or type(handlers[0]) is not GatewayStreamHandler:
            return None
        handler = handlers[0]
        if handler.level > logging.INFO or any(type(f) is not RequestFilter for f in handler.filters):
            return None
        formatter = type(handler.formatter)
        if formatter is TextFormatter:
            return handler, "text"
        if formatter is JsonLinesFormatter:
            return handler, "json"
        return None

    def format_line(
        self,
        kind: Literal["text", "json"],
        method: str,
        path: str,
        status: int,
        seconds: float,
        ended: float,
        context: RequestContext | None,
        client: str | None,
    ) -> str:
        """The line ``logging`` would write through :func:`logging_config`'s handler, with its
        line end (tests/gateway/observability/test_logs.py compares the two)."""
        message = self._message(method, path, status, seconds, context, client)
        if kind == "text":
            second = int(ended)
            if second != self._second:  # the stamp logging.Formatter.formatTime makes, once a second
                self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            return f"{self._stamp},{int((ended - second) * 1000):03d} INFO {ACCESS_LOGGER}: {message}\n"
        fields: dict[str, Any] = {
            "time": iso_time(ended),
            "level": "INFO",
            "logger": ACCESS_LOGGER,
            "message": message,
            **self._fields(method, path, status, seconds, context, client),
        }
        return json.dumps(fields) + "\n"

    @staticmethod
    def _message(
        method: str, path: str, status: int, seconds: float, context: RequestContext | None, client: str | None
    ) -> str:
        """The line's text, after the stamp: the same on both ways out."""
        message = f'{client or "-"} "{method} {path}" {status} {seconds * 1000:.1f}ms'
        if context is not None:
            if context.model is not None:
                message += f" model={context.model} version={context.version} arm={context.arm or '-'}"
            message += f" request_id={context.request_id}"
            if context.key_id is not None:  # who asked: a key's name, or oidc:<sub> for a token
                message += f" key_id={context.key_id}"
        return message

    @staticmethod
    def _fields(
        method: str, path: str, status: int, seconds: float, context: RequestContext | None, client: str | None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "client": client,
        }
        if context is not None:
            fields["request_id"] = context.request_id
            if context.key_id is not None:
                fields["key_id"] = context.key_id
            if context.model is not None:
                fields.update(model=context.model, version=context.version, arm=context.arm)
            if (trace_id := context.trace_id) is not None:
                fields["trace_id"] = trace_id
        return fields

    def _emit(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        ended: float,
        context: RequestContext | None,
        client: str | None,
    ) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        fields = self._fields(method, path, status, seconds, context, client)
        message = self._message(method, path, status, seconds, context, client)
        record = self._logger.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, message, (), None, extra=fields)
        record.created = ended
        record.msecs = (ended - int(ended)) * 1000
        self._logger.handle(record)
