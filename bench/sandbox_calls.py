"""What the sandbox adds to one call into a worker (issue 43): ``python bench/sandbox_calls.py``.

The HTTP bench (``run.py --only isolated``) compares whole gateways, and on a busy machine its
c1 medians move by more than the sandbox could cost. This measures only the part the sandbox
can touch: one worker process on this interpreter, sandboxed or not, answering ``predict`` of a
one-row model (a models-from-code pyfunc: tests/support/env_models/prober.py, no probe) over
its socket. Blocks of calls alternate between the two workers; the figure is the median over
blocks of each block's median round trip, and the difference per block.

``--tree DIR`` measures another checkout's gateway (its worker, wire and sandbox; e.g. the main
branch's, to compare code: run it and this tree's alternately); the run is stored as
``bench/results/sandbox-calls-<UTC time>.json`` (what docs/security.md cites).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

HERE = Path(__file__).resolve().parent
_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_parser.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout whose gateway is measured")
ARGS = _parser.parse_args()
sys.path.insert(0, str(ARGS.tree.resolve()))

from gateway.runtimes.sandbox import CpuWatchdog, NetworkChoice, SandboxPolicy, WorkerSandbox  # noqa: E402
from gateway.runtimes.worker import wire  # noqa: E402
from gateway.runtimes.workers import WorkerProcess  # noqa: E402

PROBER = HERE.parent / "tests" / "support" / "env_models" / "prober.py"
BLOCKS, CALLS = 20, 200


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="sandbox-calls-"))
    model = root / "model"
    mlflow.pyfunc.save_model(str(model), python_model=str(PROBER))
    policy = SandboxPolicy(root=root / "sandboxes", memory_bytes=2**30, cpu_seconds=60)
    box = WorkerSandbox(policy, NetworkChoice(False, "bench"), label="bench", watchdog=CpuWatchdog(60))
    workers = {
        "no sandbox": (WorkerProcess(Path(sys.executable), label="plain", on_exit=lambda *_: None), model),
        "sandbox": (WorkerProcess(Path(sys.executable), label="boxed", on_exit=lambda *_: None, sandbox=box), None),
    }
    for process, path in workers.values():
        process.start()
        load = str(path if path is not None else box.expose(model))
        answer, _ = process.call({"op": "load", "id": "m", "path": load}, [])
        assert answer.get("ok"), answer
    frame = pd.DataFrame({"probe": [""]})
    medians: dict[str, list[float]] = {name: [] for name in workers}
    try:
        for _ in range(BLOCKS):
            for name, (process, _) in workers.items():
                times = []
                for _ in range(CALLS):
                    buffers: list[object] = []
                    header = {"op": "predict", "id": "m", "data": wire.encode(frame, buffers), "params": None}
                    started = time.perf_counter()
                    answer, _ = process.call(header, buffers)
                    times.append(time.perf_counter() - started)
                    assert answer.get("ok"), answer
                medians[name].append(statistics.median(times) * 1e6)
    finally:
        for process, _ in workers.values():
            process.stop()
        box.close()
    plain, boxed = medians["no sandbox"], medians["sandbox"]
    print(f"{BLOCKS} blocks of {CALLS} predict calls each, alternating (median of block medians):")
    print(f"| worker | round trip |\n|:--|--:|\n| no sandbox | {statistics.median(plain):.0f} µs |")
    print(f"| sandbox | {statistics.median(boxed):.0f} µs |")
    difference = statistics.median(b - p for b, p in zip(boxed, plain, strict=True))
    print(f"difference per block, median: {difference:+.0f} µs")
    tree = ARGS.tree.resolve()
    commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain"], capture_output=True, text=True).stdout
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = {
        "tree": str(tree),
        "commit": commit.strip(),
        "dirty": bool(dirty.strip()),
        "blocks": BLOCKS,
        "calls": CALLS,
        "load_average": os.getloadavg()[0],
        "plain_us": statistics.median(plain),
        "sandbox_us": statistics.median(boxed),
        "difference_us": difference,
        "plain_blocks_us": plain,
        "sandbox_blocks_us": boxed,
    }
    out = HERE / "results" / f"sandbox-calls-{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"stored in {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
