"""The memory section (issue 15): does GATEWAY_MAX_MEMORY_MB hold in the process's RSS?

For each model kind (sklearn, torch) it starts the real gateway with a budget that has room
for ROOM of VERSIONS versions of realistic size, count limit 100 (never the binding one), no
warm aliases and no prediction cache, and churns the cache: a strict round-robin over the
versions (one request to each in turn, repeated: issue 15's scenario), then requests drawn by
Zipf (s = 1.1) from a few concurrent clients. It samples the VmRSS of the gateway's process
tree and its `/metrics` (loads, evictions, `gateway_loaded_bytes`) all along, and reports RSS
against the budget plus the process's baseline, RSS growth per churn cycle, and each model's
measured size (`GET /models/<name>/versions/<v>`: `loaded.size_bytes`) against the RSS its
load added.

The registry is built once under bench/.work/memory/ and reused (delete it to rebuild):
``mem-forest`` v1..v10, RandomForestClassifier, 40 trees on 20,000 rows (~8 MiB each);
``mem-mlp`` v1..v10, torch MLPs of ~4 MiB of weights; and one tiny model of each flavor
(``mem-forest-probe``, ``mem-mlp-probe``) whose load imports the flavor's libraries before
the baseline is read. Every model is logged with ``log_model(registered_model_name=...)``;
the forests with ``serialization_format="cloudpickle"`` (they load in ~0.1 s; skops is
several times slower), all on the same 20,000 rows with their own ``random_state`` (so their
sizes are alike: the budget has room for 3 and never 4); the MLPs with
``serialization_format="pt2"`` (``torch.export``: MLflow 3's default outside Databricks).
"""

from __future__ import annotations

import bisect
import http.client
import itertools
import json
import math
import random
import shutil
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from servers import Server, free_port, fresh_gateway_state, gateway_server, tree_peak_rss_mb, tree_rss_mb

