"""A job as ``GET /jobs/<id>``, ``GET /jobs``, the callback and the CLI show it."""

from __future__ import annotations

from typing import Any

from registry_sync.jobs.records import FILES, Job

MAX_WAIT_SECONDS = 30.0
"""``GET /jobs/<id>?wait=`` holds its answer at most this long: under proxies' read timeouts."""


def _failed_chunk(index: int, reason: str, spec: dict[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {"index": index, "reason": reason}
    file = spec.get("file")
    if isinstance(file, dict):
        shown["file"] = file.get("uri")
        unit = "row_groups" if file.get("format") == "parquet" else "bytes"
        shown[unit] = [spec.get("start"), spec.get("stop")]
    if spec.get("first_row") is not None and spec.get("rows") is not None:
        shown["rows"] = [spec["first_row"], spec["first_row"] + spec["rows"]]
    return shown


def job_document(job: Job) -> dict[str, Any]:
    """Its state, version, rows done and total, failed chunks with their ranges and reasons,
    timings, and where its output is (files) or its result (inline)."""
    document: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "model": job.version.name,
        "version": job.version.version,
        "alias": job.alias,
        "state": job.state,
        "rows_done": job.rows_done,
        "rows_total": job.rows_total,
        "chunks_total": job.chunks_total,
        "chunks_done": job.chunks_done,
        "chunks_failed": job.chunks_failed,
        "failed_chunks": [_failed_chunk(f.index, f.reason, f.spec) for f in job.failures],
        "error": job.error,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "expires_at": job.expires_at,
    }
    if job.started_at is not None:
        end = job.finished_at
        document["seconds"] = round(end - job.started_at, 3) if end is not None else None
    if job.kind == FILES:
        document["output"] = job.spec.get("output")
        document["output_format"] = job.spec.get("output_format")
    elif job.has_result:
        document["result"] = f"/jobs/{job.id}/result"
    return document


def rows_text(job: dict[str, Any]) -> str:
    """``done/total`` rows of a job document (``done`` alone while the total is unknown)."""
    total = job.get("rows_total")
    return f"{job['rows_done']}/{total}" if total is not None else str(job["rows_done"])
