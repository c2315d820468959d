"""The registry-scale section (issue 10, part 2): what the control plane costs on big registries.

For registries of 1,000 and 10,000 versions with distinct artifacts it measures the registry
read itself (the naive full read against the cheaper reads MLflow offers), then starts the real
gateway on each registry with a fresh state database and artifact cache and reports: time to
ready, bytes downloaded, the time of a poll pass with no changes, the delay from an alias move
to serving it (during the first pass and after it), the state database's size and RSS.

The registries are built once under bench/.work/scale-<N>/ and reused: one iris
LogisticRegression is logged (not registered), then its artifact directory is copied once per
version with a ``payload.bin`` of that version's own bytes, and each copy is registered with
``MlflowClient.create_model_version(name, source=<copy>)``. ``mlflow.log_model`` per version
would take hours at 10,000. Delete bench/.work/scale-<N> to rebuild.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import stat
import statistics
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import Server, free_port, fresh_gateway_state, gateway_server

SIZES = (1_000, 10_000)
TARGET_VERSIONS = 10_000  # the targets are set at this size
VERSIONS_PER_MODEL = 100
WARM_MODELS = 10  # models with a `champion` alias: the warm aliases
ALIAS = "champion"
PAYLOAD_BYTES = 16 * 1024  # each version's own bytes, beside the shared model files
POLL_SECONDS = 5.0
AFTER_MOVES = 3  # alias moves measured once the first pass is over
NO_CHANGE_PASSES = 3  # poll passes timed once the first pass (and the one after it) are over
BYTES_SLACK = 1.25  # "only the warm aliases' versions": at most this times their bytes
READY_TARGET_S = 60.0
PASS_TARGET_S = 2.0
HISTOGRAM = "gateway_sync_seconds"
COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
BODY = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[6.7, 3.0, 5.2, 2.3]]}}).encode()

Log = Callable[[str], None]


@dataclass(frozen=True)
class Limits:
    """How long each wait may last, so a gateway that misses a target cannot stall the run."""

    ready_s: float = 300.0  # launch -> /health/ready 200
    first_pass_s: float = 360.0  # launch -> the first sync pass over
    move_first_pass_s: float = 180.0  # an alias moved during the first pass -> served
    move_after_s: float = 30.0  # an alias moved later -> served
    no_change_s: float = 90.0  # the no-change passes, together
    first_move_after_s: float = 3.0  # how long after the gateway answers HTTP the alias moves


# --- the registry's shape --------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """``versions`` spread over models of up to VERSIONS_PER_MODEL versions each; `champion` on
    WARM_MODELS of them (spread evenly), at the middle version, never the latest."""

    versions: int
    per_model: int = VERSIONS_PER_MODEL
    warm: int = WARM_MODELS

    def __post_init__(self) -> None:
        if self.versions < 2 or self.versions % self.versions_per_model:
            raise ValueError(f"{self.versions} versions do not split into models of {self.versions_per_model}")

    @property
    def versions_per_model(self) -> int:
        return min(self.per_model, self.versions)

    @property
    def models(self) -> int:
        return self.versions // self.versions_per_model

    @property
    def champion(self) -> int:
        """The version every warm alias points at when a run starts."""
        return self.versions_per_model // 2

    def names(self) -> list[str]:
        return [f"scale-{index:03d}" for index in range(self.models)]

    def warm_names(self) -> list[str]:
        names, count = self.names(), min(self.warm, self.models)
        return [names[index * self.models // count] for index in range(count)]

    def moves(self, count: int) -> list[tuple[str, int]]:
        """Where each alias move of a run goes: a warm model each, to a version never served."""
        warm = self.warm_names()
        room = self.versions_per_model - self.champion
        if count > len(warm) * room:
            raise ValueError(f"no room for {count} moves")
        return [(warm[k % len(warm)], self.champion + 1 + k // len(warm)) for k in range(count)]


def payload(name: str, version: int) -> bytes:
    """A version's own bytes: the same for the same version on every build, different for each."""
    return random.Random(f"{name}/{version}").randbytes(PAYLOAD_BYTES)


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``, each file once (hard links), no symlink followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, files in os.walk(path):
        for entry in files:
            try:
                info = os.lstat(os.path.join(folder, entry))
            except FileNotFoundError:
                continue  # removed meanwhile (a staging directory)
            if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