VERSIONS = 10  # versions churned per kind
ROOM = 3  # models the budget has room for (3.5 times the median measured size)
MAX_LOADED_MODELS = 100  # never the binding limit: the bytes budget is what is tested
ZIPF_S = 1.1
ZIPF_CLIENTS = 4  # concurrent clients in the Zipf phase: cold loads can overlap
SLACK = 0.10  # the target: RSS <= (baseline + budget) * (1 + SLACK) after warm-up
SAMPLE_S = 0.25  # RSS and /metrics sampled this often
SEED = 15
FOREST = {"rows": 20_000, "features": 20, "trees": 40}
MLP = {"inputs": 32, "hidden": 1024, "outputs": 4}
METRICS = (
    "gateway_model_loads_total",  # every outcome; failures are read apart
    "gateway_cache_evictions_total",
    "gateway_loaded_bytes",
    "gateway_loaded_models",
    "gateway_sync_seconds_count",
)
MiB = 2**20

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How long the churn lasts: each phase stops at its count or its time, whichever first."""

    round_robin_cycles: int = 8
    round_robin_s: float = 120.0
    zipf_requests: int = 20_000
    zipf_s: float = 45.0
    ready_s: float = 180.0
    request_s: float = 120.0


QUICK = Plan(round_robin_cycles=3, round_robin_s=45.0, zipf_requests=5_000, zipf_s=15.0)


@dataclass(frozen=True)
class Kind:
    key: str  # "sklearn" or "torch"
    model: str  # the registered model whose versions are churned
    probe: str  # a tiny model of the same flavor: its load imports the libraries
    features: int  # width of one input row
    what: str  # for the report

    @property
    def body(self) -> bytes:
        return json.dumps({"inputs": [[0.5] * self.features]}).encode()


KINDS = (
    Kind(
        "sklearn",
        "mem-forest",
        "mem-forest-probe",
        FOREST["features"],
        f"RandomForestClassifier, {FOREST['trees']} trees on {FOREST['rows']:,} rows × {FOREST['features']} "
        "features, cloudpickle",
    ),
    Kind(
        "torch",
        "mem-mlp",
        "mem-mlp-probe",
        MLP["inputs"],
        f"MLP {MLP['inputs']}→{MLP['hidden']}→{MLP['hidden']}→{MLP['outputs']} (float32), pt2 (torch.export)",
    ),
)


# --- pure logic ----------------------------------------------------------------------------------


def zipf_versions(versions: int, s: float, count: int, seed: int = SEED) -> list[int]:
    """``count`` version numbers (1 the most popular) drawn by Zipf weights 1/rank**s: the same on every run."""
    cumulative = list(itertools.accumulate(1 / rank**s for rank in range(1, versions + 1)))
    rng = random.Random(seed)
    return [1 + bisect.bisect(cumulative, rng.random() * cumulative[-1]) for _ in range(count)]


def round_robin(versions: int, cycles: int) -> Iterator[tuple[int, int]]:
    """(cycle, version): one request to each version in turn, ``cycles`` times."""
    for cycle in range(cycles):
        for version in range(1, versions + 1):
            yield cycle, version


def budget_mb(sizes: Sequence[int], room: int = ROOM) -> int:
    """A budget with room for ``room`` models of the median size and never ``room + 1``: (room + 0.5) × the
    median, in whole MiB, rounded up."""
    if not sizes:
        raise ValueError("no model sizes")
    return math.ceil((room + 0.5) * statistics.median(sizes) / MiB)


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys on xs; NaN with fewer than two distinct xs."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    if len(set(xs)) < 2:
        return float("nan")
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def metric_totals(text: str, names: Sequence[str], where: dict[str, str] | None = None) -> dict[str, float]:
    """Each named Prometheus sample summed over its labels (0 when absent); with ``where``, only the
    samples whose labels include those values."""
    totals = dict.fromkeys(names, 0.0)
    wanted = [f'{label}="{value}"' for label, value in (where or {}).items()]
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base, _, labels = metric.partition("{")
        if base in totals and all(pair in labels.rstrip("}").split(",") for pair in wanted):
            totals[base] += float(value)
    return totals


def limit_mb(baseline_mb: float, budget: float, slack: float = SLACK) -> float:
    """The issue's target: the budget plus the process's baseline, plus 10 %."""
    return (baseline_mb + budget) * (1 + slack)


def size_ratios(samples: Sequence[dict[str, Any]]) -> list[float]:
    """measured size ÷ the RSS its load added, for each load that evicted nothing and added RSS."""
    out = []
    for sample in samples:
        delta = sample["rss_after_mb"] - sample["rss_before_mb"]
        if sample.get("evictions", 0) == 0 and delta > 0 and sample.get("size_bytes"):
            out.append(sample["size_bytes"] / MiB / delta)
    return out


CHURN = ("round-robin", "zipf", "end")  # the phases after warm-up


def summarize(kind: dict[str, Any]) -> dict[str, Any]:
    """What the report shows for one kind, from what was measured."""
    samples = kind.get("samples", [])
    after = [s for s in samples if s["phase"] in CHURN]
    out: dict[str, Any] = {
        "max_rss_after_warmup_mb": max((s["rss_mb"] for s in after), default=float("nan")),
        "max_loaded_bytes": max((s["loaded_bytes"] for s in after), default=float("nan")),
        "max_rss_phase": max(after, key=lambda s: s["rss_mb"])["phase"] if after else None,
    }
    for phase in ("round-robin", "zipf"):
        during = [s for s in samples if s["phase"] == phase]
        if during:
            out[phase] = {
                "rss_first_mb": during[0]["rss_mb"],
                "rss_last_mb": during[-1]["rss_mb"],
                "rss_max_mb": max(s["rss_mb"] for s in during),
                "loads": during[-1]["loads"] - during[0]["loads"],
            }
    cycles = kind.get("cycle_end_rss_mb", [])
    out["rr_growth_per_cycle_mb"] = slope(range(len(cycles)), cycles) if len(cycles) > 1 else float("nan")
    versions = kind.get("versions", VERSIONS)
    zipf = [s for s in samples if s["phase"] == "zipf"]
    # A cycle is one pass of the round-robin: `versions` loads. Zipf's growth is per as many loads.
    per_load = slope([s["loads"] for s in zipf], [s["rss_mb"] for s in zipf]) if len(zipf) > 1 else float("nan")
    out["zipf_growth_per_cycle_mb"] = per_load * versions
    ratios = size_ratios(kind.get("sizing", []))
    out["size_ratio_median"] = statistics.median(ratios) if ratios else float("nan")
    out["size_ratios"] = ratios
    steps = kind.get("rr_net_delta_mb", [])
    out["rr_net_delta_per_load_mb"] = statistics.median(steps) if steps else float("nan")
    baseline, budget = kind.get("baseline_mb"), kind.get("budget_mb")
    if baseline is not None and budget is not None:
        out["limit_mb"] = limit_mb(baseline, budget)
    return out


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """Issue 15's target for each kind: after warm-up, RSS within (baseline + budget) + 10 %, every request
    answered. What could not be measured fails."""
    if not data:
        return []
    out: list[tuple[str, str, bool | None]] = []
    for kind in data.get("kinds", []):
        name = f"memory, {kind['kind']}: RSS after warm-up ≤ (baseline + budget) × {1 + SLACK:g}, all churn long"
        if "error" in kind:
            out.append((name, f"run failed: {kind['error']}", False))
            continue
        summary = summarize(kind)
        peak, limit = summary["max_rss_after_warmup_mb"], summary.get("limit_mb", float("nan"))
        errors = int(kind.get("errors", 0))
        if math.isnan(peak) or math.isnan(limit):
            out.append((name, "not measured", False))
            continue
        value = f"max {peak:,.0f} MiB, limit {limit:,.0f} MiB"
        if errors:
            value += f", {errors} requests failed"
        out.append((name, value, peak <= limit and errors == 0))
    return out


# --- building the registry -----------------------------------------------------------------------


def registry_path(work: Path) -> Path:
    return work / "memory"


def tracking_uri(path: Path) -> str:
    return f"sqlite:///{path / 'mlflow.db'}"


def _measured(client: Any, model_id: str) -> dict[str, int]:
    """What the gateway's loader will measure for a logged model: max(object graph, artifact files)."""
    import mlflow.pyfunc

    from gateway.runtimes.sizing import object_graph_bytes
    from registry_sync.hashing import directory_bytes

    path = Path(urllib.parse.urlparse(client.get_logged_model(model_id).artifact_location).path)
    graph = object_graph_bytes(mlflow.pyfunc.load_model(str(path)))
    files = directory_bytes(path)
    return {"graph_bytes": graph, "file_bytes": files, "size_bytes": max(graph, files)}


