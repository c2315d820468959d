"""A small closed-loop gRPC load generator for the OIP ``ModelInfer`` call, run in its own process.

wrk and bench/loadgen.py speak HTTP/1.1 only. This one sends one serialized
``inference.ModelInferRequest`` (``--body-file``, built by the harness) over
``--connections`` channels, each its own TCP connection (a local subchannel pool, so
channels to one address do not share one) with one call in flight: the closed loop
wrk runs over HTTP/1.1. With ``--shared``, one channel (one HTTP/2 connection) carries
``--connections`` calls in flight at once, as an application's one client does. Messages
go as bytes both ways (no (de)serializer), so the client spends nothing on protobuf.
Prints one JSON object: requests, errors, seconds, req_s, p50_ms, p99_ms, client_cpu_s
(this process's CPU time while driving: near ``seconds`` means the client, not the server, was the limit), first_error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

import grpc

METHOD = "/inference.GRPCInferenceService/ModelInfer"
OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _calls(
    channel: grpc.aio.Channel, body: bytes, deadline: float, latencies: list[float], errors: list[str], timeout: float
) -> None:
    call = channel.unary_unary(METHOD)  # bytes in, bytes out
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            await call(body, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            errors.append(f"{exc.code().name}: {exc.details()}")
            continue
        latencies.append(time.perf_counter() - started)


async def _one_channel(
    target: str, body: bytes, deadline: float, latencies: list[float], errors: list[str], timeout: float, calls: int
) -> None:
    async with grpc.aio.insecure_channel(target, options=OPTIONS) as channel:
        await asyncio.gather(*(_calls(channel, body, deadline, latencies, errors, timeout) for _ in range(calls)))


async def drive(
    target: str, body: bytes, *, connections: int, duration: float, timeout: float = 5.0, shared: bool = False
) -> dict[str, object]:
    latencies: list[float] = []
    errors: list[str] = []
    cpu = _cpu_seconds()
    started = time.perf_counter()
    deadline = started + duration
    channels, calls = (1, connections) if shared else (connections, 1)
    await asyncio.gather(
        *(_one_channel(target, body, deadline, latencies, errors, timeout, calls) for _ in range(channels))
    )
    return summary(latencies, errors, started=started, cpu=cpu)


def summary(latencies: list[float], errors: list[str], *, started: float, cpu: float) -> dict[str, object]:
    """The JSON object a load generator prints, for load that began at ``started``
    (``time.perf_counter()``) with the process's CPU time then ``cpu``."""
    seconds = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "seconds": seconds,
        "req_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "client_cpu_s": _cpu_seconds() - cpu,
        "first_error": errors[0] if errors else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--body-file", type=Path, required=True, help="A serialized ModelInferRequest.")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--shared", action="store_true", help="All calls on one channel (one HTTP/2 connection).")
    args = parser.parse_args()
    body = args.body_file.read_bytes()
    result = asyncio.run(
        drive(args.target, body, connections=args.connections, duration=args.duration, shared=args.shared)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
