"""Drive a server with wrk (or, without wrk, bench/loadgen.py) and read back one result; gRPC
with bench/grpc_load.py, bench/triton_threads.py or h2load (nghttp2's HTTP/2 load generator)."""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadgen import percentile, zipf_weights

HERE = Path(__file__).resolve().parent
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class Result:
    req_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    tool: str
    extra: dict[str, object] = field(default_factory=dict)  # what one tool alone reports

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out |= out.pop("extra")
        return out


def _taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def wrk_version() -> str | None:
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    return out.split("Copyright")[0].strip() or "wrk"


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Result:
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return Result(
        req_s=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(percentiles["50"]) if requests else math.nan,  # wrk prints 0.00us for no answers
        p99_ms=_ms(percentiles["99"]) if requests else math.nan,
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
        requests=requests,
        tool="wrk",
    )


def drive(
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration: float,
    cpus: str | None = None,
    paths: list[str] | None = None,
    zipf: float | None = None,
    force_python: bool = False,
    threads: int = 1,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    key_header: str | None = None,
) -> Result:
    """POST ``body_file`` to ``url`` from ``connections`` keep-alive connections for ``duration`` s.

    ``paths`` (with optional ``zipf`` weights) spreads the requests over several paths of the
    same server (wrk draws them in bench/post.lua, bench/loadgen.py likewise). ``headers`` go
    with every request; ``key_header`` too, with a new random value each time (a route key
    per request: callers spread over a keyed split).
    """
    if shutil.which("wrk") and not force_python:
        env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_CONTENT_TYPE": content_type}
        env["BENCH_HEADERS"] = "\n".join(f"{name}: {value}" for name, value in (headers or {}).items())
        env["BENCH_KEY_HEADER"] = key_header or ""
        if paths:
            weights = zipf_weights(len(paths), zipf) if zipf else [1.0] * len(paths)
            env["BENCH_PATHS"] = "\n".join(f"{weight!r} {path}" for weight, path in zip(weights, paths, strict=True))
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "5s",
            "--latency",
        ]
        argv += ["-s", str(HERE / "post.lua"), url]
        done = subprocess.run(_taskset(cpus) + argv, env=env, capture_output=True, text=True, check=True)
        return parse_wrk(done.stdout)
    base, _, path = url.partition("://")[2].partition("/")
    host, _, port = base.partition(":")
    argv = [sys.executable, str(HERE / "loadgen.py"), "--host", host, "--port", port, "--body-file", str(body_file)]
    argv += ["--connections", str(connections), "--duration", str(duration), "--content-type", content_type]
    for name, value in (headers or {}).items():
        argv += ["--header", f"{name}: {value}"]
    if key_header:
        argv += ["--key-header", key_header]
    for each in paths or ["/" + path]:
        argv += ["--path", each]
    if zipf:
        argv += ["--zipf", str(zipf)]
    done = subprocess.run(_taskset(cpus) + argv, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    return Result(out["req_s"], out["p50_ms"], out["p99_ms"], out["errors"], out["requests"], tool="loadgen.py")


def drive_grpc(
    target: str,
    body_file: Path,
    *,
    connections: int,
    duration: float,
    cpus: str | None = None,
    shared: bool = False,
    script: str = "grpc_load.py",
) -> Result:
    """Closed-loop OIP ``ModelInfer`` calls to ``target`` (host:port) with bench/grpc_load.py
    (``shared``: all on one channel), or another script that takes the same arguments and
    prints the same JSON (bench/triton_threads.py), or h2load (``script=H2LOAD``); the
    client's CPU seconds and its first error come back in ``extra``."""
    if script == H2LOAD:
        return drive_h2load(target, body_file, connections=connections, duration=duration, cpus=cpus, shared=shared)
    argv = [sys.executable, str(HERE / script), "--target", target, "--body-file", str(body_file)]
    argv += ["--connections", str(connections), "--duration", str(duration)] + (["--shared"] if shared else [])
    done = subprocess.run(_taskset(cpus) + argv, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    result = Result(out["req_s"], out["p50_ms"], out["p99_ms"], out["errors"], out["requests"], tool=script)
    result.extra = {"client_cpu_s": out["client_cpu_s"], "seconds": out["seconds"], "first_error": out["first_error"]}
    return result


H2LOAD = "h2load"
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"


def grpc_frame(message: bytes) -> bytes:
    """One gRPC message on the wire: not compressed, its length, the bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def drive_h2load(
    target: str, body_file: Path, *, connections: int, duration: float, cpus: str | None = None, shared: bool = False
) -> Result:
    """Closed-loop unary ``ModelInfer`` calls with h2load: ``connections`` HTTP/2 connections
    with one call in flight each, or (``shared``) one connection with ``connections`` calls in
    flight, posting ``body_file`` (a serialized ``ModelInferRequest``) framed as gRPC does. A
    client in C, so the load is not limited by a Python client's CPU as bench/grpc_load.py's is.

    h2load reads HTTP statuses only: a gRPC error travels in a 200's trailers and counts as an
    answer here, so the bench checks a call before a server's points (and, on the gateway,
    counts what its batcher served)."""
    clients, streams = (1, connections) if shared else (connections, 1)
    with tempfile.TemporaryDirectory(prefix="h2load-") as scratch:
        framed, log = Path(scratch) / "body", Path(scratch) / "log"
        framed.write_bytes(grpc_frame(body_file.read_bytes()))
        argv = [H2LOAD, "-c", str(clients), "-m", str(streams), "-D", str(max(1, round(duration)))]
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(framed)]
        argv += ["--log-file", str(log), f"http://{target}{GRPC_PATH}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(_taskset(cpus) + argv, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows = [line.split("\t") for line in log.read_text().splitlines() if line]  # start, status, microseconds
        latencies = [int(row[2]) / 1000 for row in rows if row[1].startswith("2")]
    return parse_h2load(done.stdout, latencies, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))


def parse_h2load(output: str, latencies_ms: list[float], client_cpu_s: float) -> Result:
    """h2load's summary and its per-request log (the answered calls' latencies in ms) as a
    Result. h2load counts a 4xx or 5xx answer as failed and a 3xx as succeeded; here a
    call is answered with a 2xx, and everything else is an error (a run that answered nothing
    is one even when h2load could not connect and so counted no request at all)."""
    seconds = _ms(re.search(r"finished in (\S+?),", output).group(1)) / 1000  # type: ignore[union-attr]
    counts = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", output)
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    assert counts is not None and statuses is not None, output
    redirected = int(statuses.group(2))
    answered = int(counts.group(2)) - redirected
    errors = int(counts.group(3)) + redirected
    if not answered:
        errors = max(errors, int(counts.group(1)), 1)
    p50, p99 = percentile(latencies_ms, 0.5), percentile(latencies_ms, 0.99)
    result = Result(answered / seconds, p50, p99, errors, answered, tool=H2LOAD)
    first_error = None if answered else "no call was answered"
    result.extra = {"client_cpu_s": client_cpu_s, "seconds": seconds, "first_error": first_error}
    return result