# --- building it -------------------------------------------------------------------------------


def registry_path(work: Path, layout: Layout) -> Path:
    return work / f"scale-{layout.versions}"


def tracking_uri(path: Path) -> str:
    return f"sqlite:///{path / 'mlflow.db'}"


def version_dir(path: Path, name: str, version: int) -> Path:
    return path / "versions" / name / str(version)


def _log_template(uri: str, path: Path) -> Path:
    """One real logged model (not registered): the files every version copies."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    from gateway.demo import iris_frame, using_registry

    with using_registry(uri, path / "template-artifacts") as client:
        features, target = iris_frame()
        model = LogisticRegression(max_iter=1000).fit(features, target)
        with mlflow.start_run(run_name="scale-template"):
            info = mlflow.sklearn.log_model(
                model, name="model", input_example=features.head(2), pip_requirements=["scikit-learn"]
            )
        location = client.get_logged_model(info.model_id).artifact_location
    return Path(urllib.parse.urlparse(location).path)


def build_registry(work: Path, layout: Layout, log: Log) -> dict[str, Any]:
    """Build the registry of ``layout`` under bench/.work (or reuse it); what building it took."""
    from mlflow.tracking import MlflowClient

    path = registry_path(work, layout)
    done = path / "build.json"
    if done.exists():
        return {**json.loads(done.read_text()), "reused": True}
    if path.exists():
        shutil.rmtree(path)  # a build that did not finish
    path.mkdir(parents=True)
    uri = tracking_uri(path)
    started = time.perf_counter()
    template = _log_template(uri, path)
    client = MlflowClient(tracking_uri=uri)
    copying = 0.0
    creates: list[float] = []
    for index, name in enumerate(layout.names()):
        client.create_registered_model(name)
        for version in range(1, layout.versions_per_model + 1):
            tick = time.perf_counter()
            target = version_dir(path, name, version)
            shutil.copytree(template, target)
            (target / "payload.bin").write_bytes(payload(name, version))
            copying += time.perf_counter() - tick
            tick = time.perf_counter()
            created = client.create_model_version(name, source=str(target))
            creates.append(time.perf_counter() - tick)
            if int(created.version) != version:
                raise RuntimeError(f"{name}: expected version {version}, MLflow made {created.version}")
        if (index + 1) % max(1, layout.models // 10) == 0:
            log(f"registry-scale: {len(creates):,}/{layout.versions:,} versions registered")
    reset_aliases(client, layout)
    tenth = max(1, len(creates) // 10)
    info = {
        "versions": layout.versions,
        "models": layout.models,
        "build_s": time.perf_counter() - started,
        "copy_s": copying,
        "register_s": sum(creates),
        "create_ms_first_tenth": statistics.median(creates[:tenth]) * 1000,
        "create_ms_last_tenth": statistics.median(creates[-tenth:]) * 1000,
        "version_bytes": tree_bytes(version_dir(path, layout.names()[0], 1)),
        "registry_bytes": tree_bytes(path),
    }
    done.write_text(json.dumps(info, indent=2) + "\n")
    return {**info, "reused": False}


def reset_aliases(client: Any, layout: Layout) -> None:
    """Every warm alias back where a run starts (the last run moved some)."""
    for name in layout.warm_names():
        client.set_registered_model_alias(name, ALIAS, str(layout.champion))


# --- reading it ---------------------------------------------------------------------------------


def _paged(search: Callable[[str | None], Any]) -> tuple[int, int]:
    """Follow page tokens to the end: (calls, rows)."""
    calls = rows = 0
    token: str | None = None
    while True:
        page = search(token)
        calls += 1
        rows += len(page)
        token = page.token
        if not token:
            return calls, rows


def read_operations(client: Any, layout: Layout) -> list[tuple[str, str, Callable[[], tuple[int, int]]]]:
    """(key, what it is, the read: returns (calls, rows)) for each way of reading the registry."""
    one = layout.warm_names()[0]
    warm = ", ".join(f"'{name}'" for name in layout.warm_names())

    def models(size: int) -> Callable[[], tuple[int, int]]:
        return lambda: _paged(lambda token: client.search_registered_models(max_results=size, page_token=token))

    def versions(filter_string: str, size: int) -> Callable[[], tuple[int, int]]:
        return lambda: _paged(
            lambda token: client.search_model_versions(filter_string, max_results=size, page_token=token)
        )

    def naive() -> tuple[int, int]:
        calls, _ = models(200)()
        more, rows = versions("", 1000)()
        return calls + more, rows

    def newest_model() -> tuple[int, int]:
        page = client.search_registered_models(max_results=1, order_by=["last_updated_timestamp DESC"])
        return 1, len(page)

    def newest_version() -> tuple[int, int]:
        page = client.search_model_versions(max_results=1, order_by=["last_updated_timestamp DESC"])
        return 1, len(page)

    def by_timestamp() -> tuple[int, int]:
        return 1, len(client.search_model_versions("last_updated_timestamp > 0", max_results=1))

    def download_uri() -> tuple[int, int]:
        client.get_model_version_download_uri(one, "1")
        return 1, 1

    per_model, warm_count = layout.versions_per_model, len(layout.warm_names())
    newest = "order_by last_updated_timestamp DESC, max_results=1"
    return [
        ("naive", "search_registered_models (pages of 200) + search_model_versions (pages of 1,000)", naive),
        ("versions_one_page", "search_model_versions, max_results=200,000 (one page)", versions("", 200_000)),
        ("models", "search_registered_models, pages of 200 (aliases, last_updated_timestamp)", models(200)),
        ("models_one_page", "search_registered_models, max_results=1,000 (one page)", models(1000)),
        ("newest_model", f"search_registered_models {newest}", newest_model),
        ("newest_version", f"search_model_versions {newest}", newest_version),
        ("one_model", f"search_model_versions name='{one}' ({per_model} versions)", versions(f"name='{one}'", 1000)),
        (
            "warm_models",
            f"search_model_versions name IN (the {warm_count} warm models)",
            versions(f"name IN ({warm})", 1000),
        ),
        ("download_uri", "get_model_version_download_uri (one version)", download_uri),
        ("filter_timestamp", "search_model_versions filter last_updated_timestamp > 0", by_timestamp),
    ]


def read_costs(uri: str, layout: Layout, *, repeats: int = 5, naive_repeats: int = 3) -> list[dict[str, Any]]:
    """Median wall time of each read, in this process (MlflowClient straight on the sqlite file)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.search_registered_models(max_results=1)  # the store's engine and schema check, once
    rows: list[dict[str, Any]] = []
    for key, what, read in read_operations(client, layout):
        timings: list[float] = []
        calls = found = 0
        error = None
        for _ in range(naive_repeats if key in ("naive", "versions_one_page") else repeats):
            tick = time.perf_counter()
            try:
                calls, found = read()
            except Exception as exc:  # noqa: BLE001 - a read MLflow refuses is a finding, not a failure
                first = str(exc).splitlines()[0] if str(exc) else ""
                error = f"{type(exc).__name__}: {first.split('. ')[0][:160]}"  # MLflow's key list varies in order
                break
            timings.append(time.perf_counter() - tick)
        ms = statistics.median(timings) * 1000 if timings else float("nan")
        rows.append({"op": key, "what": what, "calls": calls, "rows": found, "ms": ms, "error": error})
    return rows


