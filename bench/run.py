"""The benchmark: the gateway against `mlflow models serve`, MLServer and a constant floor.

``make bench`` (or ``.venv/bin/python bench/run.py``) builds one scratch registry in
bench/.work/, starts each server on it in turn, drives each with the same load, and
writes bench/results/<UTC time>.md and .json and bench/results/latest.md.
See bench/README.md for what each section measures. Each section is a module of
bench/sections/; what they share is bench/harness.py. This module is the command: which
sections run, in what order, and the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import auth_cost  # noqa: E402
import flavor_rows  # noqa: E402
import fleet  # noqa: E402
import grpc_rows  # noqa: E402
import isolated_cost  # noqa: E402
import lane  # noqa: E402
import memory_churn  # noqa: E402
import observability_cost  # noqa: E402
import oip_rows  # noqa: E402
import registry_scale  # noqa: E402
import sections.alias  # noqa: E402
import sections.auth  # noqa: E402
import sections.cold  # noqa: E402
import sections.cold_sizes  # noqa: E402
import sections.flavors  # noqa: E402
import sections.fleet  # noqa: E402
import sections.grpc  # noqa: E402
import sections.isolated  # noqa: E402
import sections.lane  # noqa: E402
import sections.main  # noqa: E402
import sections.memory  # noqa: E402
import sections.observability  # noqa: E402
import sections.oip  # noqa: E402
import sections.registry_scale  # noqa: E402
import sections.spread  # noqa: E402
import sections.torch  # noqa: E402
import sections.traffic  # noqa: E402
import sections.workers  # noqa: E402
import sections.zipf  # noqa: E402
import spread  # noqa: E402
import traffic_split  # noqa: E402
from harness import (  # noqa: E402
    BARE_FLOOR,
    FLOOR,
    RESULTS,
    WORK,
    Run,
    build_registry,
    ensure_mlserver,
    gateway,
    guarded,
    write_bodies,
)
from load import wrk_version  # noqa: E402
from report import fmt  # noqa: E402

SECTIONS = (
    "main",
    "cold",
    "alias",
    "zipf",
    "torch",
    "workers",
    "registry-scale",
    "memory",
    "oip",
    "traffic",
    "auth",
    "isolated",
    "observability",
    "grpc",
    "lane",
    "spread",
    "cold-sizes",
    "fleet",
    "flavors",
)


def _find(rows: list[dict[str, object]], server: str, connections: int) -> dict[str, object] | None:
    return next((r for r in rows if r["server"] == server and r["connections"] == connections), None)


def targets(run: Run) -> list[tuple[str, str, bool | None]]:
    gw, ml, fl = "gateway", "mlflow models serve", FLOOR
    g32, m32, f32 = (_find(run.main, name, 32) for name in (gw, ml, fl))
    g1, f1 = _find(run.main, gw, 1), _find(run.main, fl, 1)
    out: list[tuple[str, str, bool | None]] = []
    if g32 and m32:
        ratio = float(g32["req_s"]) / float(m32["req_s"])  # type: ignore[arg-type]
        out.append(("32 conns: req/s ≥ 6× mlflow models serve", f"{ratio:.1f}×", ratio >= 6))
    if g32 and f32:
        ratio = float(g32["req_s"]) / float(f32["req_s"])  # type: ignore[arg-type]
        out.append(("32 conns: req/s ≥ 0.6× the floor", f"{ratio:.2f}×", ratio >= 0.6))
    if g32:
        p99 = float(g32["p99_ms"])  # type: ignore[arg-type]
        out.append(("32 conns: p99 < 25 ms", f"{p99:.1f} ms", p99 < 25))
    if g1 and f1:
        gap = float(g1["p50_ms"]) - float(f1["p50_ms"])  # type: ignore[arg-type]
        out.append(("1 conn: p50 within 0.5 ms of the floor's", f"+{gap:.2f} ms", gap <= 0.5))
    workers = run.sections.get("workers")
    if isinstance(workers, list) and len(workers) > 1:
        one, most = workers[0], workers[-1]
        n = int(most["workers"])  # type: ignore[call-overload]
        scale = float(most["req_s"]) / float(one["req_s"])  # type: ignore[arg-type]
        per_cpu = float(most["req_per_cpu_s"]) / float(one["req_per_cpu_s"])  # type: ignore[arg-type]
        if run.sections.get("workers_dedicated"):
            out.append((f"{n} workers on {n} cores ≥ {0.8 * n:g}× one worker", f"{scale:.2f}×", scale >= 0.8 * n))
        else:
            note = (
                f"{n} workers on {n} cores ≥ {0.8 * n:g}× one worker: needs {2 * n}+ CPUs (the load generator "
                f"needs its own); here {n} workers gave {scale:.2f}× the req/s sharing the cores with it, "
                f"and {per_cpu:.2f}× the requests per CPU-second"
            )
            out.append((note, "not measurable here", None))
    out += registry_scale.targets(run.sections.get("registry-scale"))  # type: ignore[arg-type]
    out += memory_churn.targets(run.sections.get("memory"))  # type: ignore[arg-type]
    out += oip_rows.targets(run.sections.get("oip"))  # type: ignore[arg-type]
    out += traffic_split.targets(run.sections.get("traffic"))  # type: ignore[arg-type]
    out += auth_cost.targets(run.sections.get("auth"))  # type: ignore[arg-type]
    out += isolated_cost.targets(run.sections.get("isolated"))  # type: ignore[arg-type]
    out += observability_cost.targets(run.sections.get("observability"))  # type: ignore[arg-type]
    out += grpc_rows.targets(run.sections.get("grpc"))  # type: ignore[arg-type]
    out += spread.targets(run.sections.get("spread"))  # type: ignore[arg-type]
    out += lane.targets(run.sections.get("lane"))  # type: ignore[arg-type]
    out += fleet.targets(run.sections.get("fleet"))  # type: ignore[arg-type]
    out += flavor_rows.targets(run.sections.get("flavors"))  # type: ignore[arg-type]
    return out


def _json_safe(value: object) -> object:
    """NaN (no measurement) as null, so the .json file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def render(run: Run, machine: dict[str, str]) -> str:
    pinning = (
        "server pinned to CPU 0, load generator to CPU 1 (taskset)"
        if run.pin
        else "nothing pinned (fewer than 2 CPUs): server and load generator share the machine"
    )
    lines = [
        f"# Benchmark, {run.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- Machine: {machine['cpus']} CPUs ({machine['cpu']}), Python {platform.python_version()}, "
        f"load average before the run {machine['load_before']}, after {machine['load_after']}.",
        f"- {pinning}; load from {machine['loadgen']}, {run.duration:g} s per point after a {run.warmup:g} s warm-up.",
        "- One row per request: iris LogisticRegression, JSON `dataframe_split`, the same registry and "
        "version (`models:/iris/1`) for every server.",
        "- Gateway: one worker, **prediction cache off** (`GATEWAY_PREDICTION_CACHE=off`), everything else default.",
        "- Peak RSS: VmHWM summed over the server's process tree, read after each point.",
    ]
    if run.main:
        lines += ["", "## Throughput and latency", ""]
        lines += [
            "| server | conns | req/s | p50 ms | p99 ms | errors | peak RSS MiB | ÷ mlflow | ÷ floor | ÷ bare ASGI |"
        ]
        lines += ["|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for entry in run.main:
        conns = int(entry["connections"])  # type: ignore[call-overload]
        ratios = []
        for other in ("mlflow models serve", FLOOR, BARE_FLOOR):
            base = _find(run.main, other, conns)
            ratios.append(f"{float(entry['req_s']) / float(base['req_s']):.2f}×" if base else "–")  # type: ignore[arg-type]
        lines.append(
            f"| {entry['server']} | {conns} | {fmt(entry['req_s'], 0)} | {fmt(entry['p50_ms'], 2)} | "
            f"{fmt(entry['p99_ms'], 2)} | {entry['errors']} | {fmt(entry['peak_rss_mb'], 0)} | {' | '.join(ratios)} |"
        )
    checks = targets(run)
    if checks:
        lines += ["", "## Targets", "", "| target | measured | |", "|---|--:|---|"]
        verdicts = {True: "pass", False: "FAIL", None: "–"}
        lines += [f"| {name} | {value} | {verdicts[ok]} |" for name, value, ok in checks]
    cold = run.sections.get("cold")
    if isinstance(cold, list):
        lines += ["", "## A cold version: first request", ""]
        lines += ["A version the gateway had synced (fetched, hashed) but never loaded, against"]
        lines += ["`mlflow.pyfunc.load_model` + one predict in a process that had loaded another sklearn model.", ""]
        lines += ["| version | gateway 1st request ms | gateway 2nd ms | load_model + predict ms |"]
        lines += ["|---|--:|--:|--:|"]
        for entry in cold:
            lines.append(
                f"| {entry['version']} | {fmt(entry['gateway_first_ms'])} | {fmt(entry['gateway_second_ms'], 2)} | "
                f"{fmt(entry['load_model_predict_ms'])} |"
            )
    alias = run.sections.get("alias")
    if isinstance(alias, dict):
        steady, moving = alias["steady"], alias["moving"]
        lines += ["", "## An alias moving under load", ""]
        lines += [f"`/models/iris/versions/champion/predict` at {alias['connections']} conns; champion flips 1 ↔ 2"]
        lines += [f"every second (MLflow alias, then `POST /admin/sync`): {alias['flips']} flips, each done in"]
        lines += [f"{fmt(alias['flip_ms_median'], 0)} ms median, {fmt(alias['flip_ms_max'], 0)} ms max (from setting"]
        missed = alias["flips_not_served"]
        lines += [f"the alias to the sync's answer); {missed} flips not served by the next request.", ""]
        lines += ["| | req/s | p50 ms | p99 ms | errors |", "|---|--:|--:|--:|--:|"]
        for label, data in (("alias still", steady), ("alias moving", moving)):
            lines.append(
                f"| {label} | {fmt(data['req_s'], 0)} | {fmt(data['p50_ms'], 2)} | {fmt(data['p99_ms'], 2)} "
                f"| {data['errors']} |"
            )
    zipf = run.sections.get("zipf")
    if isinstance(zipf, dict):
        lines += ["", "## Zipf traffic over more models than fit", ""]
        lines += [f"{zipf['models']} models, `GATEWAY_MAX_LOADED_MODELS={zipf['room']}`, model picked by Zipf"]
        lines += [f"s={zipf['s']} (the {zipf['room']} most popular get {zipf['top10_share']:.0%} of requests),"]
        lines += [f"{zipf['connections']} conns for {zipf['seconds']:g} s, Python load generator.", ""]
        lines += ["| req/s | p50 ms | p99 ms | errors | hit rate | loads | evictions | peak RSS MiB |"]
        lines += ["|--:|--:|--:|--:|--:|--:|--:|--:|"]
        lines.append(
            f"| {fmt(zipf['req_s'], 0)} | {fmt(zipf['p50_ms'], 2)} | {fmt(zipf['p99_ms'], 2)} | {zipf['errors']} | "
            f"{zipf['hit_rate']:.1%} | {zipf['model_loads']:.0f} | {zipf['cache_evictions']:.0f} | "
            f"{fmt(zipf['peak_rss_mb'], 0)} |"
        )
    torch = run.sections.get("torch")
    if isinstance(torch, list):
        lines += ["", "## The torch model (tiny-torch, `inputs`)", ""]
        lines += ["| server | conns | req/s | p50 ms | p99 ms | errors | peak RSS MiB |"]
        lines += ["|---|--:|--:|--:|--:|--:|--:|"]
        for entry in torch:
            lines.append(
                f"| {entry['server']} | {entry['connections']} | {fmt(entry['req_s'], 0)} | "
                f"{fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | {entry['errors']} | "
                f"{fmt(entry['peak_rss_mb'], 0)} |"
            )
    workers = run.sections.get("workers")
    if isinstance(workers, list) and workers:
        lines += ["", "## Scaling with --workers", ""]
        if run.sections.get("workers_dedicated"):
            lines += ["N workers pinned to CPUs 0…N-1, wrk with N threads on CPUs N…2N-1; 32·N connections.", ""]
        else:
            lines += [
                "Too few CPUs to give workers and the load generator cores of their own: everything shares "
                "every CPU, so req/s mostly shows the load generator's share. Requests per CPU-second of the "
                "server's processes show whether workers cost each other anything. 32·N connections.",
                "",
            ]
        base = workers[0]
        lines += ["| workers | conns | req/s | × 1 worker | p50 ms | p99 ms | errors | server CPU-s | req per CPU-s |"]
        lines += ["|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for entry in workers:
            scale = float(entry["req_s"]) / float(base["req_s"])  # type: ignore[arg-type]
            lines.append(
                f"| {entry['workers']} | {entry['connections']} | {fmt(entry['req_s'], 0)} | {scale:.2f}× | "
                f"{fmt(entry['p50_ms'], 2)} | {fmt(entry['p99_ms'], 2)} | {entry['errors']} | "
                f"{fmt(entry['server_cpu_s'], 1)} | {fmt(entry['req_per_cpu_s'], 0)} |"
            )
    lines += registry_scale.render(run.sections.get("registry-scale"))  # type: ignore[arg-type]
    lines += memory_churn.render(run.sections.get("memory"))  # type: ignore[arg-type]
    lines += oip_rows.render(run.sections.get("oip"))  # type: ignore[arg-type]
    lines += traffic_split.render(run.sections.get("traffic"))  # type: ignore[arg-type]
    lines += auth_cost.render(run.sections.get("auth"))  # type: ignore[arg-type]
    lines += isolated_cost.render(run.sections.get("isolated"))  # type: ignore[arg-type]
    lines += observability_cost.render(run.sections.get("observability"))  # type: ignore[arg-type]
    lines += grpc_rows.render(run.sections.get("grpc"))  # type: ignore[arg-type]
    lines += lane.render(run.sections.get("lane"))  # type: ignore[arg-type]
    lines += spread.render(run.sections.get("spread"))  # type: ignore[arg-type]
    lines += spread.render_cold(run.sections.get("cold-sizes"))  # type: ignore[arg-type]
    lines += fleet.render(run.sections.get("fleet"))  # type: ignore[arg-type]
    lines += flavor_rows.render(run.sections.get("flavors"))  # type: ignore[arg-type]
    if run.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in run.notes]
    return "\n".join(lines) + "\n"


def machine_facts(loadgen: str) -> dict[str, str]:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"cpus": str(os.cpu_count()), "cpu": cpu, "load_before": load, "load_after": "", "loadgen": loadgen}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Short smoke run (2 s points, 0.5 s warm-up).")
    parser.add_argument("--duration", type=float, default=None, help="Seconds per point (default 10).")
    parser.add_argument("--warmup", type=float, default=None, help="Warm-up seconds before each point (default 2).")
    parser.add_argument("--connections", default="1,8,32,128", help="Comma-separated (default 1,8,32,128).")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"Comma-separated of: {', '.join(SECTIONS)}.")
    parser.add_argument(
        "--rounds", type=int, default=6, help="Rounds of the interleaved sections (auth, observability; default 6)."
    )
    parser.add_argument("--no-mlserver", action="store_true", help="Skip MLServer.")
    parser.add_argument(
        "--scale-sizes",
        default=None,
        help="registry-scale: comma-separated version counts (default 1000,10000; 1000 with --quick).",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    only = set(args.only.split(","))
    if unknown := only - set(SECTIONS):
        sys.exit(f"unknown sections: {', '.join(sorted(unknown))}")
    run = Run(
        duration=args.duration or (2.0 if args.quick else 10.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0),
        connections=[int(c) for c in args.connections.split(",")],
        pin=(os.cpu_count() or 1) >= 2,
        rounds=args.rounds,
    )
    loadgen = wrk_version() or "bench/loadgen.py (wrk not installed)"
    machine = machine_facts(f"{loadgen}, 1 thread" if loadgen.startswith("wrk") else loadgen)
    WORK.mkdir(exist_ok=True)
    RESULTS.mkdir(exist_ok=True)
    if only - {"registry-scale", "memory", "cold-sizes"}:  # those build registries of their own
        run.log(f"building (or reusing) the registry in {WORK / 'registry'}")
        tracking_uri = build_registry(WORK / "registry")
        bodies = write_bodies(WORK)

    def gateway_sections() -> None:
        with gateway(tracking_uri, "main", cpus=run.server_cpus) as gw:
            run.log(f"gateway ready in {gw.ready_seconds:.1f} s")
            run.notes.append(f"The gateway was ready {gw.ready_seconds:.1f} s after start (53 models to sync).")
            if "cold" in only:
                guarded(run, "cold", lambda: sections.cold.section(run, gw, tracking_uri, bodies))
            if "main" in only:
                sections.main.main_points(run, gw, bodies)
            if "torch" in only:
                guarded(run, "torch", lambda: sections.torch.section(run, gw, bodies))
            if "alias" in only:
                guarded(run, "alias", lambda: sections.alias.section(run, gw, tracking_uri, bodies))

    if only & {"main", "cold", "torch", "alias"}:
        guarded(run, "gateway", gateway_sections)
    if "main" in only:
        sections.main.section(run, tracking_uri, bodies, no_mlserver=args.no_mlserver)
    if "zipf" in only:
        guarded(run, "zipf", lambda: sections.zipf.section(run, tracking_uri, bodies))
    if "workers" in only:
        guarded(run, "workers", lambda: sections.workers.section(run, tracking_uri, bodies))
    if "registry-scale" in only:
        sizes = [int(size) for size in (args.scale_sizes or ("1000" if args.quick else "1000,10000")).split(",")]
        guarded(run, "registry-scale", lambda: sections.registry_scale.section(run, sizes))
    if "memory" in only:
        guarded(run, "memory", lambda: sections.memory.section(run, args.quick))
    if "oip" in only:
        reason = "--no-mlserver" if args.no_mlserver else ensure_mlserver(run)
        guarded(run, "oip", lambda: sections.oip.section(run, tracking_uri, bodies, reason))
    if "traffic" in only:
        guarded(run, "traffic", lambda: sections.traffic.section(run, tracking_uri, bodies))
    if "auth" in only:
        guarded(run, "auth", lambda: sections.auth.section(run, tracking_uri, bodies))
    if "isolated" in only:
        guarded(run, "isolated", lambda: sections.isolated.section(run, tracking_uri, bodies))
    if "observability" in only:
        guarded(run, "observability", lambda: sections.observability.section(run, tracking_uri, bodies))
    if "lane" in only:
        guarded(run, "lane", lambda: sections.lane.section(run, tracking_uri, bodies))
    if "spread" in only:
        guarded(run, "spread", lambda: sections.spread.section(run, tracking_uri, bodies))
    if "cold-sizes" in only:
        guarded(run, "cold-sizes", lambda: sections.cold_sizes.section(run))
    if "fleet" in only:
        guarded(run, "fleet", lambda: sections.fleet.section(run, tracking_uri, bodies))
    if "flavors" in only:
        guarded(run, "flavors", lambda: sections.flavors.section(run))
    if "grpc" in only:
        reason = "--no-mlserver" if args.no_mlserver else ensure_mlserver(run)
        guarded(run, "grpc", lambda: sections.grpc.section(run, tracking_uri, reason))
    machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    report = render(run, machine)
    stamp = f"{run.started:%Y%m%dT%H%M%SZ}"
    (RESULTS / f"{stamp}.md").write_text(report)
    (RESULTS / "latest.md").write_text(report)
    payload = {"started": run.started.isoformat(), "machine": machine, "main": run.main, **run.sections}
    payload |= {"targets": targets(run), "notes": run.notes, "duration": run.duration, "warmup": run.warmup}
    (RESULTS / f"{stamp}.json").write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n")
    print(report)
    run.log(f"wrote bench/results/{stamp}.md, .json and latest.md")


if __name__ == "__main__":
    main()