def _log_forest(name: str, seed: int, *, tiny: bool = False) -> Any:
    import mlflow.sklearn
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    rows = 200 if tiny else FOREST["rows"]
    # The same rows for every version (only the forest's seed differs): sizes alike, bytes distinct.
    features, target = make_classification(
        n_samples=rows, n_features=FOREST["features"], n_informative=10, random_state=SEED
    )
    features = features.astype(np.float32)
    trees, depth = (1, 2) if tiny else (FOREST["trees"], None)
    model = RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=seed, n_jobs=1)
    model.fit(features, target)
    with mlflow.start_run(run_name=f"{name}-{seed}"):
        return mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=name,
            serialization_format="cloudpickle",
            input_example=features[:2],
            pip_requirements=["scikit-learn", "cloudpickle"],  # skips slow requirement inference
        )


def _log_mlp(name: str, seed: int, *, tiny: bool = False) -> Any:
    import mlflow.pytorch
    import numpy as np
    import torch

    torch.manual_seed(seed)
    nn = torch.nn
    if tiny:
        net = nn.Sequential(nn.Linear(MLP["inputs"], MLP["outputs"]))
    else:
        hidden = MLP["hidden"]
        net = nn.Sequential(
            nn.Linear(MLP["inputs"], hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, MLP["outputs"]),
        )
    example = np.random.default_rng(seed).random((2, MLP["inputs"]), dtype=np.float32)
    with mlflow.start_run(run_name=f"{name}-{seed}"):
        return mlflow.pytorch.log_model(
            net.eval(),
            name="model",
            registered_model_name=name,
            input_example=example,
            serialization_format="pt2",
            pip_requirements=["torch"],
        )


