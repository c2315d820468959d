"""Where a job's files live, a local folder or S3, behind the few operations the chunks need:
a size, a byte range, a seekable file (Parquet's footer and row groups), a listing, and a
whole-file put.

S3 goes through boto3 with the artifact store's credentials, as MLflow's own clients take them
(``AWS_*``, ``MLFLOW_S3_ENDPOINT_URL``): a byte range is one ranged GET, so reading a chunk
never brings the rest of the object. A client is made per operation that needs one (a plan, a
read, a commit) and not kept: the environment is read when it is used.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from gateway.jobs.files.errors import InputNotFound, InputUnavailable, InputUnreadable, InvalidLocation, JobFileError

# An S3 failure worth a retry: the endpoint throttles or fails, not the request.
_TRANSIENT_CODES = frozenset({"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "503", "500"})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


Located = Path | S3Object


def locate(uri: str) -> Located:
    """``file:///abs``, ``/abs`` or ``s3://bucket/key`` as a path or an object; raises
    InvalidLocation for anything else (a relative path would depend on the replica's working
    folder; other schemes are not read)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if not parts.netloc:
            raise InvalidLocation(uri, "names no bucket (s3://bucket/key)")
        return S3Object(parts.netloc, unquote(parts.path).lstrip("/"))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidLocation(uri, "a file URI names no host (file:///absolute/path)")
        path = unquote(parts.path)
    elif scheme == "" and uri.startswith("/"):
        path = uri
    else:
        raise InvalidLocation(uri, "must be an absolute path, file:///absolute/path or s3://bucket/key")
    if not path.startswith("/"):
        raise InvalidLocation(uri, "must be absolute")
    return Path(path)


def within(where: Located, roots: Sequence[str] | None) -> bool:
    """Whether ``where`` lies in one of ``roots`` (folders and S3 prefixes; None: anywhere). A
    local path is taken as the filesystem resolves it, so a symbolic link inside a root that
    points out of it is out of it."""
    if roots is None:
        return True
    for root in roots:
        base = locate(root)
        if isinstance(where, Path) and isinstance(base, Path):
            real, top = os.path.realpath(where), os.path.realpath(base).rstrip("/")
            if real == top or real.startswith(top + "/"):
                return True
        elif isinstance(where, S3Object) and isinstance(base, S3Object) and where.bucket == base.bucket:
            prefix = base.key.strip("/")
            if not prefix or where.key.strip("/") == prefix or where.key.startswith(prefix + "/"):
                return True
    return False


def uri_of(where: Located) -> str:
    if isinstance(where, S3Object):
        return where.uri
    return "file://" + quote(str(where))


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    # boto3's standard retries ride out a throttle; past them the runner's backoff takes over.
    config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    return boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None, config=config)


def s3_failure(exc: Exception) -> tuple[str, bool | None]:
    """A boto3 failure's code and whether it is transient (None: the object is missing)."""
    from botocore.exceptions import ClientError

    # boto3's transfers (upload_file) raise their own error over the ClientError that says why.
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ClientError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ClientError):
        exc = cause
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _MISSING_CODES or status == "404":
            return code or status, None
        transient = code in _TRANSIENT_CODES or status.startswith("5")
        return f"{code or status} {error.get('Message', '')}".strip(), transient
    return f"{type(exc).__name__}: {exc}", True  # no answer: a connection, a timeout


def read_failure(uri: str, exc: Exception, *, format: str, range: str) -> JobFileError:
    """What reading ``uri`` raising ``exc`` (an OSError or a boto3 failure) means for the job."""
    if isinstance(exc, FileNotFoundError):
        return InputNotFound(uri, "no such file (vanished since the job was planned?)")
    if isinstance(exc, OSError):
        return InputUnreadable(uri, format=format, range=range, detail=f"{type(exc).__name__}: {exc.strerror or exc}")
    detail, transient = s3_failure(exc)
    if transient is None:
        return InputNotFound(uri, "no such object (vanished since the job was planned?)")
    if transient:
        return InputUnavailable(uri, detail)
    return InputUnreadable(uri, format=format, range=range, detail=detail)


def size_of(where: Located, client: Any | None = None) -> int:
    if isinstance(where, Path):
        return where.stat().st_size
    head = (client or s3_client()).head_object(Bucket=where.bucket, Key=where.key)
    return int(head["ContentLength"])


def read_range(where: Located, start: int, stop: int, client: Any | None = None) -> bytes:
    """Bytes ``[start, stop)`` (fewer at the end of the file)."""
    if stop <= start:
        return b""
    if isinstance(where, Path):
        with where.open("rb") as file:
            file.seek(start)
            return file.read(stop - start)
    answer = (client or s3_client()).get_object(Bucket=where.bucket, Key=where.key, Range=f"bytes={start}-{stop - 1}")
    body: bytes = answer["Body"].read()
    return body


class RangedObject(io.RawIOBase):
    """An S3 object as a seekable read-only file: each read is one ranged GET of what was asked,
    so Parquet's reader fetches the footer and the row groups it reads, and nothing else."""

    def __init__(self, where: S3Object, *, size: int, client: Any) -> None:
        super().__init__()
        self._where = where
        self._size = size
        self._client = client
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(base + offset, 0)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        stop = min(self._position + len(view), self._size)
        if stop <= self._position:
            return 0
        data = read_range(self._where, self._position, stop, self._client)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


def open_seekable(where: Located, *, size: int, client: Any | None = None) -> io.RawIOBase | io.BufferedReader:
    if isinstance(where, Path):
        return where.open("rb")
    return RangedObject(where, size=size, client=client or s3_client())


def hidden(name: str) -> bool:
    """Names readers skip, as Spark and pyarrow's datasets do: ``.part-1.tmp``, ``_SUCCESS``."""
    return name.startswith((".", "_"))


def walk(base: Located, client: Any | None = None, *, depth: int | None = None) -> Iterator[tuple[Located, str, int]]:
    """Every visible file under a folder or S3 prefix (a local folder: down to ``depth``
    segments): where it is, its path relative to ``base`` (with ``/``), its size. Nothing, for
    a base that is neither."""
    if isinstance(base, Path):
        if not base.is_dir():
            return
        for folder, folders, files in os.walk(base):
            below = len(Path(folder).relative_to(base).parts) + 1
            deeper = depth is None or below < depth
            folders[:] = sorted(f for f in folders if not hidden(f)) if deeper else []
            for name in sorted(files):
                if hidden(name):
                    continue
                path = Path(folder) / name
                yield path, path.relative_to(base).as_posix(), path.stat().st_size
        return
    prefix = base.key.rstrip("/") + "/" if base.key else ""
    pages = (client or s3_client()).get_paginator("list_objects_v2").paginate(Bucket=base.bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            relative = item["Key"][len(prefix) :]
            if not relative or any(hidden(part) for part in relative.split("/")):
                continue
            yield S3Object(base.bucket, item["Key"]), relative, int(item["Size"])
