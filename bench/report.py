"""What every section's report shares: numbers as the tables print them, and a section's
measured points looked up by label."""

from __future__ import annotations

import math
from typing import Any

Row = dict[str, Any]


def fmt(value: object, digits: int = 1) -> str:
    """``1,234.5``; a dash for no measurement (None or NaN)."""
    if value is None:
        return "–"
    as_float = float(value)  # type: ignore[arg-type]
    return "–" if math.isnan(as_float) else f"{as_float:,.{digits}f}"


def rate(row: Row | None) -> float | None:
    """A point's req/s, or None when it was not measured (no row, no requests, NaN)."""
    if row is None or not row.get("requests"):
        return None
    value = float(row["req_s"])
    return None if math.isnan(value) else value


def point(data: dict[str, Any], label: str) -> Row | None:
    return next((r for r in data.get("rows", []) if r["point"] == label), None)