# --- the gateway's metrics ---------------------------------------------------------------------


def histogram_totals(text: str, name: str) -> tuple[float, float] | None:
    """(sum, count) of a Prometheus histogram, over all its labels; None when it is not exposed."""
    total = count = 0.0
    found = False
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        base = metric.split("{", 1)[0]
        if base == f"{name}_sum":
            total += float(value)
            found = True
        elif base == f"{name}_count":
            count += float(value)
            found = True
    return (total, count) if found else None


def pass_durations(samples: list[tuple[float, float]]) -> list[float]:
    """Each pass's seconds from successive (sum, count) samples of the sync histogram: a step of
    one pass gives its time; a step of several (sampled too slowly) gives each their mean."""
    out: list[float] = []
    for (sum_before, count_before), (sum_after, count_after) in zip(samples, samples[1:], strict=False):
        passes = round(count_after - count_before)
        if passes > 0:
            out.extend([(sum_after - sum_before) / passes] * passes)
    return out


def _scrape(url: str) -> tuple[float, float] | None:
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
            return histogram_totals(answer.read().decode(), HISTOGRAM)
    except (urllib.error.URLError, OSError):
        return None


def _passes(url: str) -> int | None:
    totals = _scrape(url)
    return None if totals is None else round(totals[1])


def _wait_passes(url: str, at_least: int, deadline: float) -> int | None:
    """Wait (until ``deadline``, a perf_counter) for ``at_least`` passes; the count, or None."""
    while time.perf_counter() < deadline:
        passes = _passes(url)
        if passes is not None and passes >= at_least:
            return passes
        time.sleep(0.2)
    return None


