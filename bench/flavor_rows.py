"""The flavor matrix, measured (issue 41): ``--only flavors``.

Every flavor of tests/flavors/models.py (the suite's own list, logged once into
``bench/.work/flavors-registry``): c1 p50 and c32 throughput through the gateway (one gateway,
every version in process, the fast path where it serves) and through ``mlflow models serve
--env-manager local`` on the same version and body (one server per flavor, started in turn);
then the first answer's time for each flavor from an environment of its own built from a warm
uv cache (a gateway with ``GATEWAY_ENV_ISOLATE=always``, a fresh environment directory, uv's
cache filled by an earlier build), and while each of those builds, the slowest answer of a
version already loaded on the same gateway: the first request of a flavor whose environment
is not built yet must not block other models.

The pure parts (verdicts, report) are here beside the driver; bench/sections/flavors.py hands it its helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS = (1, 32)
GATEWAY, MLFLOW = "gateway", "mlflow models serve"
BLOCK_MS = 1000.0  # a loaded version's slowest answer while another flavor's environment builds
THROUGHPUT_FLOOR = 1.0  # the gateway's c32 req/s at least mlflow models serve's, flavor by flavor


def flavors() -> list[Any]:
    """The suite's matrix (tests/flavors/models.py), so the bench measures what the tests check."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.flavors.models import FLAVORS

    return list(FLAVORS)


def build_registry(path: Path) -> str:
    """Every flavor's version 1 in a sqlite registry, built once and reused."""
    tracking_uri = f"sqlite:///{path / 'mlflow.db'}"
    done = path / ".complete"
    if done.exists():
        return tracking_uri
    from gateway.demo import using_registry

    path.mkdir(parents=True, exist_ok=True)
    with using_registry(tracking_uri, path / "artifacts"):
        for flavor in flavors():
            scratch = path / "scratch" / flavor.key
            scratch.mkdir(parents=True, exist_ok=True)
            flavor.log(flavor.name, scratch)
    done.touch()
    return tracking_uri


def _post(url: str, body: bytes, timeout: float = 600) -> float:
    """Seconds until a 2xx answer (raises otherwise)."""
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
    return time.perf_counter() - started


class _Prober:
    """Asks a loaded version every 50 ms from a thread; the slowest answer since ``reset``."""

    def __init__(self, url: str, body: bytes) -> None:
        self.url, self.body = url, body
        self.slowest = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                seconds = _post(self.url, self.body, timeout=60)
            except Exception:  # noqa: BLE001 - a failed probe counts as blocked for its timeout
                seconds = 60.0
            self.slowest = max(self.slowest, seconds)
            self.answers += 1

    def reset(self) -> None:
        self.slowest, self.answers = 0.0, 0

    def __enter__(self) -> _Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=70)


def section(
    run: Any,
    *,
    work: Path,
    gateway: Callable[..., Any],
    mlflow_server: Callable[[str, str, dict[str, str]], Any],
    drive: Callable[..., Any],
) -> dict[str, Any]:
    """Measure every flavor; ``gateway(tracking_uri, label, cpus=, env=)`` and
    ``mlflow_server(tracking_uri, model_uri, env)`` build servers, ``drive`` loads them."""
    data: dict[str, Any] = {"rows": [], "first": [], "notes": []}
    tracking_uri = build_registry(work / "flavors-registry")
    rows = flavors()
    bodies = {}
    for flavor in rows:
        bodies[flavor.key] = work / f"flavor-{flavor.key}.json"
        bodies[flavor.key].write_text(json.dumps(flavor.body))

    def point(server: str, flavor: Any, url: str) -> None:
        for connections in CONNECTIONS:
            if run.warmup:
                drive(url, bodies[flavor.key], connections=connections, duration=run.warmup, cpus=run.load_cpus)
            result = drive(url, bodies[flavor.key], connections=connections, duration=run.duration, cpus=run.load_cpus)
            data["rows"].append(
                {"flavor": flavor.key, "server": server, "connections": connections, **result.as_dict()}
            )
            run.log(
                f"flavors {flavor.key} {server} c={connections}: {result.req_s:.0f} req/s p50 {result.p50_ms:.2f} ms"
            )

    env = {"GATEWAY_WARM_ALIASES": "", "KERAS_BACKEND": "torch"}
    with gateway(tracking_uri, "flavors", cpus=run.server_cpus, env=env) as gw:
        for flavor in rows:
            url = f"{gw.url}/models/{flavor.name}/versions/1/predict"
            _post(url, bodies[flavor.key].read_bytes())
            point(GATEWAY, flavor, url)
    for flavor in rows:
        # MLflow's keras loader sets no backend: told here, as an operator of mlflow models serve must
        server = mlflow_server(tracking_uri, f"models:/{flavor.name}/1", {"KERAS_BACKEND": "torch"})
        try:
            with server:
                _post(server.url + "/invocations", bodies[flavor.key].read_bytes())
                point(MLFLOW, flavor, server.url + "/invocations")
        except Exception as exc:  # noqa: BLE001 - one flavor MLflow cannot serve is a note
            data["notes"].append(f"mlflow models serve, {flavor.key}: {type(exc).__name__}: {exc}")
    first_answers(run, data, work=work, tracking_uri=tracking_uri, rows=rows, bodies=bodies, gateway=gateway)
    return data


