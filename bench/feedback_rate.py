"""How many labels a second ``POST /feedback`` takes on one gateway process (issue 50: at least
5,000 a second in batches of 100).

Self-contained (not part of ``bench/run.py``)::

    .venv/bin/python bench/feedback_rate.py                 # sqlite state database
    .venv/bin/python bench/feedback_rate.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_feedback

One ``registry-gateway serve`` (its own process, an empty MLflow registry) on a fresh state
database in which ``--labels`` answers are kept for feedback first (as the gateway keeps them:
``FeedbackStore.keep``). Then ``--connections`` clients each send batches of ``--batch``
labels, one after another, each request id once, until every answer has its label: the
rate is labels accepted over the wall time of the sends; beside it, labels per CPU second of
the gateway process during the sends (on a machine shared with other work, the wall-clock
rate measures the machine). Every label must be accepted (anything else fails the run). A
PostgreSQL URL must name a database that exists and is empty: the script upgrades it and fills it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the gateway's own packages, for the state database

import httpx  # noqa: E402
from servers import Server, free_port  # noqa: E402

from registry_sync.database import make_engine, upgrade  # noqa: E402
from registry_sync.feedback import FeedbackStore, KeptPrediction  # noqa: E402
from registry_sync.identity import VersionId  # noqa: E402

TARGET = 5000.0  # labels a second, in batches of 100


def keep_answers(url: str, count: int) -> list[str]:
    engine = make_engine(url)
    upgrade(engine)
    store = FeedbackStore(engine)
    version = VersionId("iris", 1, "models:/m-bench", 1)
    ids = [f"bench-{i:08d}" for i in range(count)]
    now = time.time()
    for start in range(0, count, 1000):
        chunk = ids[start : start + 1000]
        kept = [KeptPrediction(r, version, "default", "classification", i % 3, None, now) for i, r in enumerate(chunk)]
        store.keep(kept, retention_seconds=3600)
    engine.dispose()
    return ids


async def send(url: str, ids: list[str], *, batch: int, connections: int) -> tuple[float, list[float], dict[str, int]]:
    batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in batches:
        queue.put_nowait(chunk)
    latencies: list[float] = []
    counts: dict[str, int] = {}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while not queue.empty():
                chunk = queue.get_nowait()
                body = [{"request_id": rid, "label": int(rid[-1]) % 3} for rid in chunk]
                started = time.perf_counter()
                answer = await http.post("/feedback", json=body)
                latencies.append(time.perf_counter() - started)
                answer.raise_for_status()
                for status, n in answer.json()["counts"].items():
                    counts[status] = counts.get(status, 0) + n

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return time.perf_counter() - started, latencies, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default: sqlite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feedback-bench-") as tmp:
        state = Path(tmp)
        database_url = args.database_url or f"sqlite:///{state / 'state.db'}"
        ids = keep_answers(database_url, args.labels)
        port = free_port()
        env = {
            "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
            "GATEWAY_DATABASE_URL": database_url,
            "GATEWAY_ARTIFACT_CACHE_DIR": str(state / "artifacts"),
            "GATEWAY_FEEDBACK_MAX_ITEMS": str(max(args.batch, 1000)),
            "GATEWAY_ACCESS_LOG": "false",
        }
        # This checkout's gateway (the venv's `registry-gateway` may be another checkout's).
        argv = [sys.executable, "-c", "from gateway.cli import main; main()", "serve"]
        server = Server(
            "gateway",
            [*argv, "--host", "127.0.0.1", "--port", str(port)],
            port=port,
            ready_path="/health/ready",
            predict_path="/",
            log=state / "gateway.log",
            env=env | {"PYTHONPATH": str(ROOT), "GATEWAY_DRAIN_SECONDS": "0"},
            cwd=ROOT,
        )
        try:
            with server:
                before = server.cpu_seconds()  # its start (imports, the first sync) is not the sends'
                seconds, latencies, counts = asyncio.run(
                    send(server.url, ids, batch=args.batch, connections=args.connections)
                )
                cpu = server.cpu_seconds() - before
        except Exception:
            print((state / "gateway.log").read_text()[-3000:], file=sys.stderr)
            raise
    rate = counts.get("accepted", 0) / seconds
    ordered = sorted(latencies)
    result = {
        "labels": args.labels,
        "batch": args.batch,
        "connections": args.connections,
        "database": "postgresql" if args.database_url else "sqlite",
        "seconds": round(seconds, 3),
        "labels_per_second": round(rate),
        "post_p50_ms": round(statistics.median(ordered) * 1000, 2),
        "post_p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
        "server_cpu_seconds": round(cpu, 2),
        # On a busy machine the wall-clock rate is the machine's; this one is the process's own:
        # what it takes with a core to itself (the database's own CPU, PostgreSQL's, not counted).
        "labels_per_server_cpu_second": round(counts.get("accepted", 0) / cpu) if cpu > 0 else None,
        "counts": counts,
        "target": TARGET,
        "met": rate >= TARGET and counts == {"accepted": args.labels},
    }
    print(json.dumps(result, indent=2))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
