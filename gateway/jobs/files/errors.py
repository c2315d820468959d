"""Why a job's file could not be found, read or written: the reasons a job or a chunk fails.

Each error names the file (never a credential: the URIs taken are ``file://`` and ``s3://``,
which carry none) and, where known, the range of the chunk (bytes or row groups), and builds a
one-line ``reason`` that the runner stores with the failed chunk and shows in ``GET /jobs/<id>``.
They become HTTP (at submission: an input that does not exist, an output that refuses writes)
in the one place errors do, :mod:`gateway.http.errors`.
"""

from __future__ import annotations

from gateway.errors import GatewayError

_MAX_DETAIL = 300  # a parser's message can quote a whole line: the reason stays one short line


def one_line(text: object) -> str:
    """``text`` as one line of at most a few hundred characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= _MAX_DETAIL else flat[:_MAX_DETAIL] + " ..."


class JobFileError(GatewayError):
    """A job's file that is missing, unreadable or unwritable; ``reason`` says which and why.
    ``transient``: the same operation may succeed if tried again later (the store, not the
    file, failed); the runner retries those with backoff."""

    transient: bool = False

    def __init__(self, reason: str) -> None:
        self.reason = one_line(reason)
        super().__init__(self.reason)


class InvalidLocation(JobFileError):
    """A URI, glob or format the job's files cannot be named by (a relative path, an
    unknown scheme or format): the job is refused at submission."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"'{uri}': {problem}")


class TooManyInputs(JobFileError):
    def __init__(self, spec: str, *, found: int, limit: int) -> None:
        self.spec = spec
        self.found = found
        self.limit = limit
        super().__init__(f"{spec} matches more than {limit} files ({found} so far); name fewer, or raise the limit")


class InputNotFound(JobFileError):
    """Nothing matches the input, or a file planned has vanished since."""

    def __init__(self, uri: str, detail: str = "no such file, or nothing of a known format under it") -> None:
        self.uri = uri
        super().__init__(f"{uri}: {detail}")


class InputUnreadable(JobFileError):
    """A file that cannot be parsed as its format. ``range`` is the part of it that was read
    (``"bytes 1024-2047"``, ``"row groups 3-4"``), empty if the whole footer was at fault."""

    def __init__(self, uri: str, *, format: str, range: str = "", detail: str) -> None:
        self.uri = uri
        self.format = format
        self.range = range
        where = f" ({range})" if range else ""
        super().__init__(f"{uri}{where}: cannot be read as {format}: {detail}")


class InputUnavailable(JobFileError):
    """The input's store did not answer (a connection refused, a throttle, a 5xx): the chunk
    is worth a retry, the file is not at fault."""

    transient = True

    def __init__(self, uri: str, detail: str) -> None:
        self.uri = uri
        super().__init__(f"{uri}: not reachable now: {detail}")


class OutputUnwritable(JobFileError):
    """The output location refuses a write. ``transient``: worth a retry with backoff (a
    connection, a throttle, a full disk); otherwise (permission, no bucket, not a folder) it
    will refuse again."""

    def __init__(self, uri: str, detail: str, *, transient: bool) -> None:
        self.uri = uri
        self.transient = transient
        super().__init__(f"{uri}: cannot be written: {detail}")


class OutputUnavailable(OutputUnwritable):
    """The output's store did not take a write now (a connection refused, a throttle, a 5xx, a
    full disk): ``transient``. At submission (the probe write) the caller hears 503 with
    Retry-After, not a 400: the request was right, the store was not there."""

    def __init__(self, uri: str, detail: str) -> None:
        super().__init__(uri, detail, transient=True)
