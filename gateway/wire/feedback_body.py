"""The body of ``POST /feedback``, as data: one label or an array of them.

Each item is ``{"request_id": "...", "label": <one output row>, "row"?: i, "model"?: "...", "version"?: n}``:
``row`` is the index of the answer's row the label is for (0 first; needed where the answer had
several rows, and 0 when left out).
What this reads it bounds: at most ``max_items`` items (more is :class:`TooManyLabels`, 413),
request ids of at most 128 printable ASCII characters (the gateway's own request id bound).
A body that is not JSON, or neither an object nor an array, is :class:`MalformedRequest`
(400); an item that is malformed is answered ``invalid`` on its own, with its reason, and the
others are taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import MalformedRequest, TooManyLabels
from registry_sync.feedback import LabelItem

MAX_REQUEST_ID = 128
_FIELDS = {"request_id", "label", "row", "model", "version"}


@dataclass(frozen=True, slots=True)
class BadItem:
    """An item that names no label: its position, its request id if it had a readable one, why."""

    index: int
    request_id: str | None
    reason: str


def parse_feedback(body: bytes, *, max_items: int) -> list[LabelItem | BadItem]:
    """The items of a feedback body, in order."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"The feedback body is not JSON: {exc}") from None
    if isinstance(parsed, dict):
        items: list[Any] = [parsed]
    elif isinstance(parsed, list):
        items = parsed
    else:
        raise MalformedRequest("The feedback body must be a label object or an array of them")
    if len(items) > max_items:
        raise TooManyLabels(len(items), max_items)
    return [_item(i, raw) for i, raw in enumerate(items)]


def _item(index: int, raw: Any) -> LabelItem | BadItem:
    if not isinstance(raw, dict):
        return BadItem(index, None, "an item must be an object with request_id and label")
    rid = raw.get("request_id")
    if not isinstance(rid, str) or not rid or len(rid) > MAX_REQUEST_ID or not (rid.isascii() and rid.isprintable()):
        return BadItem(index, None, f"request_id must be a string of 1 to {MAX_REQUEST_ID} printable ASCII characters")
    if "label" not in raw:
        return BadItem(index, rid, "the item has no label")
    if unknown := sorted(set(raw) - _FIELDS):
        return BadItem(index, rid, f"unknown fields {unknown}: an item has request_id, label, row, model and version")
    model = raw.get("model")
    if model is not None and not isinstance(model, str):
        return BadItem(index, rid, "model must be a string")
    version = raw.get("version")
    if version is not None:
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        elif not isinstance(version, int) or isinstance(version, bool) or version < 1:
            return BadItem(index, rid, "version must be a version number")
    row = raw.get("row")
    if row is not None and (not isinstance(row, int) or isinstance(row, bool) or row < 0):
        return BadItem(index, rid, "row must be the index of a row of the answer (0 for its first)")
    return LabelItem(rid, raw["label"], model, version, row)
