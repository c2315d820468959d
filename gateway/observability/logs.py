"""The process's log lines: text or JSON (``GATEWAY_LOG_FORMAT``), each naming the request it
is about, and the access log, a line per HTTP request written off the request path.

:func:`logging_config` is one ``logging.config.dictConfig`` for the root logger and uvicorn's,
given to uvicorn (which applies it in every worker process) and used by the CLI's commands.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

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


def logging_config(log_format: str, level: str | int) -> dict[str, Any]:
    """Root and uvicorn's loggers, to stderr, in ``log_format`` (text or json), at ``level``."""
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
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
                "class": "logging.StreamHandler",
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


class AccessLog:
    """A line per HTTP request on the ``gateway.access`` logger. The request path only puts a
    tuple on a bounded queue; one thread makes, formats and writes the records, so a slow
    stderr (a full pipe) costs dropped lines (counted in :attr:`dropped`), never a stalled request."""

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self._queue: queue.Queue[_Line | None] = queue.Queue(max_pending)
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._write, name="access log", daemon=True)
        self._thread.start()

    def request_done(
        self, method: str, path: str, status: int, seconds: float, context: RequestContext | None, client: str | None
    ) -> None:
        try:
            self._queue.put_nowait((method, path, status, seconds, time.time(), context, client))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._thread = None

    def _write(self) -> None:
        while (line := self._queue.get()) is not None:
            try:
                self._emit(*line)
            except Exception:  # a broken handler must not end the thread (and stall nothing else)
                self.dropped += 1

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
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "client": client,
        }
        message = '%s "%s %s" %d %.1fms'
        args: tuple[Any, ...] = (client or "-", method, path, status, seconds * 1000)
        if context is not None:
            fields["request_id"] = context.request_id
            if context.model is not None:
                fields.update(model=context.model, version=context.version, arm=context.arm)
                message += " model=%s version=%s arm=%s"
                args += (context.model, context.version, context.arm or "-")
            message += " request_id=%s"
            args += (context.request_id,)
            if (trace_id := context.trace_id) is not None:
                fields["trace_id"] = trace_id
        record = self._logger.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, message, args, None, extra=fields)
        record.created = ended
        record.msecs = (ended - int(ended)) * 1000
        self._logger.handle(record)
