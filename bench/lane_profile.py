"""Where the predict lane's time goes (issue 28): ``.venv/bin/python bench/lane_profile.py``.

Starts one gateway on the bench registry as the bench does (pinned to CPU 0, the access log
off, the prediction cache off), drives ``POST /models/iris/predict`` with wrk from CPU 1 at 1
and at 32 connections, and samples the gateway with py-spy (``py-spy record --gil --format raw``: only threads
holding the GIL, i.e. running Python or C called from it, not pool threads waiting for work)
while each load runs. Each sample is put in the first category its
stack matches, read from the innermost frame outwards (so sklearn inside the fast path counts
as the model, prometheus_client inside the gateway's metrics as metrics), and the report gives
each category's share of the samples, then the frames most often innermost. Writes
bench/results/lane-profile-<UTC time>.md. Needs py-spy (the dev extra) and wrk (``make bench``
installs it); run it on a quiet machine: what else runs shows up as time the gateway waits.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# (category, patterns matched against "function (file)"), most specific first.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the model (sklearn predict)", ("sklearn/", "torch/", "scipy/", "numpy/")),
    (
        "metrics (prometheus_client, the loop-owned ones)",
        ("prometheus_client/", "gateway/metrics.py", "gateway/loop_metrics.py"),
    ),
    ("logging", ("logging/", "gateway/observability/logs.py")),
    ("tracing: OpenTelemetry's SDK and exporter", ("opentelemetry/", "google/protobuf/", "requests/", "urllib3/")),
    ("request context, ids, tracing", ("gateway/observability/",)),
    ("decode (JSON to rows)", ("orjson", "fastpath.py", "mlflow_scoring.py", "oip_codec.py", "request_body.py")),
    ("the batch: decode, predict, encode", ("gateway/dataplane/inference.py",)),
    ("hand-off to the batcher (queue, futures, pool)", ("batching.py", "predictor.py", "concurrent/futures/")),
    ("threads (pool wake-ups, GIL hand-over)", ("threading.py", "queue.py")),
    ("model cache (lease, LRU)", ("gateway/dataplane/cache.py", "gateway/dataplane/loader.py")),
    ("admission (keys, limits)", ("gateway/admission/",)),
    ("routing and selectors", ("gateway/routing/", "gateway/wire/selectors.py")),
    ("the data plane's seam (counts, guard)", ("gateway/process.py", "gateway/rooms/")),
    ("protocol adapter (headers, answer)", ("gateway/protocols/",)),
    ("gateway ASGI app", ("gateway/app.py", "gateway/http/")),
    ("HTTP (uvicorn, httptools)", ("uvicorn/", "httptools", "h11")),
    ("event loop", ("asyncio/", "uvloop", "runners.py")),
)
OTHER = "other"
_LINE = re.compile(r":\d+\)")


def category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, patterns in CATEGORIES:
            if any(pattern in frame for pattern in patterns):
                return name
    return OTHER


def breakdown(raw: str) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """(samples by category, samples by innermost frame, total) of py-spy's raw output."""
    by_category: collections.Counter[str] = collections.Counter()
    innermost: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")]
        samples = int(count)
        total += samples
        by_category[category(frames)] += samples
        innermost[frames[-1]] += samples
    return by_category, innermost, total


def render(results: dict[int, tuple[collections.Counter[str], collections.Counter[str], int, float]]) -> str:
    lines = ["# Where the predict lane's time goes", "", __doc__.split("\n\n")[1].replace("\n", " "), ""]
    lines += ["| category | " + " | ".join(f"c{c}" for c in results) + " |"]
    lines += ["|---|" + "--:|" * len(results)]
    names = [name for name, _ in CATEGORIES] + [OTHER]
    for name in names:
        cells = [f"{100 * by[name] / total:.1f}%" if total else "–" for by, _, total, _ in results.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| req/s during the sampling | " + " | ".join(f"{r:,.0f}" for *_, r in results.values()) + " |")
    for connections, (_, innermost, total, _) in results.items():
        lines += ["", f"Innermost frames at {connections} connections (share of samples):", ""]
        lines += [f"- {100 * n / total:.1f}% `{frame}`" for frame, n in innermost.most_common(15)]
    return "\n".join(lines) + "\n"


def main() -> None:
    import harness
    from load import drive

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="Sampling seconds at each concurrency.")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A setting for the profiled gateway (repeat it), e.g. --env GATEWAY_TRACING=otlp: what a feature costs.",
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    spy = shutil.which("py-spy") or str(harness.VENV_BIN / "py-spy")
    tracking_uri = harness.build_registry(harness.WORK / "registry")
    body = harness.write_bodies(harness.WORK)["iris"]
    env = {"GATEWAY_ACCESS_LOG": "false", **harness.QUIET_POLL, **extra}
    results = {}
    with harness.gateway(tracking_uri, "profile", cpus="0", env=env) as gw:
        url = f"{gw.url}/models/iris/predict"
        harness.post(url, body.read_bytes())
        assert gw.process is not None
        for connections in (1, 32):
            drive(url, body, connections=connections, duration=2, cpus="1")  # warm-up
            out = harness.WORK / f"lane-profile-c{connections}.txt"
            load: dict[str, float] = {}

            def loaded(c: int = connections, into: dict[str, float] = load) -> None:
                into["req_s"] = drive(url, body, connections=c, duration=args.seconds + 2, cpus="1").req_s

            thread = threading.Thread(target=loaded)
            thread.start()
            time.sleep(1)
            argv = [spy, "record", "-p", str(gw.process.pid), "-d", str(round(args.seconds)), "-r", "250", "--gil"]
            subprocess.run([*argv, "--format", "raw", "-o", str(out)], check=True, capture_output=True)
            thread.join()
            by_category, innermost, total = breakdown(out.read_text())
            results[connections] = (by_category, innermost, total, load["req_s"])
    report = render(results)
    path = harness.RESULTS / f"lane-profile-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    path.write_text(report)
    print(report)
    print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