def build_registry(work: Path, log: Log) -> dict[str, Any]:
    """Build the registry under bench/.work/memory (or reuse it); each version's expected measured size."""
    from gateway.demo import using_registry

    path = registry_path(work)
    done = path / "build.json"
    if done.exists():
        return {**json.loads(done.read_text()), "reused": True}
    if path.exists():
        shutil.rmtree(path)  # a build that did not finish
    path.mkdir(parents=True)
    started = time.perf_counter()
    info: dict[str, Any] = {"versions": VERSIONS, "kinds": {}}
    with using_registry(tracking_uri(path), path / "artifacts") as client:
        for kind, logger in zip(KINDS, (_log_forest, _log_mlp), strict=True):
            logger(kind.probe, SEED, tiny=True)
            sizes = []
            for version in range(1, VERSIONS + 1):
                logged = logger(kind.model, SEED + version)
                if int(logged.registered_model_version) != version:
                    raise RuntimeError(
                        f"{kind.model}: expected version {version}, got {logged.registered_model_version}"
                    )
                sizes.append(_measured(client, logged.model_id))
            info["kinds"][kind.key] = {"model": kind.model, "what": kind.what, "sizes": sizes}
            log(f"memory: {kind.model} v1..v{VERSIONS} logged")
    info["build_s"] = time.perf_counter() - started
    done.write_text(json.dumps(info, indent=2) + "\n")
    return {**info, "reused": False}


# --- the gateway under churn ---------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the baseline was read
    phase: str
    rss_mb: float
    loads: float  # loads that succeeded
    failed_loads: float
    evictions: float
    loaded_bytes: float
    loaded_models: float


@dataclass
class Probe:
    """Reads of one running gateway: its RSS (process tree) and its counters."""

    server: Server
    started: float = field(default_factory=time.perf_counter)
    samples: list[Sample] = field(default_factory=list)
    phase: str = "baseline"

    def rss(self) -> float:
        assert self.server.process is not None
        return tree_rss_mb(self.server.process.pid)

    def settled_rss(self, reads: int = 5, gap: float = 0.1) -> float:
        """The median of a few reads: one read can catch a transient allocation."""
        values = []
        for _ in range(reads):
            values.append(self.rss())
            time.sleep(gap)
        return statistics.median(values)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.server.url + "/metrics", timeout=10) as answer:
            text = answer.read().decode()
        totals = metric_totals(text, METRICS)
        failed = metric_totals(text, ["gateway_model_loads_total"], where={"outcome": "failure"})
        totals["failed_loads"] = failed["gateway_model_loads_total"]
        return totals

    def sample(self) -> Sample:
        totals = self.metrics()
        taken = Sample(
            t=time.perf_counter() - self.started,
            phase=self.phase,
            rss_mb=self.rss(),
            loads=totals["gateway_model_loads_total"] - totals["failed_loads"],
            failed_loads=totals["failed_loads"],
            evictions=totals["gateway_cache_evictions_total"],
            loaded_bytes=totals["gateway_loaded_bytes"],
            loaded_models=totals["gateway_loaded_models"],
        )
        self.samples.append(taken)
        return taken

    def size_bytes(self, name: str, version: int) -> int | None:
        """The gateway's measured size of a loaded version (None when it is not loaded)."""
        url = f"{self.server.url}/models/{urllib.parse.quote(name, safe='')}/versions/{version}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            loaded = json.loads(answer.read()).get("loaded")
        return None if loaded is None else int(loaded["size_bytes"])


