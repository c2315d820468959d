"""What the sandbox adds to one call into a worker (issue 43): ``python bench/sandbox_calls.py``.

The HTTP bench (``run.py --only isolated``) compares whole gateways, and on a busy machine its
c1 medians move by more than the sandbox could cost. This measures only the part the sandbox
can touch: one worker process on this interpreter, sandboxed or not, answering ``predict`` of a
one-row model (a models-from-code pyfunc: tests/support/env_models/prober.py, no probe) over
its socket. Blocks of calls alternate between the two workers; the figure is the median over
blocks of each block's median round trip, and the difference per block.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

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


if __name__ == "__main__":
    main()
