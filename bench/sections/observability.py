"""`--only observability`: the default, tracing at 1% sampling, records at 10% to a file and the
access log off, interleaved: bench/observability_cost.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import observability_cost
from harness import HERE, QUIET_POLL, WORK, Contender, Run, gateway, interleaved_points, metric_totals


@contextlib.contextmanager
def on_load_cpus(run: Run) -> Iterator[None]:
    """Run this process (and threads it starts meanwhile, such as an OTLP receiver's) on the
    load generator's CPU, away from the gateway's."""
    if run.load_cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu) for cpu in run.load_cpus.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def section(run: Run, tracking_uri: str, bodies: dict[str, Path]) -> None:
    """The default, tracing at 1% sampling, records at 10% to a file and the access log off,
    interleaved: bench/observability_cost.py."""
    sys.path.insert(0, str(HERE.parent))  # the suite's OTLP receiver, run here as the bench's own
    from tests.support.otlp import OtlpReceiver

    data: dict[str, list[object]] = {"rows": [], "notes": []}
    run.sections["observability"] = data
    cost = observability_cost
    records = WORK / "records"
    shutil.rmtree(records, ignore_errors=True)
    with on_load_cpus(run), OtlpReceiver("http/protobuf") as receiver:
        record_env = {"GATEWAY_RECORDS_SINK": f"file://{records}", "GATEWAY_RECORDS_SAMPLE": cost.RECORDS_SAMPLE}
        recording = gateway(tracking_uri, "observe-records", cpus=run.server_cpus, env={**record_env, **QUIET_POLL})
        contenders = [
            Contender(cost.DEFAULT, gateway(tracking_uri, "observe-default", cpus=run.server_cpus, env=QUIET_POLL)),
            Contender(
                cost.TRACING,
                gateway(
                    tracking_uri,
                    "observe-tracing",
                    cpus=run.server_cpus,
                    env={**cost.TRACING_ENV, **receiver.env(), **QUIET_POLL},
                ),
            ),
            Contender(cost.RECORDS, recording),
            Contender(
                cost.NO_ACCESS_LOG,
                gateway(
                    tracking_uri,
                    "observe-quiet",
                    cpus=run.server_cpus,
                    env={"GATEWAY_ACCESS_LOG": "false", **QUIET_POLL},
                ),
            ),
        ]
        counts: dict[str, float] = {}
        names = ["gateway_records_dropped_total", "gateway_records_written_total"]
        interleaved_points(
            run,
            "observability",
            contenders,
            bodies["iris"],
            before_stop=lambda: counts.update(metric_totals(recording.url, names)),
        )
        spans = len(receiver.spans())
    script = [sys.executable, str(HERE / "metrics_cost.py")]
    pinned = ["taskset", "-c", run.server_cpus, *script] if run.server_cpus else script
    data["metrics_us"] = float(subprocess.run(pinned, capture_output=True, text=True, check=True).stdout)  # type: ignore[assignment]
    data["notes"].append(f"Tracing: the receiver got {spans:,} spans from the tracing gateway.")
    data["notes"].append(
        f"Records: {counts.get('gateway_records_written_total', 0):,.0f} written, "
        f"{counts.get('gateway_records_dropped_total', 0):,.0f} dropped."
    )
