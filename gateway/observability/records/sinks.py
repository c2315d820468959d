"""Where records go (``GATEWAY_RECORDS_SINK``): rotating JSON-lines files, an HTTP endpoint
(CloudEvents' HTTP binding), a Redis stream, or the inference tables (Parquet: ``tables.py``).
A sink is called by the recorder's one writer thread only; ``write`` raises
:class:`SinkFailed` and the recorder counts and backs off."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from gateway.observability.records.events import (
    BATCH_CONTENT_TYPE,
    EVENT_FORMAT,
    event_for,
    serialized,
    serialized_batch,
)
from gateway.observability.records.record import InferenceRecord, LabelRecord, SinkFailed

if TYPE_CHECKING:
    from cloudevents.core.v1.event import CloudEvent

    from gateway.settings import GatewaySettings

FILE_NAME = "records.jsonl"
_LOCK_NAME = ".records.lock"
DEFAULT_STREAM = "registry-gateway:records"
HTTP_TIMEOUT_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 2.0


class InvalidSinkUrl(ValueError):
    """GATEWAY_RECORDS_SINK names no sink this gateway can write."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"GATEWAY_RECORDS_SINK {shown(url)}: {reason}")


class Sink(Protocol):
    kind: str  # "file", "http", "redis", "parquet" or "delta": the label of gateway_records_written_total
    tables: bool  # takes failed requests, shadows and labels (the inference tables), not only answers

    def entry(self, item: InferenceRecord | LabelRecord, *, source: str, redact: frozenset[str]) -> Any:
        """What ``write`` takes for one record (in the writer thread); raises if it cannot be made."""
        ...

    def write(self, entries: list[Any]) -> None: ...

    def tick(self) -> None:
        """Called by the writer when it has nothing to write (every FLUSH_SECONDS): time-based work."""
        ...

    def close(self) -> None: ...


class EventSink:
    """What the CloudEvents sinks share: a record is an event; nothing is done by time."""

    tables = False

    def entry(self, item: InferenceRecord | LabelRecord, *, source: str, redact: frozenset[str]) -> CloudEvent:
        assert isinstance(item, InferenceRecord), "labels go to the inference tables only"
        return event_for(item, source=source, redact=redact)

    def tick(self) -> None:
        pass


def sink_for(url: str, settings: GatewaySettings) -> Sink:
    """The sink a URL names: ``file:///dir``, ``http(s)://...``, ``redis://host:port/db?stream=name``,
    ``parquet+file:///dir``, ``parquet+s3://bucket/prefix``, ``delta+file:///dir`` or
    ``delta+s3://bucket/prefix`` (the inference tables)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme.startswith(("parquet+", "delta+")):
        from gateway.observability.records.tables import TableSink, destination_for

        try:
            destination = destination_for(url, replica=settings.replica)
        except ValueError as exc:
            raise InvalidSinkUrl(url, str(exc)) from exc
        except OSError as exc:
            raise InvalidSinkUrl(url, f"cannot write there: {exc.strerror or exc}") from exc
        return TableSink(
            destination,
            replica=settings.replica,
            redact=settings.records_redact,
            roll_bytes=int(settings.records_table_roll_mb * 1024 * 1024),
            roll_seconds=settings.records_table_roll_seconds,
            keep_bytes=settings.records_queue_bytes,
        )
    if scheme == "file":
        directory = file_sink_directory(url)
        try:
            return FileSink(
                directory,
                max_bytes=int(settings.records_file_max_mb * 1024 * 1024),
                backups=settings.records_file_backups,
            )
        except OSError as exc:
            raise InvalidSinkUrl(url, f"cannot write in {directory}: {exc.strerror or exc}") from exc
    if scheme in ("http", "https"):
        if not urlsplit(url).hostname:
            raise InvalidSinkUrl(url, "has no host")
        return HttpSink(url, mode=settings.records_http_mode)
    if scheme in ("redis", "rediss"):
        return RedisSink(url, maxlen=settings.records_redis_maxlen)
    raise InvalidSinkUrl(
        url,
        "must be file:///dir, an http(s):// URL, redis://host:port/db?stream=name, "
        "parquet+file:///dir, parquet+s3://bucket/prefix, delta+file:///dir or delta+s3://bucket/prefix",
    )


def file_sink_directory(url: str) -> Path:
    """The directory of a ``file:///dir`` URL (``file://localhost/dir`` too)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise InvalidSinkUrl(url, "must be file:///absolute/directory")
    return Path(unquote(parts.path))


