"""The predict lane's own CPU, in process (issue 28): ``.venv/bin/python bench/lane_inprocess.py``.

Builds the gateway's app on the bench registry as ``registry-gateway serve`` does (settings from
the environment; the access log off, the prediction cache off, the registry polled once an
hour), runs its lifespan on uvloop, and calls the ASGI app directly: no sockets, no uvicorn.
``--connections`` clients each post the bench's one-row iris body to ``/models/iris/predict``
in turn (a client sends its next request when its answer is complete, as wrk does), and the
process's CPU time over a few thousand answered requests gives microseconds a request; the
best of ``--rounds``. The HTTP parsing and the socket writes that every server on uvicorn pays
(the bare floor's whole request) are left out, so what is measured is the gateway's own work
and the model's, and it repeats to within a microsecond or two where wrk's points move by 10%:
small enough to see what one change to the lane saves. To compare two commits, run it from
each (``PYTHONPATH=DIR`` imports the gateway of another checkout, ``git worktree add DIR REV``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PATH = "/models/iris/predict"


def scope_for(body: bytes) -> dict[str, Any]:
    """The ASGI scope uvicorn gives a wrk request to the predict path."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ],
        "state": {},
    }


async def one(app: Any, body: bytes) -> int:
    """One request through the app; its status."""
    scope = scope_for(body)
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a client that stays connected
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def load(app: Any, body: bytes, connections: int, requests: int) -> float:
    """CPU microseconds a request over ``requests`` answers from ``connections`` clients."""
    each = max(requests // connections, 1)
    failed = 0

    async def client() -> None:
        nonlocal failed
        for _ in range(each):
            if await one(app, body) != 200:
                failed += 1

    started = time.process_time()
    await asyncio.gather(*(client() for _ in range(connections)))
    spent = time.process_time() - started
    if failed:
        raise RuntimeError(f"{failed} of {each * connections} requests were not answered 200")
    return spent / (each * connections) * 1e6


async def measure(tracking_uri: str, body: bytes, args: argparse.Namespace) -> dict[int, list[float]]:
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    with tempfile.TemporaryDirectory() as state:
        os.environ.update(
            {
                "MLFLOW_TRACKING_URI": tracking_uri,
                "GATEWAY_DATABASE_URL": f"sqlite:///{state}/state.db",
                "GATEWAY_ARTIFACT_CACHE_DIR": f"{state}/artifacts",
                "GATEWAY_PREDICTION_CACHE": "off",
                "GATEWAY_ACCESS_LOG": "false",
                "GATEWAY_POLL_INTERVAL_SECONDS": "3600",
                **dict(item.split("=", 1) for item in args.env),
            }
        )
        app = create_app(GatewaySettings())
        results: dict[int, list[float]] = {c: [] for c in args.connections}
        async with app.router.lifespan_context(app):
            for connections in args.connections:
                await load(app, body, connections, args.requests // 4)  # warm-up
            for _ in range(args.rounds):
                for connections in args.connections:
                    results[connections].append(await load(app, body, connections, args.requests))
        return results


def main() -> None:
    # The gateway first: bench/run.py puts this checkout on the path, ahead of PYTHONPATH.
    gateway = importlib.import_module("gateway")
    import harness
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=8_000, help="Requests a round at each concurrency.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="A setting (repeat).")
    args = parser.parse_args()
    tracking_uri = harness.build_registry(harness.WORK / "registry")
    body = harness.write_bodies(harness.WORK)["iris"].read_bytes()
    os.sched_setaffinity(0, {0})  # one core, as the bench's servers
    results = uvloop.run(measure(tracking_uri, body, args))
    print(f"the gateway of {Path(gateway.__file__).parent.parent}, {' '.join(args.env) or 'default settings'}:")
    for connections, rounds in results.items():
        shown = ", ".join(f"{r:.1f}" for r in rounds)
        print(
            f"  {connections:>3} clients: {min(rounds):.1f} us of CPU a request (best of {len(rounds)}; "
            f"median {statistics.median(rounds):.1f}; rounds {shown})"
        )


if __name__ == "__main__":
    main()