class Sampler(threading.Thread):
    """Samples RSS and /metrics every SAMPLE_S until stopped."""

    def __init__(self, probe: Probe) -> None:
        super().__init__(daemon=True)
        self.probe = probe
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_S):
            try:
                self.probe.sample()
            except (urllib.error.URLError, OSError):
                pass  # one missed sample; the next will do

    def stop(self) -> None:
        self.stopping.set()
        self.join()


class Answers:
    """What the gateway answered, by status (0: no answer), with the first few distinct failures' messages."""

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def add(self, status: int, body: bytes) -> int:
        with self._lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != 200:
                try:
                    message = str(json.loads(body)["message"])
                except (ValueError, KeyError, TypeError):
                    message = body[:200].decode(errors="replace")
                text = f"{status}: {message}"
                if text not in self.failures and len(self.failures) < 3:
                    self.failures.append(text)
        return status

    @property
    def failed(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != 200)


def _post(url: str, body: bytes, timeout: float, answers: Answers) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answers.add(int(answer.status), answer.read())
    except urllib.error.HTTPError as exc:
        return answers.add(int(exc.code), exc.read())
    except (urllib.error.URLError, OSError) as exc:
        return answers.add(0, str(exc).encode())


def _wait_first_pass(probe: Probe, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if probe.metrics()["gateway_sync_seconds_count"] >= 1:
            return
        time.sleep(0.2)


def _zipf_phase(url: str, kind: Kind, plan: Plan, answers: Answers) -> dict[str, Any]:
    """ZIPF_CLIENTS keep-alive clients each take the next version of one seeded Zipf draw, until the draw
    runs out or the time is up."""
    draws = iter(zipf_versions(VERSIONS, ZIPF_S, plan.zipf_requests))
    lock = threading.Lock()
    deadline = time.perf_counter() + plan.zipf_s
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port
    headers = {"Content-Type": "application/json"}
    sent = [0]

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=plan.request_s)
        while time.perf_counter() < deadline:
            with lock:
                version = next(draws, None)
                sent[0] += version is not None
            if version is None:
                break
            try:
                connection.request("POST", f"/models/{kind.model}/versions/{version}/predict", kind.body, headers)
                answer = connection.getresponse()
                answers.add(answer.status, answer.read())
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=plan.request_s)
                answers.add(0, str(exc).encode())
        connection.close()

    started = time.perf_counter()
    clients = [threading.Thread(target=client) for _ in range(ZIPF_CLIENTS)]
    for each in clients:
        each.start()
    for each in clients:
        each.join()
    return {"seconds": time.perf_counter() - started, "requests": sent[0]}