def first_answers(
    run: Any,
    data: dict[str, Any],
    *,
    work: Path,
    tracking_uri: str,
    rows: list[Any],
    bodies: dict[str, Path],
    gateway: Callable[..., Any],
) -> None:
    """Each flavor's first answer from its own environment, uv's cache warm: a first pass fills
    the cache (its environments are thrown away), the second pass is timed."""
    cache = work / "uv-cache"
    for label in ("flavors-prime", "flavors-isolated"):
        envs = work / f"{label}-envs"
        shutil.rmtree(envs, ignore_errors=True)
        env = {
            "GATEWAY_WARM_ALIASES": "",
            "GATEWAY_ENV_ISOLATE": "always",
            "GATEWAY_ENV_DIR": str(envs),
            "GATEWAY_ENV_MAX_WORKERS": str(len(rows) + 2),  # one environment (and worker) per flavor
            "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(cache)),
            # where uv finds torch's CPU build (an operator's UV_INDEX/UV_FIND_LINKS): the versions
            # pin this host's torch, 2.13.0+cpu, which the package index does not have
            "UV_FIND_LINKS": os.environ.get("UV_FIND_LINKS") or os.environ.get("PIP_FIND_LINKS", ""),
            "KERAS_BACKEND": "torch",
        }
        timed = label == "flavors-isolated"
        with gateway(tracking_uri, label, cpus=run.server_cpus, env=env) as gw:
            probe_flavor, *others = rows
            probe_url = f"{gw.url}/models/{probe_flavor.name}/versions/1/predict"
            seconds = _post(probe_url, bodies[probe_flavor.key].read_bytes())
            if timed:
                data["first"].append(
                    {"flavor": probe_flavor.key, "seconds": round(seconds, 2), "slowest_other_ms": None}
                )
            with _Prober(probe_url, bodies[probe_flavor.key].read_bytes()) as prober:
                for flavor in others:
                    prober.reset()
                    try:
                        seconds = _post(
                            f"{gw.url}/models/{flavor.name}/versions/1/predict", bodies[flavor.key].read_bytes()
                        )
                    except Exception as exc:  # noqa: BLE001 - reported, the others go on
                        data["notes"].append(f"first answer, {flavor.key} ({label}): {type(exc).__name__}: {exc}")
                        continue
                    if timed:
                        entry = {
                            "flavor": flavor.key,
                            "seconds": round(seconds, 2),
                            "slowest_other_ms": round(prober.slowest * 1000, 1),
                            "other_answers": prober.answers,
                        }
                        data["first"].append(entry)
                        run.log(
                            f"flavors first answer {flavor.key}: {seconds:.1f} s; {probe_flavor.key} meanwhile at "
                            f"worst {entry['slowest_other_ms']} ms over {prober.answers} answers"
                        )
        if not timed:
            shutil.rmtree(envs, ignore_errors=True)


# --- verdicts and report -------------------------------------------------------------------


