"""What GATEWAY_RECORDS_TRACES costs: on the request path, and in its writer thread.

Self-contained (not part of ``bench/run.py``)::

    .venv/bin/python bench/trace_cost.py    # writes bench/results/trace-cost-<time>.json

CPU time only (a machine shared with other work measures alike): the request path's share is
``TraceWriter.offer`` (an append under a lock, for a request already sampled), as CPU
nanoseconds a call (``time.process_time`` over ``--offers`` calls, less the same loop without
the call; the median of ``--rounds`` rounds). The writer's is the CPU its thread spends
(``time.thread_time``) writing ``--traces`` traces, then an expectation for each, to a real
``mlflow server`` (sqlite, on this host: its own CPU is not counted), as CPU microseconds a
trace and an expectation, and the HTTP calls made to MLflow (counted on its client).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.metrics import GatewayMetrics  # noqa: E402
from gateway.observability.records.record import InferenceRecord, LabelRecord  # noqa: E402
from gateway.observability.records.traces import TraceWriter  # noqa: E402

BODY = b'{"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[5.1, 3.5, 1.4, 0.2]]}}'
ANSWER = b'{"predictions": [0]}'


def _record(n: int) -> InferenceRecord:
    return InferenceRecord(
        "iris", 1, None, "default", f"bench-{n}", None, "mlflow", "application/json", BODY, ANSWER, 200, 0.002,
        time.time(),
    )  # fmt: skip


def offer_ns(offers: int, rounds: int) -> float:
    """The median CPU nanoseconds of one ``offer`` (queue never full, writer not started)."""
    figures = []
    record = _record(0)
    for _ in range(rounds):
        writer = TraceWriter(
            lambda: None,  # type: ignore[arg-type, return-value]
            experiment="bench",
            metrics=GatewayMetrics(),
            max_bytes=1 << 40,
            batch_size=100,
            sample=1.0,
            model_id=lambda *_: None,
        )
        start = time.process_time()
        for _ in range(offers):
            writer.offer(record)
        middle = time.process_time()
        for _ in range(offers):
            pass
        figures.append(((middle - start) - (time.process_time() - middle)) / offers * 1e9)
    return statistics.median(figures)


class _Counting:
    """Counts the HTTP calls MLflow's client makes: ``http_request``, which its REST calls use,
    where the REST client and the tracking store look it up."""

    def __init__(self) -> None:
        import mlflow.store.tracking.rest_store as store
        import mlflow.utils.rest_utils as rest

        self.calls = 0
        original = rest.http_request

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return original(*args, **kwargs)

        rest.http_request = counted  # type: ignore[assignment]
        store.http_request = counted  # type: ignore[attr-defined]


def writer_cost(traces: int, batch: int) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    from tests.support.servers import mlflow_server

    with tempfile.TemporaryDirectory() as root:
        server = mlflow_server(Path(root))
        server.start()
        try:
            uri = server.health_url.removesuffix("/health")
            metrics = GatewayMetrics()
            writer = TraceWriter(
                lambda: MlflowClient(uri),
                experiment="bench traces",
                metrics=metrics,
                max_bytes=1 << 40,
                batch_size=batch,
                sample=1.0,
                model_id=lambda *_: None,
            )
            spent: dict[str, float] = {"records": 0.0, "labels": 0.0}
            original = writer._write

            def timed(items: list[Any]) -> None:
                kind = "labels" if isinstance(items[0], LabelRecord) else "records"
                start = time.thread_time()
                original(items)
                spent[kind] += time.thread_time() - start

            writer._write = timed  # type: ignore[method-assign]
            writer._client = MlflowClient(uri)  # made before counting: the bench counts the writing
            writer._experiment_id = writer._client.create_experiment("bench traces")
            counting = _Counting()
            writer.start()
            for n in range(traces):
                writer.offer(_record(n))
            _wait(lambda: _count(metrics, "written") + _count(metrics, "failed") >= traces)
            calls_traces = counting.calls
            writer.offer_labels([LabelRecord(f"bench-{n}", "iris", "1", n % 3, time.time()) for n in range(traces)])
            _wait(lambda: _count(metrics, "expectation") + _count(metrics, "failed") >= traces)
            writer.close()
            assert _count(metrics, "failed") == 0, "MLflow refused traces: the figures would not be its cost"
            return {
                "writer_cpu_us_per_trace": spent["records"] / traces * 1e6,
                "writer_cpu_us_per_expectation": spent["labels"] / traces * 1e6,
                "mlflow_calls_per_trace": calls_traces / traces,
                "mlflow_calls_per_expectation": (counting.calls - calls_traces) / traces,
            }
        finally:
            server.stop()


def _count(metrics: GatewayMetrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("gateway_record_traces_total", {"outcome": outcome}) or 0.0


def _wait(done: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the writer did not finish in time")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offers", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--traces", type=int, default=500)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "offers": args.offers,
        "rounds": args.rounds,
        "traces": args.traces,
        "batch": args.batch,
        "offer_cpu_ns": offer_ns(args.offers, args.rounds),
        **writer_cost(args.traces, args.batch),
    }
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "bench" / "results" / f"trace-cost-{stamp}.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
