"""What a setting costs, measured in pairs: ``.venv/bin/python bench/paired.py --env NAME=VALUE``.

The interleaved rounds of bench/run.py visit one gateway after another, seconds apart, and on
a shared VM the machine's speed moves by 10-20% between two points: a ratio of two points is
that noisy, and the median of eight is uncertain by about ±4%, more than the 3% a feature may
cost. Here the two gateways run **at the same time**: both pinned to the server CPU, each
driven by its own wrk (32 connections) from the load CPU over the same seconds, so whatever
slows the machine slows both, and what one costs more shows as the other's larger share of
the one core. The baseline is ``A`` (the bench's quiet default), ``B`` the same plus the
settings given; each round gives B's req/s over A's, and A's server CPU a request over B's
(both below 1 when B costs more). Two identical gateways (no ``--env``: the A/A control)
measured 1.007 and 1.005 (mean over 10 and 12 rounds; rounds spread ±2-3%).

With ``--otlp``, B exports its traces to an OTLP receiver in this process, on the load CPU;
with ``--keys``, B has API keys on (``GATEWAY_AUTH=keys``) and its load sends a key made with
``registry-gateway keys create`` (as bench/auth_cost.py); with ``--b-tree DIR``, B runs the
code of another checkout (``git worktree add DIR COMMIT``) with this one's environment, so two
commits are compared the same way. With ``--oidc`` (issue 53's comparison), A has API keys on
and its load sends a key, and B takes OIDC tokens (``GATEWAY_AUTH=oidc``) from an identity
provider run in this process (tests/support/issuer.py: discovery and a JWKS on loopback, an
RS256 token valid for the run) and its load sends a token: B/A is what a token costs over a key.
With ``--usage`` (issue 53's other comparison), both have API keys on and their loads send one,
A with usage counting off (``GATEWAY_USAGE_FLUSH_SECONDS=0``), B with it on (the default flush
interval): B/A is what counting each request's usage costs.
Prints each round and the summary; ``--json`` writes them
to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CONNECTIONS = 32


def summary(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Mean, median and standard deviation of each ratio over the rounds, and the standard
    error of the mean (the rounds are independent pairs)."""
    out: dict[str, float] = {"rounds": len(rounds)}
    for field in ("req_s", "cpu"):
        values = [r[field] for r in rounds]
        out[f"{field}_mean"] = statistics.fmean(values)
        out[f"{field}_median"] = statistics.median(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{field}_sd"] = spread
        out[f"{field}_sem"] = spread / len(values) ** 0.5
    return out


def _load_both(drive: Any, urls: list[str], body: Path, seconds: float, headers: list[dict[str, str]]) -> list[Any]:
    """Both gateways loaded over the same seconds, each by its own wrk on the load CPU."""
    results: list[Any] = [None, None]

    def load(i: int) -> None:
        results[i] = drive(
            urls[i], body, connections=CONNECTIONS, duration=seconds, cpus="1", headers=headers[i] or None
        )

    threads = [threading.Thread(target=load, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _by_thread_name(gateway: Any, before: dict[int, float], requests: int) -> dict[str, float]:
    """A gateway's CPU microseconds a request since ``before``, summed by its threads' names."""
    names = gateway.thread_names()
    out: dict[str, float] = {}
    for tid, seconds in gateway.thread_cpu_seconds().items():
        name = names.get(tid, "(unnamed)")
        out[name] = out.get(name, 0.0) + (seconds - before.get(tid, 0.0)) / max(requests, 1) * 1e6
    return out


def main() -> None:
    import harness
    from load import drive

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="A setting of B (repeat).")
    parser.add_argument("--otlp", action="store_true", help="B exports OTLP/HTTP to a receiver in this process.")
    parser.add_argument("--keys", action="store_true", help="B has API keys on; its load sends a key.")
    parser.add_argument("--oidc", action="store_true", help="A takes a key, B an OIDC token (issue 53).")
    parser.add_argument("--usage", action="store_true", help="Both take keys; A counts no usage, B does (issue 53).")
    parser.add_argument(
        "--b-tree", type=Path, default=None, metavar="DIR", help="B imports the gateway from this checkout."
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds of load a round.")
    parser.add_argument("--json", type=Path, default=None, help="Write the rounds and the summary here.")
    parser.add_argument(
        "--threads",
        action="store_true",
        help="Also print B's CPU by thread over all rounds (where a feature's cost runs).",
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    tracking_uri = harness.build_registry(harness.WORK / "registry")
    body = harness.write_bodies(harness.WORK)["iris"]
    os.sched_setaffinity(0, {1})  # this process, and the receiver's threads, on the load CPU
    rounds: list[dict[str, float]] = []
    with contextlib.ExitStack() as stack:
        if args.otlp:
            sys.path.insert(0, str(HERE.parent))
            from tests.support.otlp import OtlpReceiver

            receiver = stack.enter_context(OtlpReceiver("http/protobuf"))
            extra = {**receiver.env(), **extra}
        if args.keys or args.usage:
            extra = {"GATEWAY_AUTH": "keys", **extra}
        token = None
        if args.oidc:
            sys.path.insert(0, str(HERE.parent))
            from tests.support.issuer import AUDIENCE, TestIssuer

            issuer = TestIssuer()
            stack.callback(issuer.stop)
            issuer.add("k1")
            token = issuer.token("k1", exp=int(time.time()) + 3600)
            oidc = {"GATEWAY_AUTH": "oidc", "GATEWAY_OIDC_ISSUER": issuer.url, "GATEWAY_OIDC_AUDIENCE": AUDIENCE}
            extra = {**oidc, **extra}
        if args.b_tree is not None:  # ahead of the editable install on B's import path
            extra = {"PYTHONPATH": str(args.b_tree.resolve()), **extra}
        quiet = harness.QUIET_POLL
        second = harness.gateway(tracking_uri, "paired-b", cpus="0", env={**quiet, **extra})
        headers: list[dict[str, str]] = [{}, {}]
        if args.keys or args.usage:  # made before B starts: a gateway reads its keys at start
            import auth_cost

            headers[1] = auth_cost.bearer(harness.create_key(second, auth_cost.KEY))
        if token is not None:
            headers[1] = {"Authorization": f"Bearer {token}"}
        keyed_a = {**quiet, "GATEWAY_AUTH": "keys"}
        uncounted_a = {**keyed_a, "GATEWAY_USAGE_FLUSH_SECONDS": "0"}
        first = harness.gateway(
            tracking_uri, "paired-a", cpus="0", env=uncounted_a if args.usage else keyed_a if args.oidc else quiet
        )
        if args.oidc or args.usage:  # A: the same load with an API key, made before A starts
            import auth_cost

            headers[0] = auth_cost.bearer(harness.create_key(first, auth_cost.KEY))
        a = stack.enter_context(first)
        b = stack.enter_context(second)
        urls = [f"{g.url}/models/iris/predict" for g in (a, b)]
        for url, sent in zip(urls, headers, strict=True):
            harness.post(url, body.read_bytes(), sent)
        threads_before = [g.thread_cpu_seconds() for g in (a, b)]
        served = [0, 0]
        for n in range(1, args.rounds + 1):
            before = [g.cpu_seconds() for g in (a, b)]
            results = _load_both(drive, urls, body, args.seconds, headers)
            spent = [g.cpu_seconds() - c for g, c in zip((a, b), before, strict=True)]
            cpu_us = [cpu / result.requests * 1e6 for cpu, result in zip(spent, results, strict=True)]
            entry = {
                "a_req_s": results[0].req_s,
                "b_req_s": results[1].req_s,
                "a_cpu_us": cpu_us[0],
                "b_cpu_us": cpu_us[1],
                "req_s": results[1].req_s / results[0].req_s,
                "cpu": cpu_us[0] / cpu_us[1],
            }
            rounds.append(entry)
            served = [count + result.requests for count, result in zip(served, results, strict=True)]
            print(
                f"round {n}: A {entry['a_req_s']:.0f} req/s {cpu_us[0]:.0f} us/req, "
                f"B {entry['b_req_s']:.0f} req/s {cpu_us[1]:.0f} us/req: B/A {entry['req_s']:.3f}, "
                f"CPU A/B {entry['cpu']:.3f}",
                flush=True,
            )
        if args.otlp:
            spans = receiver.spans()
            names: dict[str, int] = {}
            for span in spans:
                names[span.name] = names.get(span.name, 0) + 1
            print(
                f"the receiver got {len(spans)} spans by then ({names}); B answered {served[1]} requests in the rounds"
            )
        if args.threads:
            per_request = [
                _by_thread_name(g, before, count)
                for g, before, count in zip((a, b), threads_before, served, strict=True)
            ]
            print("CPU a request by thread (us): A, B, B - A")
            for name in sorted(set(per_request[0]) | set(per_request[1]), key=lambda n: -per_request[1].get(n, 0.0)):
                us_a, us_b = per_request[0].get(name, 0.0), per_request[1].get(name, 0.0)
                print(f"  {name:<32} {us_a:8.1f} {us_b:8.1f} {us_b - us_a:+8.1f}")
    result = summary(rounds)
    what = " ".join(
        [
            *args.env,
            *(["(OTLP)"] if args.otlp else []),
            *(["(keys on)"] if args.keys else []),
            *(["(A: an API key, B: an OIDC token)"] if args.oidc else []),
            *(["(both keys; A: no usage counted, B: usage counted)"] if args.usage else []),
            *([f"(the code of {args.b_tree})"] if args.b_tree else []),
        ]
    )
    what = what or "nothing more"
    print(
        f"B with {what}: req/s {result['req_s_mean']:.3f}x A (mean of {len(rounds)} rounds, "
        f"median {result['req_s_median']:.3f}, sd {result['req_s_sd']:.3f}, standard error {result['req_s_sem']:.3f}); "
        f"CPU a request {result['cpu_mean']:.3f}x (median {result['cpu_median']:.3f}, standard error "
        f"{result['cpu_sem']:.3f})"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"env": extra, "rounds": rounds, "summary": result}, indent=2))


if __name__ == "__main__":
    main()