def _served_version(url: str, name: str) -> str | None:
    request = urllib.request.Request(
        f"{url}/models/{urllib.parse.quote(name, safe='')}/predict",
        data=BODY,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
            version: str | None = answer.headers.get("X-Model-Version")
            return version
    except (urllib.error.URLError, OSError):
        return None  # not ready yet (503), or not up


def wait_served(url: str, name: str, version: int, since: float, deadline_s: float) -> float | None:
    """Seconds from ``since`` until `/models/<name>/predict` answers with ``version``; None past the deadline."""
    while time.perf_counter() - since < deadline_s:
        if _served_version(url, name) == str(version):
            return time.perf_counter() - since
        time.sleep(0.1)
    return None


def _wait_live(server: Server, timeout: float) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}; see {server.log}")
        try:
            with urllib.request.urlopen(server.url + "/health/live", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer HTTP within {timeout:.0f} s; see {server.log}")


# --- the gateway on it -------------------------------------------------------------------------


def measure_gateway(
    work: Path,
    layout: Layout,
    *,
    venv_bin: Path,
    cpus: str | None,
    log: Log,
    poll_s: float = POLL_SECONDS,
    limits: Limits | None = None,
) -> dict[str, Any]:
    """One fresh gateway on the registry of ``layout``; everything the section reports about it."""
    from mlflow.tracking import MlflowClient

    limits = limits or Limits()
    path = registry_path(work, layout)
    client = MlflowClient(tracking_uri=tracking_uri(path))
    reset_aliases(client, layout)
    state = work / "gateway" / f"scale-{layout.versions}"
    port = free_port()
    env = {
        **fresh_gateway_state(state, tracking_uri(path)),
        "GATEWAY_WARM_ALIASES": ALIAS,
        "GATEWAY_POLL_INTERVAL_SECONDS": f"{poll_s:g}",
        "GATEWAY_VERIFY_INTERVAL_SECONDS": "86400",  # no re-hash of served versions inside a timed pass
    }
    cache = Path(env["GATEWAY_ARTIFACT_CACHE_DIR"])
    warm = layout.warm_names()
    server = gateway_server(
        f"gateway (registry-scale {layout.versions})",
        venv_bin,
        port=port,
        predict_path=f"/models/{warm[0]}/predict",
        log=work / f"gateway-scale-{layout.versions}.log",
        env=env,
        cpus=cpus,
    )
    moves = layout.moves(1 + AFTER_MOVES)
    served = {(name, layout.champion) for name in warm}  # every version a warm alias pointed at

    def expected_bytes() -> int:
        return sum(tree_bytes(version_dir(path, name, version)) for name, version in served)

    out: dict[str, Any] = {"poll_s": poll_s, "limits": limits.__dict__, "warm_aliases": len(warm)}
    first_move: dict[str, Any] = {}
    try:
        server.launch()
        _wait_live(server, limits.ready_s)
        wait_until = time.perf_counter() + limits.first_move_after_s
        while time.perf_counter() < wait_until and not _passes(server.url):
            time.sleep(0.1)
        name, version = moves[0]
        before = _passes(server.url)
        client.set_registered_model_alias(name, ALIAS, str(version))
        moved = time.perf_counter()
        served.add((name, version))
        first_move |= {
            "model": name,
            "to": version,
            "at_s": server.seconds_since_launch(),
            "during_first_pass": None if before is None else before == 0,
            "deadline_s": limits.move_first_pass_s,
        }
        log(f"registry-scale {layout.versions}: {name} {ALIAS} -> {version}, {first_move['at_s']:.1f} s after start")
        watcher = threading.Thread(
            target=lambda: first_move.update(
                delay_s=wait_served(server.url, name, version, moved, limits.move_first_pass_s)
            )
        )
        watcher.start()
        try:
            server.wait_ready(limits.ready_s)
            out["ready_s"] = server.ready_seconds
            out["bytes_at_ready"] = tree_bytes(cache)
            out["expected_bytes_at_ready"] = expected_bytes()
            out["rss_mb_at_ready"] = server.rss_mb()
            log(f"registry-scale {layout.versions}: ready in {server.ready_seconds:.1f} s")
            left = limits.first_pass_s - server.seconds_since_launch()
            first_done = _wait_passes(server.url, 1, time.perf_counter() + left)
            out["first_pass_over_s"] = server.seconds_since_launch() if first_done else None
            totals = _scrape(server.url) if first_done == 1 else None
            out["first_pass_s"] = totals[0] if totals else None  # the histogram's only observation
        finally:
            watcher.join()
        out["move_first_pass"] = first_move
        if first_done:
            out["no_change_passes_s"] = _no_change_passes(server.url, limits)
        else:
            out["no_change_passes_s"] = []
        out["moves_after"] = []
        for name, version in moves[1:]:
            done = _passes(server.url) or 0
            client.set_registered_model_alias(name, ALIAS, str(version))
            moved = time.perf_counter()
            served.add((name, version))
            delay = wait_served(server.url, name, version, moved, limits.move_after_s)
            out["moves_after"].append(
                {
                    "model": name,
                    "to": version,
                    "delay_s": delay,
                    "passes_before": done,
                    "deadline_s": limits.move_after_s,
                }
            )
        out["bytes_at_end"] = tree_bytes(cache)
        out["expected_bytes_at_end"] = expected_bytes()
        out["cache_breakdown"] = (
            {child.name: tree_bytes(child) for child in sorted(cache.iterdir())} if cache.is_dir() else {}
        )
        out["passes_at_end"] = _passes(server.url)
        out["histogram_exposed"] = out["passes_at_end"] is not None
        out["state_db_bytes"] = sum(f.stat().st_size for f in state.glob("state.db*"))
        out["rss_mb"] = server.rss_mb()
        out["peak_rss_mb"] = server.peak_rss_mb()
        out["seconds"] = server.seconds_since_launch()
    finally:
        server.stop()
    return out


def _no_change_passes(url: str, limits: Limits) -> list[float]:
    """Times of NO_CHANGE_PASSES poll passes, after one more pass (which may apply the first-pass move)."""
    deadline = time.perf_counter() + limits.no_change_s
    start = _passes(url)
    if start is None or _wait_passes(url, start + 1, deadline) is None:
        return []
    samples: list[tuple[float, float]] = []
    while time.perf_counter() < deadline:
        totals = _scrape(url)
        if totals is not None:
            samples.append(totals)
            if len(pass_durations(samples)) >= NO_CHANGE_PASSES:
                break
        time.sleep(0.2)
    return pass_durations(samples)[:NO_CHANGE_PASSES]


# --- the section -------------------------------------------------------------------------------


def section(
    work: Path, *, sizes: list[int], venv_bin: Path, cpus: str | None, log: Log, limits: Limits | None = None
) -> dict[str, Any]:
    """Build (or reuse) each registry, time its reads, run a gateway on it."""
    registries: list[dict[str, Any]] = []
    for size in sizes:
        layout = Layout(size)
        entry: dict[str, Any] = {"versions": size, "models": layout.models, "warm_aliases": len(layout.warm_names())}
        registries.append(entry)
        log(f"registry-scale: building (or reusing) {work / f'scale-{size}'}")
        entry["build"] = build_registry(work, layout, log)
        log(f"registry-scale {size}: timing registry reads")
        entry["read_cost"] = read_costs(tracking_uri(registry_path(work, layout)), layout)
        try:
            entry["gateway"] = measure_gateway(work, layout, venv_bin=venv_bin, cpus=cpus, log=log, limits=limits)
        except Exception as exc:  # noqa: BLE001 - one size's failure is reported, the others still run
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log(f"registry-scale {size}: gateway run FAILED: {exc}")
    return {"registries": registries, "poll_s": POLL_SECONDS, "payload_bytes": PAYLOAD_BYTES}


# --- verdicts and the report ---------------------------------------------------------------------


def _at(data: dict[str, Any] | None, versions: int) -> dict[str, Any] | None:
    if not data:
        return None
    return next((entry for entry in data.get("registries", []) if entry["versions"] == versions), None)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _mib(value: float) -> str:
    return f"{value / 2**20:,.2f} MiB"


def _seconds(value: float | None, deadline: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"not within {deadline:g} s" if deadline is not None else "–"
    return f"{value:.2f} s"


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    """The issue's targets, judged at 10,000 versions (and the growth from 1,000)."""
    if not data:
        return []
    big = _at(data, TARGET_VERSIONS)
    if big is None:
        return [(f"registry-scale targets (set at {TARGET_VERSIONS:,} versions)", "not run at that size", None)]
    gw = big.get("gateway")
    if gw is None:
        return [(f"registry-scale at {TARGET_VERSIONS:,} versions", f"gateway run failed: {big.get('error')}", False)]
    poll = float(gw["poll_s"])
    out: list[tuple[str, str, bool | None]] = []
    ready = gw.get("ready_s")
    out.append(
        (
            f"{TARGET_VERSIONS:,} versions: ready < {READY_TARGET_S:g} s",
            _seconds(ready),
            ready is not None and ready < READY_TARGET_S,
        )
    )
    passes = gw.get("no_change_passes_s") or []
    if passes:
        worst = max(passes)
        out.append(
            (
                f"{TARGET_VERSIONS:,} versions: no-change poll pass < {PASS_TARGET_S:g} s",
                f"{worst:.2f} s (max of {len(passes)})",
                worst < PASS_TARGET_S,
            )
        )
    else:
        over = gw.get("first_pass_over_s")
        why = "first pass not over" if over is None else "no pass after the first"
        out.append(
            (
                f"{TARGET_VERSIONS:,} versions: no-change poll pass < {PASS_TARGET_S:g} s",
                f"none measured ({why})",
                False,
            )
        )
    small = _at(data, 1_000)
    small_passes = (small or {}).get("gateway", {}).get("no_change_passes_s") or []
    if passes and small_passes:
        ratio = _median(passes) / _median(small_passes)
        out.append(("no-change poll pass grows at most linearly, 1,000 → 10,000 (≤ 10×)", f"{ratio:.1f}×", ratio <= 10))
    else:
        out.append(
            ("no-change poll pass grows at most linearly, 1,000 → 10,000 (≤ 10×)", "not measured at both sizes", None)
        )
    limit = poll + 2
    first = gw.get("move_first_pass") or {}
    delay = _after_ready(first, ready)
    when = "during the first pass" if first.get("during_first_pass") else "moved after the first pass was already over"
    # A gateway serves nothing before it is ready: a move made while it starts is judged from
    # the later of the move and readiness (the bare delay from the move is in the table).
    out.append(
        (
            f"{TARGET_VERSIONS:,} versions: alias moved {when} served within {limit:g} s of the move or of ready",
            _seconds(delay, first.get("deadline_s")),
            delay is not None and delay <= limit,
        )
    )
    moves = gw.get("moves_after") or []
    delays = [move["delay_s"] for move in moves]
    if moves:
        missed = [d for d in delays if d is None]
        value = (
            f"{len(missed)} of {len(moves)} not within {moves[0]['deadline_s']:g} s"
            if missed
            else f"{max(delays):.2f} s (max of {len(moves)})"
        )
        later = "after the first pass" if all(move["passes_before"] for move in moves) else "while the first pass ran"
        out.append(
            (
                f"{TARGET_VERSIONS:,} versions: alias moved {later} served within {limit:g} s",
                value,
                not missed and max(delays) <= limit,
            )
        )
    for when in ("at_ready", "at_end"):
        measured, expected = gw.get(f"bytes_{when}"), gw.get(f"expected_bytes_{when}")
        if measured is None or not expected:
            continue
        label = "at ready" if when == "at_ready" else "at the end of the run"
        value = f"{_mib(measured)} for {_mib(expected)} ({measured / expected:.1f}×)"
        out.append(
            (
                f"{TARGET_VERSIONS:,} versions: downloaded {label}: warm aliases' versions only (≤ {BYTES_SLACK:g}×)",
                value,
                measured <= BYTES_SLACK * expected,
            )
        )
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    """The section's Markdown lines."""
    if not data:
        return []
    registries = data.get("registries", [])
    sizes = [entry["versions"] for entry in registries]
    lines = ["", "## Registry scale (issue 10)", ""]
    sample = next((entry["build"] for entry in registries if "build" in entry), None)
    per_version = f"~{sample['version_bytes'] / 1024:.0f} KiB a version" if sample else ""
    lines += [
        f"Registries of {' and '.join(f'{s:,}' for s in sizes)} versions ({VERSIONS_PER_MODEL} versions a model, "
        f"`{ALIAS}` on {WARM_MODELS} models, or all when fewer), sqlite, each version its own copy of one logged iris "
        f"LogisticRegression plus {data.get('payload_bytes', PAYLOAD_BYTES) // 1024} KiB of its own bytes "
        f"({per_version}), registered with `create_model_version`. One gateway per registry with a fresh "
        f"state database and artifact cache: `GATEWAY_WARM_ALIASES={ALIAS}`, "
        f"poll every {data.get('poll_s', POLL_SECONDS):g} s, "
        "verify interval 1 day (no re-hash inside a timed pass). Pass times come from the gateway's "
        f"`{HISTOGRAM}` histogram; an alias is served when `/models/<name>/predict` answers with its "
        "version in `X-Model-Version` (polled every 0.1 s).",
        "",
    ]
    header = "| | " + " | ".join(f"{s:,} versions" for s in sizes) + " |"
    lines += [header, "|---|" + "--:|" * len(sizes)]

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for entry in registries:
            try:
                cells.append(cell(entry))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                cells.append("–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def gw(entry: dict[str, Any]) -> dict[str, Any]:
        if "gateway" not in entry:
            raise KeyError("gateway")
        return dict(entry["gateway"])

    row(
        "registry built in",
        lambda e: f"{e['build']['build_s']:.0f} s" + (" (reused)" if e["build"].get("reused") else ""),
    )
    row(
        "create_model_version, first / last tenth",
        lambda e: f"{e['build']['create_ms_first_tenth']:.1f} / {e['build']['create_ms_last_tenth']:.1f} ms",
    )
    row("ready after", lambda e: _seconds(gw(e)["ready_s"]))
    row("downloaded at ready (warm aliases' versions)", lambda e: _downloaded(e, "at_ready"))
    row(
        "first pass over after (since start)",
        lambda e: _seconds(gw(e)["first_pass_over_s"], gw(e)["limits"]["first_pass_s"]),
    )
    row("first pass took", lambda e: _seconds(gw(e)["first_pass_s"]))
    row(
        "no-change poll pass, median / max",
        lambda e: f"{_median(gw(e)['no_change_passes_s']):.2f} / {max(gw(e)['no_change_passes_s']):.2f} s",
    )
    row("alias move → served, moved during start-up", lambda e: _first_move(gw(e)))
    row("alias move → served, later (max)", lambda e: _after_moves(gw(e)))
    row("downloaded at the end (versions aliases pointed at)", lambda e: _downloaded(e, "at_end"))
    row(
        "artifact cache by folder",
        lambda e: ", ".join(f"{k} {_mib(v)}" for k, v in gw(e)["cache_breakdown"].items()) or "empty",
    )
    row("poll passes run", lambda e: f"{gw(e)['passes_at_end']}")
    row("state database", lambda e: _mib(gw(e)["state_db_bytes"]))
    row(
        "RSS at ready / at end / peak",
        lambda e: f"{gw(e)['rss_mb_at_ready']:.0f} / {gw(e)['rss_mb']:.0f} / {gw(e)['peak_rss_mb']:.0f} MiB",
    )
    for entry in registries:
        if "error" in entry:
            lines.append(f"\n{entry['versions']:,} versions: the gateway run failed: {entry['error']}")
        elif entry.get("gateway", {}).get("histogram_exposed") is False:
            lines.append(f"\n{entry['versions']:,} versions: the gateway exposes no `{HISTOGRAM}`: no pass was timed.")
    lines += ["", "### Reading the registry", ""]
    lines += ["Median wall time in the bench process (`MlflowClient` on the sqlite file, no gateway running).", ""]
    lines += ["| read | " + " | ".join(f"{s:,}: calls, rows, ms" for s in sizes) + " |", "|---|" + "--:|" * len(sizes)]
    ops: dict[str, str] = {}  # every read any registry timed, in order
    for entry in registries:
        ops |= {r["op"]: r["what"] for r in entry.get("read_cost", []) if r["op"] not in ops}
    for op, what in ops.items():
        cells = []
        for entry in registries:
            found = next((r for r in entry.get("read_cost", []) if r["op"] == op), None)
            if found is None:
                cells.append("–")
            elif found["error"]:
                cells.append(f"refused: {found['error']}")
            else:
                cells.append(f"{found['calls']}, {found['rows']:,}, {found['ms']:,.1f}")
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return lines


def _downloaded(entry: dict[str, Any], when: str) -> str:
    """Bytes in the artifact cache, about how many versions that is, and what the aliases needed."""
    measured, expected = entry["gateway"][f"bytes_{when}"], entry["gateway"][f"expected_bytes_{when}"]
    size = entry.get("build", {}).get("version_bytes")
    worth = f", ≈ {measured / size:,.0f} versions" if size else ""
    return f"{_mib(measured)}{worth} (warm: {_mib(expected)})"


def _after_ready(move: dict[str, Any], ready: float | None) -> float | None:
    """Seconds from the later of the move and readiness to the move being served."""
    delay, at = move.get("delay_s"), move.get("at_s")
    if delay is None or at is None or ready is None:
        return delay
    return at + delay - max(at, ready)


def _first_move(gw: dict[str, Any]) -> str:
    move = gw["move_first_pass"]
    when = "during the first pass" if move["during_first_pass"] else "after the first pass"
    after = _after_ready(move, gw.get("ready_s"))
    since_ready = f", {after:.2f} s after ready" if after is not None and after != move.get("delay_s") else ""
    return (
        f"{_seconds(move['delay_s'], move['deadline_s'])} (moved {move['at_s']:.1f} s after start, {when}{since_ready})"
    )


def _after_moves(gw: dict[str, Any]) -> str:
    moves = gw["moves_after"]
    delays = [move["delay_s"] for move in moves]
    if any(delay is None for delay in delays):
        missed = sum(delay is None for delay in delays)
        text = f"{missed} of {len(moves)} not within {moves[0]['deadline_s']:g} s"
    else:
        text = f"{max(delays):.2f} s (of {len(moves)})"
    if not all(move["passes_before"] for move in moves):
        text += ", moved before the first pass was over"
    return text
