"""Scoring a file with an iris classifier: rows a second, the floor against the ways to do it
(issue 52).

One 1-million-row Parquet file of iris features (``--rows``; row groups of ``--row-group``
rows), and an iris LogisticRegression logged in a local MLflow registry (sqlite, made for the
run) as ``iris`` version 1. Arms, timed in this order, ``--repeat`` rounds interleaved so the
shared host's drift lands on each alike:

- ``floor``: one Python process reads the file with pyarrow, calls the pyfunc's
  ``predict`` (``mlflow.pyfunc.load_model``, loaded once, not timed) on each row group and
  writes the predictions as Parquet: what any batch scorer must at least spend.
- ``files``: the same loop through the gateway's job files (gateway/jobs/files): the
  inputs found, planned into chunks of a row group, each chunk read with ``read_chunk`` and
  its predictions committed as a part (written aside, renamed). No queue, no HTTP: the cost of
  the chunk layer the runner is built on.
- ``gateway``: a file job through a running ``registry-gateway serve`` (one process, a sqlite
  state database): ``POST /models/iris/versions/1/jobs`` with the Parquet file as input and a
  folder as output, then ``GET /jobs/<id>?wait=30`` until it ends (the gateway answers when the
  job ends: no poll's period in the figure; ``--poll S`` follows it by plain reads every S seconds,
  as a client of a checkout before ``wait`` did); timed from the submission
  to the answer that says it ended (the version loaded by a request beforehand, not timed). Run
  when the checkout has the jobs routes (gateway/http/job_routes.py). Beside that wall time, each
  round keeps the job's own (``own_seconds``: from ``submitted_at`` to ``finished_at`` in its
  document, the state database's clock, on this host the same as the bench's): what the POST's
  answer and the read of the end (and a poll's period, with ``--poll``) add is in the one and not
  the other. The
  ratios to the floor are given by both (``gateway_to_floor_median``, by the wall;
  ``gateway_own_to_floor_median``, by the job's own).
- ``mlflow``: ``mlflow models predict -m models:/iris/1 -i in.csv -t csv --env-manager local``
  on a CSV of the same rows (it reads CSV or JSON, not Parquet), the whole command's wall time
  (the interpreter's start and the model's load included), once a round.

Each round also keeps its CPU seconds (the floor's and the files': this process's; the
gateway's: every gateway process's, from /proc): on a shared host the CPU a round took moves
less than its clock. ``--replicas N`` runs N serving processes on one state database (jobs
submitted to the first, every one claiming chunks), ``--jobs-process`` a ``serve --role jobs``
process beside them.

``python bench/jobs.py`` prints a line an arm and writes the run to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
MODEL_URI = "models:/iris/1"
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def write_inputs(folder: Path, rows: int, row_group: int) -> tuple[Path, Path]:
    """The Parquet file (and a CSV of the same rows): iris rows drawn with replacement, with a
    little noise, so that every prediction is computed, not repeated from 150."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gateway.demo import iris_frame

    features, _ = iris_frame()
    generator = np.random.default_rng(7)
    picked = generator.integers(0, len(features), rows)
    noise = generator.normal(0, 0.1, (rows, features.shape[1]))
    frame = pd.DataFrame(features.to_numpy()[picked] + noise, columns=features.columns)
    parquet, csv = folder / "in.parquet", folder / "in.csv"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), parquet, row_group_size=row_group)
    frame.to_csv(csv, index=False)
    return parquet, csv