def churn(
    work: Path, kind: Kind, build: dict[str, Any], *, venv_bin: Path, cpus: str | None, log: Log, plan: Plan
) -> dict[str, Any]:
    """One fresh gateway for ``kind``: baseline, sizing, warm-up, round-robin and Zipf churn."""
    path = registry_path(work)
    sizes = [entry["size_bytes"] for entry in build["kinds"][kind.key]["sizes"]]
    budget = budget_mb(sizes)
    port = free_port()
    env = {
        **fresh_gateway_state(work / "gateway" / f"memory-{kind.key}", tracking_uri(path)),
        "GATEWAY_MAX_MEMORY_MB": str(budget),
        "GATEWAY_MAX_LOADED_MODELS": str(MAX_LOADED_MODELS),
        "GATEWAY_WARM_ALIASES": "",
    }
    server = gateway_server(
        f"gateway (memory, {kind.key})",
        venv_bin,
        port=port,
        predict_path=f"/models/{kind.model}/versions/1/predict",
        log=work / f"gateway-memory-{kind.key}.log",
        env=env,
        cpus=cpus,
    )
    out: dict[str, Any] = {
        "kind": kind.key,
        "model": kind.model,
        "what": kind.what,
        "versions": VERSIONS,
        "room": ROOM,
        "budget_mb": budget,
        "expected_sizes": build["kinds"][kind.key]["sizes"],
        "plan": asdict(plan),
    }
    answers = Answers()
    probe: Probe | None = None

    def predict(name: str, version: int) -> int:
        url = f"{server.url}/models/{name}/versions/{version}/predict"
        return _post(url, kind.body, plan.request_s, answers)

    try:
        server.start(plan.ready_s)
        probe = Probe(server)
        _wait_first_pass(probe, 30.0)
        out["ready_s"] = server.ready_seconds
        out["rss_ready_mb"] = probe.settled_rss()
        # The flavor's libraries (torch, sklearn.ensemble) are the process's, not a model's: a tiny
        # model of the same flavor loads them before the baseline is read.
        if predict(kind.probe, 1) != 200:
            raise RuntimeError(f"{kind.probe} v1: {answers.failures[-1]}; see {server.log}")
        time.sleep(0.5)
        out["baseline_mb"] = probe.settled_rss()
        log(
            f"memory {kind.key}: ready in {server.ready_seconds:.1f} s, RSS {out['rss_ready_mb']:.0f} MiB, "
            f"baseline {out['baseline_mb']:.0f} MiB, budget {budget} MiB"
        )
        probe.started = time.perf_counter()
        probe.phase = "sizing"
        # Sizing: the first ROOM loads evict nothing, so the RSS each adds is its own.
        sizing = []
        for version in range(1, ROOM + 1):
            before, counts = probe.settled_rss(), probe.metrics()
            status = predict(kind.model, version)
            time.sleep(0.3)
            after, counts_after = probe.settled_rss(), probe.metrics()
            evicted = counts_after["gateway_cache_evictions_total"] - counts["gateway_cache_evictions_total"]
            sizing.append(
                {
                    "version": version,
                    "status": status,
                    "rss_before_mb": before,
                    "rss_after_mb": after,
                    "size_bytes": probe.size_bytes(kind.model, version),
                    "evictions": evicted,
                }
            )
        out["sizing"] = sizing
        probe.sample()
        sampler = Sampler(probe)
        sampler.start()
        try:
            # Warm-up: one round-robin cycle; every version is fetched and loaded once, the cache fills.
            probe.phase = "warm-up"
            measured: dict[int, int | None] = {}
            for _, version in round_robin(VERSIONS, 1):
                predict(kind.model, version)
                measured[version] = probe.size_bytes(kind.model, version)
            out["measured_sizes"] = measured
            out["rss_after_warmup_mb"] = probe.settled_rss()
            log(f"memory {kind.key}: warm, RSS {out['rss_after_warmup_mb']:.0f} MiB")
            # Round-robin: with room for ROOM of VERSIONS, every request loads its version and evicts one.
            probe.phase = "round-robin"
            cycle_end: list[float] = []
            net: list[float] = []
            last = probe.rss()
            deadline = time.perf_counter() + plan.round_robin_s
            rr_requests = 0
            for cycle, version in round_robin(VERSIONS, plan.round_robin_cycles):
                if time.perf_counter() > deadline:
                    break
                predict(kind.model, version)
                rr_requests += 1
                now = probe.rss()
                net.append(now - last)
                last = now
                if version == VERSIONS:
                    cycle_end.append(probe.sample().rss_mb)
                    log(f"memory {kind.key}: round-robin cycle {cycle + 1}: RSS {cycle_end[-1]:.0f} MiB")
            out["cycle_end_rss_mb"] = cycle_end
            out["rr_net_delta_mb"] = net
            out["rr_requests"] = rr_requests
            probe.phase = "zipf"
            out["zipf"] = _zipf_phase(server.url, kind, plan, answers)
            probe.phase = "end"
        finally:
            sampler.stop()
        final = probe.sample()
        out["rss_end_mb"] = final.rss_mb
        out["loads"] = final.loads
        out["failed_loads"] = final.failed_loads
        out["evictions"] = final.evictions
        out["loaded_bytes_end"] = final.loaded_bytes
        out["loaded_models_end"] = final.loaded_models
        out["peak_rss_mb"] = tree_peak_rss_mb(server.process.pid) if server.process else float("nan")
        out["seconds"] = server.seconds_since_launch()
    finally:
        out["samples"] = [asdict(sample) for sample in probe.samples] if probe else []
        out["statuses"] = {str(status): count for status, count in sorted(answers.statuses.items())}
        out["failures"] = answers.failures
        out["errors"] = answers.failed
        server.stop()
    log(f"memory {kind.key}: end RSS {out.get('rss_end_mb', float('nan')):.0f} MiB, {answers.failed} requests failed")
    return out


