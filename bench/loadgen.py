"""A small closed-loop HTTP/1.1 load generator, run in its own process.

Used where wrk cannot do the job (traffic spread over many paths by weight, e.g. Zipf)
and as the fallback when wrk is not installed. Each connection keeps one keep-alive
socket and sends the next request as soon as the previous answer is read. Prints one
JSON object: requests, errors, seconds, req_s, p50_ms, p99_ms.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import random
import time
from pathlib import Path


class Target:
    """The paths to hit, each with a weight, and one body for all of them."""

    def __init__(
        self,
        paths: list[str],
        weights: list[float],
        body: bytes,
        content_type: str,
        headers: list[str] | None = None,
        key_header: str | None = None,
    ) -> None:
        self.paths = paths
        self.cumulative = list(itertools.accumulate(weights))
        self.body = body
        self.content_type = content_type
        self.headers = headers or []  # "Name: value"
        self.key_header = key_header  # sent with a new random value on every request

    def pick(self, rng: random.Random) -> str:
        return self.paths[bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])]


async def _one_connection(
    host: str, port: int, target: Target, deadline: float, latencies: list[float], errors: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    extra = "".join(f"{header}\r\n" for header in target.headers)
    head = f"Host: {host}:{port}\r\nContent-Type: {target.content_type}\r\n{extra}"
    head += f"Content-Length: {len(target.body)}\r\n\r\n"
    try:
        while time.perf_counter() < deadline:
            path = target.pick(rng)
            key = f"{target.key_header}: {rng.getrandbits(31)}\r\n" if target.key_header else ""
            started = time.perf_counter()
            writer.write(f"POST {path} HTTP/1.1\r\n{key}{head}".encode() + target.body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(status_line.split()[1]) if status_line else 0
            if not 200 <= status < 300:
                errors[0] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        errors[0] += 1  # a broken connection: count it and stop this connection
    finally:
        writer.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(host: str, port: int, target: Target, *, connections: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = [0]
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(_one_connection(host, port, target, deadline, latencies, errors, seed) for seed in range(connections))
    )
    seconds = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "seconds": seconds,
        "req_s": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def zipf_weights(count: int, s: float) -> list[float]:
    return [1 / rank**s for rank in range(1, count + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", action="append", required=True, help="Path to POST to (repeatable).")
    parser.add_argument("--zipf", type=float, default=None, help="Weight the paths, in order, by Zipf with this s.")
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' sent with every request.")
    parser.add_argument("--key-header", default=None, help="A header sent with a new random value on every request.")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()

    weights = zipf_weights(len(args.path), args.zipf) if args.zipf else [1.0] * len(args.path)
    target = Target(args.path, weights, args.body_file.read_bytes(), args.content_type, args.header, args.key_header)
    try:
        from uvloop import new_event_loop as loop_factory
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(drive(args.host, args.port, target, connections=args.connections, duration=args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
