"""Inference tables as issue 50's contract lays them out, written here with pyarrow (the table
sink lands separately): predictions under ``predictions/model=<m>/version=<v>/date=<day>/``,
labels under ``labels/date=<day>/`` (a label's ``row`` where it has one: a file without the
column, as written before labels had one, is written when no label has one)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
DOCS_ROOT = "/var/lib/gateway/tables"  # where the documented query reads the tables


def docs_query() -> str:
    """The DuckDB query docs/observability.md shows for predictions joined with their labels
    (reading ``DOCS_ROOT``)."""
    found = re.search(r"<!-- tables-join-query -->\s*```sql\n(.*?)```", DOCS.read_text(), re.S)
    assert found, "docs/observability.md has no tables-join-query"
    return found.group(1)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def write_tables(
    root: Path, model: str, version: int, rows: list[dict[str, Any]], labels: list[dict[str, Any]]
) -> None:
    for day in sorted({row["time"][:10] for row in rows}):
        folder = root / "predictions" / f"model={model}" / f"version={version}" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        mine = [row for row in rows if row["time"].startswith(day)]
        table = pa.table(
            {
                "request_id": [r["request_id"] for r in mine],
                "time": pa.array([_utc(r["time"]) for r in mine], pa.timestamp("us", tz="UTC")),
                "model": [model] * len(mine),
                "version": [str(version)] * len(mine),
                "arm": [r.get("arm", "default") for r in mine],
                "status": pa.array([r["status"] for r in mine], pa.int32()),
                "error_code": [r.get("error_code") for r in mine],
                "inputs": [json.dumps(r["inputs"]) for r in mine],
                "outputs": [json.dumps(r["outputs"]) if r.get("outputs") is not None else None for r in mine],
            }
        )
        pq.write_table(table, folder / "part-0.parquet")
    folder = root / "labels" / "date=2026-11-25"
    folder.mkdir(parents=True, exist_ok=True)
    for n, part in enumerate((labels[: len(labels) // 2], labels[len(labels) // 2 :])):
        columns: dict[str, Any] = {
            "request_id": [lab["request_id"] for lab in part],
            "model": [lab.get("model") for lab in part],
            "version": [lab.get("version") for lab in part],
            "label": [json.dumps(lab["label"]) for lab in part],
            "received_at": pa.array([_utc(lab["received_at"]) for lab in part], pa.timestamp("us", tz="UTC")),
        }
        if any("row" in lab for lab in part):
            columns["row"] = pa.array([lab.get("row", 0) for lab in part], pa.int32())
        pq.write_table(pa.table(columns), folder / f"part-{n}.parquet")


@dataclass
class Expected:
    """What a correct join of the tables gives from 25 November on: the rows to score, as
    (request id, row, prediction, label), and how many requests and rows were left out, by
    reason."""

    scored: list[tuple[str, int, int, int]] = field(default_factory=list)
    requests: int = 0
    failed: int = 0
    unreadable: int = 0
    rows: int = 0
    unlabelled: int = 0

    @property
    def truth(self) -> list[int]:
        return [label for _, _, _, label in self.scored]

    @property
    def predicted(self) -> list[int]:
        return [prediction for _, _, prediction, _ in self.scored]


def iris_tables(root: Path, model: str, rows_in: list[list[float]]) -> Expected:
    """``model`` version 1's traffic of a day and the day before: answered, failed, unreadable,
    multi-row; labels of most rows, one twice (the later wins), one for another version (not
    this one's), a multi-row answer's rows each labelled on its own (one left without); the
    labels of the first half in a file written before labels had a ``row``."""
    rng = np.random.default_rng(7)
    rows: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []  # the labels with a row, after the others
    expected = Expected()
    for n in range(60):
        day = "2026-11-24" if n < 10 else "2026-11-25"
        counted = n >= 10  # --since 2026-11-25 leaves the first day out
        expected.requests += counted
        predicted, true = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        request = {"request_id": f"r{n}", "time": f"{day}T10:{n:02d}:00", "status": 200, "inputs": [rows_in[0]]}
        if n % 13 == 5:  # failed: no answer
            rows.append(request | {"status": 503, "error_code": "UNAVAILABLE"})
            expected.failed += counted
        elif n % 19 == 4:  # an answer without rows: nothing to score
            rows.append(request | {"outputs": []})
            expected.unreadable += counted
        elif n % 17 == 3:  # three rows, labelled in the second file, the middle one not at all
            answer = [predicted, true, (predicted + 1) % 3]
            rows.append(request | {"outputs": answer})
            expected.rows += 3 * counted
            for row in (2, 0):  # out of order: a label names its row
                truth = int(rng.integers(0, 3))
                pending.append({"request_id": f"r{n}", "row": row, "label": truth, "received_at": "2026-11-25T12:00"})
                if counted:
                    expected.scored.append((f"r{n}", row, answer[row], truth))
            expected.unlabelled += counted
        else:
            expected.rows += counted
            rows.append(request | {"outputs": [predicted]})
            if n % 7 == 6:
                expected.unlabelled += counted  # no label yet
                continue
            if n % 11 == 2:  # labelled twice, the first time without model or version: the later counts
                labels.append({"request_id": f"r{n}", "label": (true + 1) % 3, "received_at": "2026-11-25T11:00"})
            latest = {"model": model, "version": "1", "label": true, "received_at": "2026-11-25T12:00"}
            labels.append({"request_id": f"r{n}"} | latest)
            if n == 12:  # a later label for version 2 of the same request id: not this version's
                other = {"model": model, "version": "2", "label": (true + 2) % 3, "received_at": "2026-11-25T13:00"}
                labels.append({"request_id": f"r{n}"} | other)
            if counted:
                expected.scored.append((f"r{n}", 0, predicted, true))
    write_tables(root, model, 1, rows, labels + pending)
    return expected