def floor(model: Any, source: Path, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    rows = 0
    with pq.ParquetWriter(out, pa.schema([("prediction", pa.int64())])) as writer:
        for group in range(parquet.num_row_groups):
            frame = parquet.read_row_group(group).to_pandas()
            writer.write_table(pa.table({"prediction": model.predict(frame)}))
            rows += len(frame)
    return rows


def files(model: Any, source: Path, out: Path, row_group: int) -> int:
    import pyarrow as pa

    from gateway.jobs.files.chunks import plan_chunks
    from gateway.jobs.files.locations import find_inputs
    from gateway.jobs.files.readers import read_chunk
    from gateway.jobs.files.writers import OutputLocation

    output = OutputLocation.parse(str(out), "parquet")
    chunks = plan_chunks(find_inputs(str(source), max_files=1), target_rows=row_group, target_bytes=2**40)
    rows = 0
    for index, chunk in enumerate(chunks):
        frame = read_chunk(chunk).to_pandas()
        output.commit(index, pa.table({"prediction": model.predict(frame)}))
        rows += len(frame)
    return rows


def mlflow_predict(csv: Path, out: Path, tracking_uri: str) -> int:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    command = [str(ROOT / ".venv" / "bin" / "mlflow"), "models", "predict", "-m", MODEL_URI]
    command += ["-i", str(csv), "-o", str(out), "-t", "csv", "--env-manager", "local"]
    subprocess.run(command, env=env, check=True, capture_output=True)
    answer = json.loads(out.read_text())
    predictions = answer["predictions"] if isinstance(answer, dict) else answer
    return len(predictions)


class GatewayArm:
    """A gateway serving the run's registry, and file jobs submitted to it.

    ``replicas`` serving processes on one state database (the first with ``--role all``, the
    others ``--role gateway``), and with ``jobs_process`` one ``--role jobs`` process beside
    them (which the serving ones then leave the chunks to, GATEWAY_JOBS_ON_SERVING=auto). Each
    process loads the version by a request before any timing; jobs are submitted to the first.
    """

    def __init__(
        self,
        root: Path,
        tracking_uri: str,
        settings: dict[str, str] | None = None,
        *,
        replicas: int = 1,
        jobs_process: bool = False,
        poll: float = 0.0,
    ) -> None:
        from bench.servers import free_port, fresh_gateway_state, gateway_server

        env = fresh_gateway_state(root / "gateway", tracking_uri)
        env["PYTHONPATH"] = str(ROOT)  # this checkout's code, not the one the venv installed
        env.update(settings or {})
        roles = ["all"] + ["gateway"] * (replicas - 1) + (["jobs"] if jobs_process else [])
        self.servers = []
        for number, role in enumerate(roles):
            own = {**env, "GATEWAY_ARTIFACT_CACHE_DIR": str(root / "gateway" / f"artifacts-{number}")}
            self.servers.append(
                gateway_server(
                    f"gateway-{role}-{number}",
                    ROOT / ".venv" / "bin",
                    port=free_port(),
                    predict_path="/models/iris/predict",
                    log=root / f"gateway-{number}.log",
                    env=own,
                    args=("--role", role),
                )
            )
        self.server = self.servers[0]
        self.job_seconds: list[float] = []  # the job's started_at to finished_at
        self.own_seconds: list[float] = []  # the job's submitted_at to finished_at
        self.cpu_seconds: list[float] = []  # a job's CPU time, every process's together
        self.poll = poll  # seconds between two plain GET /jobs/<id>; 0: GET /jobs/<id>?wait=30

    def __enter__(self) -> GatewayArm:
        import httpx

        for server in self.servers:
            server.start()
        row = {"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}
        for server in self.servers:  # each loads the version
            with httpx.Client(base_url=server.url, timeout=60) as client:
                client.post("/models/iris/versions/1/predict", json=row).raise_for_status()
        # A job gives way (batches, pauses) while its version had a request within
        # QUIET_SECONDS: the loading ones above are no traffic to measure a job beside.
        from gateway.jobs.scoring import QUIET_SECONDS

        time.sleep(QUIET_SECONDS + 0.5)
        self.http = httpx.Client(base_url=self.server.url, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()
        for server in reversed(self.servers):
            server.stop()

    def score(self, source: Path, out: Path) -> int:
        cpu = sum(server.cpu_seconds() for server in self.servers)
        try:
            return self._score(source, out)
        finally:
            self.cpu_seconds.append(sum(server.cpu_seconds() for server in self.servers) - cpu)

    def _score(self, source: Path, out: Path) -> int:
        body = {"input": str(source), "output": str(out), "output_format": "parquet"}
        answer = self.http.post("/models/iris/versions/1/jobs", json=body)
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        while True:
            job = self.http.get(f"/jobs/{job_id}", params={} if self.poll else {"wait": 30}).json()
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(self.poll)  # polling (--poll): its period bounds the error (a bench, not a test)
        assert job["state"] == "succeeded", job
        self.job_seconds.append(float(job["seconds"]))
        self.own_seconds.append(round(float(job["finished_at"]) - float(job["submitted_at"]), 4))
        return int(job["rows_done"])


def timed(run: Callable[[], int], cpu: list[float] | None = None) -> tuple[float, int]:
    """The wall time of ``run`` and its rows; its CPU time (this process's) to ``cpu``."""
    started, used = time.perf_counter(), time.process_time()
    rows = run()
    if cpu is not None:
        cpu.append(time.process_time() - used)
    return time.perf_counter() - started, rows


def summary(seconds: list[float], rows: int) -> dict[str, Any]:
    return {
        "seconds": [round(s, 4) for s in seconds],
        "rows_per_s_best": round(rows / min(seconds)),
        "rows_per_s_median": round(rows / statistics.median(seconds)),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--row-group", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-mlflow", action="store_true", help="skip `mlflow models predict`")
    parser.add_argument("--no-gateway", action="store_true", help="skip the gateway's file job")
    parser.add_argument(
        "--gateway-env", action="append", default=[], metavar="NAME=VALUE", help="a setting of the gateway's"
    )
    parser.add_argument("--replicas", type=int, default=1, help="serving processes on one state database")
    parser.add_argument("--jobs-process", action="store_true", help="a `serve --role jobs` process runs the chunks")
    parser.add_argument(
        "--poll",
        type=float,
        default=0.0,
        help="seconds between two plain GET /jobs/<id>; 0 (the default): GET /jobs/<id>?wait=30, answered at the end",
    )
    parser.add_argument("--out", type=Path, help="where the run's JSON goes")
    arguments = parser.parse_args()

    import importlib.util
    from contextlib import nullcontext

    import mlflow.pyfunc
    import numpy as np
    import pyarrow.parquet as pq

    from gateway.demo import log_iris_version, using_registry

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        with using_registry(tracking_uri, root / "artifacts"):
            log_iris_version("iris")
            started = time.perf_counter()
            model = mlflow.pyfunc.load_model(MODEL_URI)
            load_s = time.perf_counter() - started
        parquet, csv = write_inputs(root, arguments.rows, arguments.row_group)
        groups = pq.ParquetFile(parquet).num_row_groups
        seconds: dict[str, list[float]] = {"floor": [], "files": [], "gateway": [], "mlflow": []}
        cpu: dict[str, list[float]] = {"floor": [], "files": []}
        routes = importlib.util.find_spec("gateway.http.job_routes") is not None
        settings = dict(item.split("=", 1) for item in arguments.gateway_env)
        gateway = None
        if routes and not arguments.no_gateway:
            gateway = GatewayArm(
                root,
                tracking_uri,
                settings,
                replicas=arguments.replicas,
                jobs_process=arguments.jobs_process,
                poll=arguments.poll,
            )
        with gateway or nullcontext():
            for round_ in range(arguments.repeat):
                took, rows = timed(lambda: floor(model, parquet, root / "floor.parquet"), cpu["floor"])
                seconds["floor"].append(took)
                assert rows == arguments.rows
                out = root / f"files-{round_}"
                took, rows = timed(lambda: files(model, parquet, out, arguments.row_group), cpu["files"])  # noqa: B023
                seconds["files"].append(took)
                assert rows == arguments.rows
                if gateway is not None:
                    out = root / f"gateway-{round_}"
                    took, rows = timed(lambda: gateway.score(parquet, out))  # noqa: B023
                    seconds["gateway"].append(took)
                    assert rows == arguments.rows, rows
                if not arguments.no_mlflow:
                    took, rows = timed(lambda: mlflow_predict(csv, root / "mlflow.json", tracking_uri))
                    seconds["mlflow"].append(took)
                    assert rows == arguments.rows, rows
        # The chunked path must score every row once, in order, as the floor does.
        parts = sorted((root / "files-0").glob("part-*.parquet"))
        chunked = np.concatenate([pq.read_table(p)["prediction"].to_numpy() for p in parts])
        floor_predictions = pq.read_table(root / "floor.parquet")["prediction"].to_numpy()
        assert (chunked == floor_predictions).all()
        if gateway is not None:
            parts = sorted((root / "gateway-0").glob("part-*.parquet"))
            served = np.concatenate([pq.read_table(p)["prediction"].to_numpy() for p in parts])
            assert (served == floor_predictions).all()
        result: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": {"cpus": os.cpu_count(), "cpu": cpu_model()},
            "rows": arguments.rows,
            "row_groups": groups,
            "parquet_mib": round(parquet.stat().st_size / 2**20, 1),
            "csv_mib": round(csv.stat().st_size / 2**20, 1),
            "model": "iris v1, sklearn LogisticRegression, mlflow.pyfunc.load_model",
            "model_load_s": round(load_s, 3),
            "repeat": arguments.repeat,
            "gateway_env": settings,
            "replicas": arguments.replicas,
            "jobs_process": arguments.jobs_process,
            "follow": f"poll every {arguments.poll:g} s" if arguments.poll else "GET /jobs/<id>?wait=30",
            "arms": {name: summary(taken, arguments.rows) for name, taken in seconds.items() if taken},
        }
        for name, used in cpu.items():
            result["arms"][name]["cpu_seconds"] = [round(c, 4) for c in used]
        if gateway is not None:
            result["arms"]["gateway"]["job_seconds"] = gateway.job_seconds  # started to finished, the job's own
            result["arms"]["gateway"]["own_seconds"] = gateway.own_seconds  # submitted to finished
            result["arms"]["gateway"]["cpu_seconds"] = [round(c, 4) for c in gateway.cpu_seconds]
    arms = result["arms"]
    result["files_to_floor_median"] = round(arms["files"]["rows_per_s_median"] / arms["floor"]["rows_per_s_median"], 3)
    if "gateway" in arms:
        result["gateway_to_floor_median"] = round(
            arms["gateway"]["rows_per_s_median"] / arms["floor"]["rows_per_s_median"], 3
        )
        # by the job's own time: the floor's median seconds over the job's, submitted to finished
        result["gateway_own_to_floor_median"] = round(
            statistics.median(seconds["floor"]) / statistics.median(arms["gateway"]["own_seconds"]), 3
        )
    if "gateway" in arms:
        # CPU seconds a round, every process's: less moved by other work on a shared host than the clock
        result["gateway_to_floor_cpu_median"] = round(
            statistics.median(arms["floor"]["cpu_seconds"]) / statistics.median(arms["gateway"]["cpu_seconds"]), 3
        )
    if "mlflow" in arms:
        result["mlflow_to_floor_median"] = round(
            arms["mlflow"]["rows_per_s_median"] / arms["floor"]["rows_per_s_median"], 3
        )
    for name, arm in arms.items():
        median, best = arm["rows_per_s_median"], arm["rows_per_s_best"]
        print(f"{name:>7}: {median:>10,} rows/s median ({best:,} best) {arm['seconds']}")
    ratios = {k: v for k, v in result.items() if k.endswith("_to_floor_median")}
    print(", ".join(f"{k.removesuffix('_to_floor_median')}/floor {v}" for k, v in ratios.items()))
    if "gateway_to_floor_cpu_median" in result:
        print(f"gateway/floor by CPU seconds {result['gateway_to_floor_cpu_median']}")
    if arguments.out is not None:
        arguments.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
