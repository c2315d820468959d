"""What a record costs the writer thread, CloudEvents to a file against a row of the inference
tables (Parquet on a folder): ``.venv/bin/python bench/tables_cost.py [--records N]``.

The recorder's one writer thread shares the event loop's core, so its CPU a record, times the
sampled share, is what recording takes from serving (docs/observability.md, What it costs:
the CloudEvents file sink's writer was about 24 µs a record). Timed with the thread's own CPU
clock (``time.thread_time``), which a busy or shared machine does not inflate as the wall
clock does. Each sink gets the same records (a one-row iris ``dataframe_split`` body and its
answer, with the version's signature, so the tables' typed columns are made too), in batches
of 100 as the recorder hands them over, a file rolled every 64 MiB (the default) and at the
end (its footer written and renamed into place, included in the time). For the whole
request path's cost under load, measure in pairs on a quiet machine:
``bench/paired.py --env GATEWAY_RECORDS_SINK=parquet+file:///tmp/tables --env GATEWAY_RECORDS_SAMPLE=0.1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from gateway.observability.records.events import event_for  # noqa: E402
from gateway.observability.records.record import InferenceRecord  # noqa: E402
from gateway.observability.records.sinks import FileSink  # noqa: E402
from gateway.observability.records.tables import FolderDestination, TableSink  # noqa: E402

COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
BATCH = 100


def iris_signature():  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    frame = pd.DataFrame([[5.1, 3.5, 1.4, 0.2]], columns=COLUMNS)
    return infer_signature(frame, np.array([0]))


def records(count: int, signature: object) -> list[InferenceRecord]:
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}).encode()
    now = time.time()
    return [
        InferenceRecord(
            "iris", 1, None, "default", f"{n:016x}", None, "mlflow", "application/json", body,
            b'{"predictions": [0]}', 200, 0.004, now, route="/models/iris/predict",
            queue_seconds=0.001, predict_seconds=0.002, signature=signature,
        )
        for n in range(count)
    ]  # fmt: skip


def events_cost(batch: list[InferenceRecord], folder: Path) -> float:
    sink = FileSink(folder, max_bytes=100 * 2**20, backups=10)
    started = time.thread_time()
    for start in range(0, len(batch), BATCH):
        sink.write([event_for(r, source="/bench", redact=frozenset()) for r in batch[start : start + BATCH]])
    sink.close()
    return (time.thread_time() - started) / len(batch) * 1e6


def tables_cost(batch: list[InferenceRecord], folder: Path) -> float:
    sink = TableSink(
        FolderDestination(folder), replica="bench", redact=(), roll_bytes=64 * 2**20, roll_seconds=3600, keep_bytes=0
    )
    started = time.thread_time()
    for start in range(0, len(batch), BATCH):
        sink.write([sink.entry(r, source="/bench", redact=frozenset()) for r in batch[start : start + BATCH]])
    sink.close()
    return (time.thread_time() - started) / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batch = records(args.records, iris_signature())
    results: dict[str, list[float]] = {"events_file_us": [], "tables_parquet_us": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            results["events_file_us"].append(events_cost(batch, Path(a)))
            results["tables_parquet_us"].append(tables_cost(batch, Path(b)))
    best = {name: min(values) for name, values in results.items()}
    print(json.dumps({"records": args.records, "rounds": args.rounds, "best_us_a_record": best, "all": results}))


if __name__ == "__main__":
    main()