# --- the section ---------------------------------------------------------------------------------


def section(work: Path, *, venv_bin: Path, cpus: str | None, log: Log, plan: Plan | None = None) -> dict[str, Any]:
    plan = plan or Plan()
    log(f"memory: building (or reusing) {registry_path(work)}")
    build = build_registry(work, log)
    kinds: list[dict[str, Any]] = []
    for kind in KINDS:
        try:
            kinds.append(churn(work, kind, build, venv_bin=venv_bin, cpus=cpus, log=log, plan=plan))
        except Exception as exc:  # noqa: BLE001 - one kind's failure is reported, the other still runs
            kinds.append({"kind": kind.key, "error": f"{type(exc).__name__}: {exc}"})
            log(f"memory {kind.key}: FAILED: {exc}")
    return {"build": {k: v for k, v in build.items() if k != "kinds"}, "kinds": kinds}


# --- the report ----------------------------------------------------------------------------------


def _mb(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f} MiB"


def render(data: dict[str, Any] | None) -> list[str]:
    """The section's Markdown lines."""
    if not data:
        return []
    kinds = data.get("kinds", [])
    lines = ["", "## Memory under churn (issue 15)", ""]
    lines += [
        f"One fresh gateway per kind (one worker): {VERSIONS} versions, `GATEWAY_MAX_MEMORY_MB` = {ROOM + 0.5:g}× the "
        f"median measured size (room for {ROOM}), `GATEWAY_MAX_LOADED_MODELS={MAX_LOADED_MODELS}`, no warm aliases, "
        "prediction cache off. **Baseline**: RSS once ready and one request to a tiny model of the same flavor "
        "served (the flavor's libraries imported), nothing else loaded. **Warm-up**: the first "
        f"{ROOM} versions loaded one at a time (their RSS deltas against their measured sizes), then one "
        "round-robin cycle. **Churn**: round-robin cycles (one request to each version in turn, one connection; "
        f"every request loads and evicts), then Zipf (s = {ZIPF_S}) from {ZIPF_CLIENTS} concurrent clients. "
        f"RSS: VmRSS of the gateway's process tree every {SAMPLE_S:g} s with `/metrics`. A cycle is "
        f"{VERSIONS} loads. Target: after warm-up, RSS ≤ (baseline + budget) × {1 + SLACK:g}.",
        "",
    ]
    lines += ["| | " + " | ".join(str(kind["kind"]) for kind in kinds) + " |", "|---|" + "--:|" * len(kinds)]
    summaries = [summarize(kind) if "error" not in kind else {} for kind in kinds]

    def row(label: str, cell: Callable[[dict[str, Any], dict[str, Any]], str]) -> None:
        cells = []
        for kind, summary in zip(kinds, summaries, strict=True):
            try:
                cells.append(cell(kind, summary))
            except (KeyError, TypeError, ValueError, ZeroDivisionError, StopIteration):
                cells.append("–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def sizes(kind: dict[str, Any]) -> list[int]:
        return [size for size in kind["measured_sizes"].values() if size]

    row("models", lambda k, s: f"{k['versions']} × {k['what']}")
    row(
        "measured size (gateway), min / median / max",
        lambda k, s: " / ".join(f"{f(sizes(k)) / MiB:.2f}" for f in (min, statistics.median, max)) + " MiB",
    )
    row(
        "of which object graph / artifact files (build)",
        lambda k, s: (
            f"{statistics.median(e['graph_bytes'] for e in k['expected_sizes']) / MiB:.2f} / "
            f"{statistics.median(e['file_bytes'] for e in k['expected_sizes']) / MiB:.2f} MiB"
        ),
    )
    row("budget (`GATEWAY_MAX_MEMORY_MB`)", lambda k, s: f"{k['budget_mb']} MiB")
    row("RSS once ready (nothing loaded)", lambda k, s: _mb(k["rss_ready_mb"]))
    row("baseline (flavor's libraries loaded)", lambda k, s: _mb(k["baseline_mb"]))
    row("limit: (baseline + budget) × 1.1", lambda k, s: _mb(s["limit_mb"]))
    row("RSS after warm-up", lambda k, s: _mb(k["rss_after_warmup_mb"]))
    row("RSS at end", lambda k, s: _mb(k["rss_end_mb"]))
    row(
        "max RSS after warm-up (phase)",
        lambda k, s: f"{_mb(s['max_rss_after_warmup_mb'])} ({s['max_rss_phase']})",
    )
    row("peak RSS (VmHWM, whole run)", lambda k, s: _mb(k["peak_rss_mb"]))
    row("RSS at the end of each round-robin cycle", lambda k, s: ", ".join(f"{v:.0f}" for v in k["cycle_end_rss_mb"]))
    for phase in ("round-robin", "zipf"):
        row(
            f"{phase}: RSS first → last sample (max), successful loads",
            lambda k, s, phase=phase: (
                f"{s[phase]['rss_first_mb']:,.0f} → {s[phase]['rss_last_mb']:,.0f} "
                f"({s[phase]['rss_max_mb']:,.0f}) MiB, {s[phase]['loads']:.0f}"
            ),
        )
    row("RSS growth per cycle, round-robin (slope)", lambda k, s: _mb(s["rr_growth_per_cycle_mb"], 1))
    row("RSS growth per cycle, Zipf (slope on loads × versions)", lambda k, s: _mb(s["zipf_growth_per_cycle_mb"], 1))
    row(
        "RSS change per round-robin request (load + eviction), median",
        lambda k, s: _mb(s["rr_net_delta_per_load_mb"], 1),
    )
    row(
        "loads (failed) / evictions",
        lambda k, s: f"{k['loads']:.0f} ({k['failed_loads']:.0f}) / {k['evictions']:.0f}",
    )
    row(
        "`gateway_loaded_bytes` at end / max after warm-up",
        lambda k, s: (
            f"{k['loaded_bytes_end'] / MiB:.1f} / {s['max_loaded_bytes'] / MiB:.1f} MiB "
            f"({k['loaded_models_end']:.0f} models at end)"
        ),
    )
    row(
        "measured size ÷ RSS its load added (first loads, median; each)",
        lambda k, s: f"{s['size_ratio_median']:.2f} ({', '.join(f'{r:.2f}' for r in s['size_ratios'])})",
    )
    row(
        "requests: round-robin / Zipf (its seconds)",
        lambda k, s: f"{k['rr_requests']} / {k['zipf']['requests']} ({k['zipf']['seconds']:.0f} s)",
    )
    row(
        "answers by status",
        lambda k, s: ", ".join(
            f"{status if status != '0' else 'no answer'} × {count}" for status, count in k["statuses"].items()
        ),
    )
    row("gateway run (launch to stop)", lambda k, s: f"{k['seconds']:.0f} s")
    for kind in kinds:
        if "error" in kind:
            lines.append(f"\n{kind['kind']}: the run failed: {kind['error']}")
        for failure in kind.get("failures", []):
            lines.append(f"\n{kind['kind']}, a failed request: {failure}")
    build = data.get("build", {})
    if build:
        built = "reused" if build.get("reused") else f"built in {build.get('build_s', float('nan')):.0f} s"
        lines += ["", f"Registry bench/.work/memory: {built}."]
    return lines
