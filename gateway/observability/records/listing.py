"""``registry-gateway records``: what a file sink wrote, read back from its directory, newest
last. Only the files are read (no gateway, no database), newest first, until enough match."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.observability.records.redaction import REDACTED
from gateway.observability.records.sinks import FILE_NAME

_COLUMNS = ("TIME (UTC)", "MODEL", "VERSION", "ARM", "STATUS", "LATENCY_MS", "REQUEST_ID", "INPUTS")


class RecordsUnavailable(Exception):
    """Nothing to read: no such directory, or no records file in it."""


@dataclass
class Listing:
    """The events found, oldest first, each with its line as written; ``skipped`` counts lines
    that were not an event (a torn last line, where a writer is mid-write, is not counted)."""

    lines: list[bytes] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def record_files(directory: Path) -> list[Path]:
    """``records.jsonl.N`` ... ``.1`` then ``records.jsonl``: oldest first."""
    if not directory.is_dir():
        raise RecordsUnavailable(f"no records directory at {directory}")
    rotated = [path for path in directory.glob(f"{FILE_NAME}.*") if path.suffix[1:].isdigit()]
    rotated.sort(key=lambda path: int(path.suffix[1:]), reverse=True)
    current = directory / FILE_NAME
    files = rotated + ([current] if current.is_file() else [])
    if not files:
        raise RecordsUnavailable(f"no records in {directory} (no {FILE_NAME})")
    return files


def last_records(directory: Path, *, model: str | None = None, limit: int = 20) -> Listing:
    """The last ``limit`` events (of ``model`` if given), oldest first."""
    found = Listing()
    for path in reversed(record_files(directory)):
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:  # rotated away since it was listed
            continue
        for index in range(len(lines) - 1, -1, -1):
            line = lines[index].strip()
            if not line:
                continue
            event = _event(line)
            if event is None:
                if index != len(lines) - 1:  # after the last newline: a line still being written
                    found.skipped += 1
                continue
            if model is not None and _model(event) != model:
                continue
            found.lines.append(line)
            found.events.append(event)
            if len(found.events) >= limit:
                break
        if len(found.events) >= limit:
            break
    found.lines.reverse()
    found.events.reverse()
    return found


def render(events: list[dict[str, Any]]) -> str:
    """A table, one event a row."""
    rows = [_COLUMNS] + [_row(event) for event in events]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def inputs_summary(data: dict[str, Any]) -> str:
    """How much a record's inputs hold ("3 rows", "2 tensors", "120 bytes of ..."), and whether
    any of it was redacted or all of it withheld."""
    inputs = data.get("inputs")
    if inputs is None:
        return "omitted" if data.get("inputs_omitted") else "-"
    summary = _size(inputs, data.get("protocol"))
    if _holds_redacted(inputs):
        summary += ", redacted"
    return summary


def _event(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("data"), dict) else None


def _model(event: dict[str, Any]) -> Any:
    return event.get("model", event["data"].get("model"))


def _row(event: dict[str, Any]) -> tuple[str, ...]:
    data = event["data"]
    latency = data.get("latency_ms")
    return (
        _time(event.get("time")),
        str(data.get("model", "")),
        str(data.get("version", "")),
        str(data.get("arm") or "-"),
        str(data.get("status", "")),
        f"{latency:.1f}" if isinstance(latency, int | float) else "-",
        str(data.get("request_id", "")),
        inputs_summary(data),
    )


def _time(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _size(inputs: Any, protocol: Any) -> str:
    if not isinstance(inputs, dict):
        return _count(len(inputs), "row") if isinstance(inputs, list) else "-"
    if "base64" in inputs:
        return f"{len(inputs['base64']) * 3 // 4} bytes of {inputs.get('media_type')}"
    if "text" in inputs:
        return "not parsed"
    if protocol == "oip" and isinstance(inputs.get("inputs"), list):
        return _count(len(inputs["inputs"]), "tensor")
    for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
        if key in inputs:
            return _rows(inputs[key])
    if isinstance(inputs.get("data"), list):  # CSV
        return _count(len(inputs["data"]), "row")
    return "-"


def _rows(value: Any) -> str:
    if isinstance(value, list):
        return _count(len(value), "row")
    if isinstance(value, dict):
        if isinstance(value.get("data"), list) and "columns" in value:  # dataframe_split
            return _count(len(value["data"]), "row")
        first = next(iter(value.values()), None)  # columns
        if isinstance(first, list):
            return _count(len(first), "row")
        return _count(len(value), "column")
    return "-"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _holds_redacted(value: Any) -> bool:
    if isinstance(value, list):
        return any(_holds_redacted(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_redacted(item) for item in value.values())
    return isinstance(value, str) and value == REDACTED