def _value(data: dict[str, Any], flavor: str, server: str, connections: int, key: str) -> float | None:
    found = [
        r[key] for r in data["rows"] if (r["flavor"], r["server"], r["connections"]) == (flavor, server, connections)
    ]
    return float(found[0]) if found and found[0] is not None else None


def ratios(data: dict[str, Any]) -> dict[str, float]:
    """Per flavor: the gateway's c32 req/s over mlflow models serve's."""
    out = {}
    for flavor in dict.fromkeys(r["flavor"] for r in data["rows"]):
        ours, theirs = _value(data, flavor, GATEWAY, 32, "req_s"), _value(data, flavor, MLFLOW, 32, "req_s")
        if ours is not None and theirs:
            out[flavor] = ours / theirs
    return out


def targets(data: dict[str, Any] | None) -> list[tuple[str, str, bool | None]]:
    if not data:
        return []
    out: list[tuple[str, str, bool | None]] = []
    found = ratios(data)
    behind = sorted(flavor for flavor, ratio in found.items() if ratio < THROUGHPUT_FLOOR)
    out.append(
        (
            f"flavors: the gateway's c32 throughput >= mlflow models serve's, flavor by flavor ({len(found)} compared)",
            "every one"
            if found and not behind
            else ("not measured" if not found else f"behind on {', '.join(behind)}"),
            bool(found) and not behind,
        )
    )
    blocked = [r for r in data["first"] if r.get("slowest_other_ms") is not None]
    worst = max((r["slowest_other_ms"] for r in blocked), default=None)
    out.append(
        (
            f"flavors: a loaded version's slowest answer while another flavor's environment builds <= {BLOCK_MS:g} ms",
            "not measured" if worst is None else f"{worst:.0f} ms",
            None if worst is None else worst <= BLOCK_MS,
        )
    )
    return out


def render(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return []
    lines = ["", "## Flavors (issue 41)", ""]
    lines.append(
        "Each flavor of the suite's matrix (tests/flavors/models.py), version 1, its own body: the gateway (every "
        "version in process, the fast path where it serves) against `mlflow models serve --env-manager local "
        "--workers 1` on the same version and body. The first answer is from a gateway with "
        "`GATEWAY_ENV_ISOLATE=always`: an environment of the flavor's own, built from a warm uv cache, a worker "
        "started, the version loaded (uv told where torch's CPU wheel is); beside it, the slowest answer of a version "
        "already loaded there meanwhile. A `PythonModel` pickled by reference to the logging process's module "
        "(`python-model`) cannot load in a worker, as with `mlflow models serve`."
    )
    lines += [
        "",
        "| flavor | gateway c1 p50 | mlflow c1 p50 | gateway c32 req/s | mlflow c32 req/s | ratio | first answer | "
        "loaded version meanwhile, worst |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    first = {r["flavor"]: r for r in data["first"]}
    found = ratios(data)

    def shown(value: float | None, unit: str, digits: int) -> str:
        return "—" if value is None else f"{value:.{digits}f}{unit}"

    for flavor in dict.fromkeys(r["flavor"] for r in data["rows"]):
        entry = first.get(flavor, {})
        lines.append(
            f"| `{flavor}` | {shown(_value(data, flavor, GATEWAY, 1, 'p50_ms'), ' ms', 2)} | "
            f"{shown(_value(data, flavor, MLFLOW, 1, 'p50_ms'), ' ms', 2)} | "
            f"{shown(_value(data, flavor, GATEWAY, 32, 'req_s'), '', 0)} | "
            f"{shown(_value(data, flavor, MLFLOW, 32, 'req_s'), '', 0)} | "
            f"{shown(found.get(flavor), '×', 2)} | {shown(entry.get('seconds'), ' s', 1)} | "
            f"{shown(entry.get('slowest_other_ms'), ' ms', 0)} |"
        )
    if found:
        lines += ["", f"Median c32 ratio over the flavors: **{statistics.median(found.values()):.2f}×**."]
    lines.append("")
    for name, value, ok in targets(data):
        mark = "" if ok is None else (" ✅" if ok else " ❌")
        lines.append(f"- {name}: **{value}**{mark}")
    for note in data.get("notes", []):
        lines.append(f"- {note}")
    return lines
