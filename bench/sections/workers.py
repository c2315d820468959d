"""`--only workers`: --workers N at 32·N connections; req/s, and requests per CPU-second of the
server's processes (which shows whether workers get in each other's way when the cores are
shared)."""

from __future__ import annotations

import os
from pathlib import Path

from harness import Run, gateway, post, row
from load import drive


def workers_plan(cpus: int) -> tuple[list[int], bool]:
    """Worker counts to try, and whether each gets cores of its own: N server cores and N
    more for the load generator. With fewer than 4 CPUs nothing can be dedicated, so 1 and
    2 workers share every core with the load generator."""
    if cpus >= 4:
        return [n for n in (1, 2, 4, 8) if 2 * n <= cpus], True
    return [1, 2], False


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """--workers N at 32·N connections; req/s, and requests per CPU-second of the server's
    processes (which shows whether workers get in each other's way when the cores are shared)."""
    cpus = os.cpu_count() or 1
    counts, dedicated = workers_plan(cpus)
    everything = f"0-{cpus - 1}"
    rows: list[dict[str, object]] = []
    for workers in counts:
        server_cpus = f"0-{workers - 1}" if dedicated else everything
        load_cpus = f"{workers}-{2 * workers - 1}" if dedicated else everything
        connections = 32 * workers
        with gateway(tracking_uri, f"workers{workers}", cpus=server_cpus, workers=workers) as gw:
            url, body = gw.url + gw.predict_path, bodies["iris"]
            post(url, body.read_bytes())
            threads = workers if dedicated else 1
            drive(url, body, connections=connections, duration=max(run.warmup, 1.0), cpus=load_cpus, threads=threads)
            before = gw.cpu_seconds()
            result = drive(url, body, connections=connections, duration=run.duration, cpus=load_cpus, threads=threads)
            busy = gw.cpu_seconds() - before
            entry = row(f"gateway --workers {workers}", connections, result, gw.peak_rss_mb())
            entry |= {"workers": workers, "server_cpu_s": busy, "req_per_cpu_s": result.requests / busy if busy else 0}
            rows.append(entry)
            run.log(f"--workers {workers} c={connections}: {result.req_s:.0f} req/s, {busy:.1f} CPU-s")
    run.sections["workers"] = rows
    run.sections["workers_dedicated"] = dedicated