def shown(url: str) -> str:
    """The URL without credentials or query, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class FileSink(EventSink):
    """``records.jsonl`` in a directory, one structured event a line, rotated to
    ``records.jsonl.1`` ... ``.N`` (N = ``backups``) before a write would take it past
    ``max_bytes``; with no backups the file starts again empty.

    Every worker of a host may write the same directory: each batch is one ``write`` to a file
    opened for appending, under an ``flock`` that also covers the rotation, and a writer whose
    file another process rotated away opens the new one."""

    kind = "file"

    def __init__(self, directory: Path, *, max_bytes: int, backups: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self._max_bytes = max_bytes
        self._backups = backups
        self._lock: int | None = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None

    def write(self, events: list[CloudEvent]) -> None:
        data = b"".join(serialized(event) + b"\n" for event in events)
        lock = self._lock
        if lock is None:
            raise SinkFailed(f"{self.path}: the sink is closed")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                fd = self._current()
                size = os.fstat(fd).st_size
                if size and size + len(data) > self._max_bytes:
                    fd = self._rotate(fd)
                _write_all(fd, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError as exc:
            raise SinkFailed(f"{self.path}: {exc.strerror or exc}") from exc

    def _current(self) -> int:
        try:
            found = os.stat(self.path)
            identity: tuple[int, int] | None = (found.st_dev, found.st_ino)
        except FileNotFoundError:
            identity = None
        if self._fd is not None and identity == self._identity:
            return self._fd
        if self._fd is not None:  # rotated (or removed) by another process: follow the name
            os.close(self._fd)
            self._fd = None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        opened = os.fstat(fd)
        self._fd, self._identity = fd, (opened.st_dev, opened.st_ino)
        return fd

    def _rotate(self, fd: int) -> int:
        if self._backups == 0:
            os.ftruncate(fd, 0)
            return fd
        for number in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{FILE_NAME}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{FILE_NAME}.{number + 1}"))  # the oldest goes
        os.replace(self.path, self.path.with_name(f"{FILE_NAME}.1"))
        return self._current()

    def close(self) -> None:
        for fd in (self._fd, self._lock):
            if fd is not None:
                os.close(fd)
        self._fd = self._lock = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class HttpSink(EventSink):
    """POSTs to a URL over one keep-alive client. ``structured``: a batch per request
    (``application/cloudevents-batch+json``); ``binary``: an event per request, its attributes
    in ``ce-*`` headers and its data as the body. An answer other than 2xx is a failure."""

    kind = "http"

    def __init__(
        self, url: str, *, mode: Literal["structured", "binary"], timeout: float = HTTP_TIMEOUT_SECONDS
    ) -> None:
        import httpx

        self._url = url
        self._shown = shown(url)
        self._mode = mode
        self._client = httpx.Client(timeout=timeout)

    def write(self, events: list[CloudEvent]) -> None:
        if self._mode == "structured":
            self._post(serialized_batch(events), {"content-type": BATCH_CONTENT_TYPE})
            return
        from cloudevents.core.bindings.http import to_binary

        for written, event in enumerate(events):
            message = to_binary(event, EVENT_FORMAT)
            try:
                self._post(message.body, message.headers)
            except SinkFailed as exc:
                raise SinkFailed(str(exc), written=written) from exc

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        import httpx

        try:
            answer = self._client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SinkFailed(f"{self._shown}: {type(exc).__name__}: {exc}") from exc
        if not answer.is_success:
            raise SinkFailed(f"{self._shown} answered {answer.status_code}")

    def close(self) -> None:
        self._client.close()


class RedisSink(EventSink):
    """``XADD`` to a stream, one pipeline a write, trimmed with ``MAXLEN ~ maxlen``. Each entry
    has the structured event (``event``) and, to filter on without parsing it, ``model`` and
    ``version``."""

    kind = "redis"

    def __init__(self, url: str, *, maxlen: int) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        streams = [value for key, value in query if key == "stream"]
        self.stream = streams[-1] if streams else DEFAULT_STREAM
        if not self.stream:
            raise InvalidSinkUrl(url, "stream= names no stream")
        rest = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "stream"])))
        self._shown = f"{shown(url)} stream {self.stream}"
        self._maxlen = maxlen
        # One try a write: the recorder's backoff is the retry, and a retried pipeline could
        # add its entries twice.
        self._client: Any = redis.Redis.from_url(
            rest,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )

    def write(self, events: list[CloudEvent]) -> None:
        import redis

        pipe = self._client.pipeline(transaction=False)
        for event in events:
            fields = {
                "event": serialized(event),
                "model": str(event.get_extension("model")),
                "version": str(event.get_extension("modelversion")),
            }
            pipe.xadd(self.stream, fields, maxlen=self._maxlen, approximate=True)
        try:
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise SinkFailed(f"{self._shown}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._client.close()
