"""A job's submission as sent (``POST /models/<name>/jobs``) turned into a job and its chunks.

Two shapes, told apart by their keys: ``{"request": <a predict body>}`` (an inline job: one
predict, answered later) and ``{"input": ..., "output": ..., "output_format": ...}`` (a file
job). A key of neither, a value of the wrong type, an input that matches nothing, an output that
refuses a test write: refused here, at submission (400, naming the key), before anything is
queued. Planning a file job reads the inputs' footers and a few bytes around each cut (never the
files whole), bounded by GATEWAY_JOBS_MAX_FILES and GATEWAY_JOBS_MAX_CHUNKS, so it is done now,
in a thread, and the caller hears at once of an input that cannot be planned.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.errors import InvalidJob
from gateway.jobs.files.chunks import plan_chunks
from gateway.jobs.files.locations import FORMATS, find_inputs
from gateway.jobs.files.writers import OutputLocation
from gateway.settings import GatewaySettings
from registry_sync.identity import VersionId
from registry_sync.jobs.records import FILES, INLINE, NewJob

_INLINE_KEYS = frozenset({"request", "callback"})
_FILE_KEYS = frozenset({"input", "input_format", "output", "output_format", "id_column", "callback", "params"})


def document_of(body: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJob(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidJob('the body must be a JSON object: {"request": ...} or {"input": ..., "output": ...}')
    if ("request" in document) == ("input" in document):
        raise InvalidJob('the body needs exactly one of "request" (an inline job) or "input" (a file job)')
    allowed = _INLINE_KEYS if "request" in document else _FILE_KEYS
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise InvalidJob(f"unknown key(s) {', '.join(repr(k) for k in unknown)}; allowed: {', '.join(sorted(allowed))}")
    return document


def _text(document: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidJob(f'"{key}" must be a non-empty string')
    return value


def _callback(document: dict[str, Any]) -> str | None:
    url = _text(document, "callback")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidJob(f'"callback" must be an http(s) URL, not {url!r}')
    return url


def inline_job(document: dict[str, Any], version: VersionId, *, alias: str | None, owner: str | None) -> NewJob:
    """Its size is the body's, bounded by GATEWAY_MAX_BODY_BYTES when it was read."""
    request = document["request"]
    if not isinstance(request, dict):
        raise InvalidJob('"request" must be a predict body (a JSON object, as POST .../predict takes)')
    spec = {"request": request, "callback": _callback(document)}
    return NewJob(INLINE, version, spec, [{}], alias=alias, owner=owner)


def file_job(
    document: dict[str, Any], version: VersionId, *, alias: str | None, owner: str | None, settings: GatewaySettings
) -> NewJob:
    """Blocking (lists the inputs, reads their footers, writes a test object): call in a thread."""
    given = document["input"]
    if isinstance(given, str):
        inputs: str | list[str] = given
    elif isinstance(given, list) and given and all(isinstance(item, str) and item for item in given):
        inputs = list(given)
    else:
        raise InvalidJob('"input" must be a URI, a glob, or a non-empty list of them')
    output_format = _text(document, "output_format") or "parquet"
    if output_format not in FORMATS:
        raise InvalidJob(f'"output_format" must be one of {", ".join(FORMATS)}, not {output_format!r}')
    input_format = _text(document, "input_format")
    if input_format is not None and input_format not in FORMATS:
        raise InvalidJob(f'"input_format" must be one of {", ".join(FORMATS)}, not {input_format!r}')
    params = document.get("params")
    if params is not None and not isinstance(params, dict):
        raise InvalidJob('"params" must be a JSON object')
    roots = settings.jobs_roots or None
    output = OutputLocation.parse(str(_text(document, "output", required=True)), output_format, roots=roots)
    output.check_writable()
    files = find_inputs(inputs, format=input_format, max_files=settings.jobs_max_files, roots=roots)
    chunks = plan_chunks(files, target_rows=settings.jobs_chunk_rows, target_bytes=settings.jobs_chunk_bytes)
    if len(chunks) > settings.jobs_max_chunks:
        raise InvalidJob(
            f"the input splits into {len(chunks)} chunks, "
            f"more than GATEWAY_JOBS_MAX_CHUNKS ({settings.jobs_max_chunks})"
        )
    known = [chunk.rows for chunk in chunks]
    rows_total = sum(rows for rows in known if rows is not None) if all(r is not None for r in known) else None
    spec = {
        "input": inputs,
        "files": len(files),
        "output": output.uri,
        "output_format": output_format,
        "id_column": _text(document, "id_column"),
        "params": params,
        "callback": _callback(document),
    }
    return NewJob(
        FILES,
        version,
        spec,
        [chunk.to_json() for chunk in chunks],
        alias=alias,
        owner=owner,
        fail_fast=settings.jobs_on_bad_chunk == "fail",
        rows_total=rows_total,
    )
