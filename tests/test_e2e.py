"""`registry-gateway serve` under real uvicorn, against a real `mlflow server`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo import IRIS, log_iris_version, using_registry
from tests.conftest import Registry, iris_split
from tests.support.servers import LOOPBACK, SERVED_SKLEARN_FORMAT, Process, gateway_server, mlflow_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])


def metric(base: str, name: str, **labels: str) -> float:
    text = LOOPBACK.get(f"{base}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
def served(server_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One gateway for the tests that only read the session registry (a start costs seconds of
    CPU importing MLflow): none of them loads a version another one checks is cold."""
    workdir = tmp_path_factory.mktemp("served")
    process, base = gateway_server(tracking_uri=server_registry.tracking_uri, workdir=workdir)
    process.start()
    try:
        yield base
    finally:
        process.stop()


def test_concurrent_cold_requests_over_real_http_load_once(served: str) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served, timeout=60) as client:
            return await asyncio.gather(
                *(client.post(f"/models/{IRIS}/versions/challenger/predict", json=ROW) for _ in range(40))
            )

    # champion (version 1) is a warm alias by default: loaded and warmed before ready
    assert metric(served, "gateway_model_loads_total", model=IRIS, version="1", outcome="success") == 1
    # challenger (version 2) is cold: no other test on this gateway asks for it
    assert metric(served, "gateway_model_loads_total", model=IRIS, version="2", outcome="success") == 0
    misses = metric(served, "gateway_cache_misses_total", model=IRIS)
    assert misses >= 1  # the warm-up
    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 40
    assert {r.headers["x-model-version"] for r in responses} == {"2"}
    assert metric(served, "gateway_model_loads_total", model=IRIS, version="2", outcome="success") == 1
    assert metric(served, "gateway_cache_misses_total", model=IRIS) == misses + 1  # one for the whole burst


def test_garbage_over_real_http_then_good_requests(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        path = f"/models/{IRIS}/versions/1/predict"
        assert (
            client.post(path, content=b"\x00\xff" * 1000, headers={"content-type": "application/json"}).status_code
            == 400
        )
        assert client.post(path, content=b"{", headers={"content-type": "application/json"}).status_code == 400
        assert client.post(path, content=b"x", headers={"content-type": "image/png"}).status_code == 415
        assert client.post(path, content=b"a\n\x00", headers={"content-type": "text/csv"}).status_code == 400
        response = client.post(path, json=ROW)
        assert response.status_code == 200 and response.json() == {"predictions": [0]}
        assert client.get("/docs").status_code == 200


def test_loaded_models_keep_serving_when_mlflow_goes_away(tmp_path: Path) -> None:
    mlflow = mlflow_server(tmp_path / "mlflow")
    mlflow.start()
    tracking_uri = mlflow.health_url.removesuffix("/health")
    gateway: Process | None = None
    try:
        with using_registry(tracking_uri) as client:
            version = log_iris_version(IRIS, c=1.0, serialization_format=SERVED_SKLEARN_FORMAT)
            client.set_registered_model_alias(IRIS, "champion", str(version))
        gateway, base = gateway_server(
            tracking_uri=tracking_uri,
            workdir=tmp_path / "gateway",
            env={"GATEWAY_REGISTRY_TIMEOUT_SECONDS": "3"},
        )
        gateway.start()
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.post(f"/models/{IRIS}/predict", json=ROW).status_code == 200
            assert http.get("/models").status_code == 200
            mlflow.stop()
            for path in (
                f"/models/{IRIS}/predict",
                f"/models/{IRIS}/versions/champion/predict",
                f"/models/{IRIS}/versions/{version}/predict",
                f"/models/{IRIS}/versions/latest/predict",
            ):
                response = http.post(path, json=ROW)
                assert response.status_code == 200, (path, response.text)
                assert response.headers["x-model-version"] == str(version)
            assert http.get("/models").json()["models"][0]["name"] == IRIS  # the last good answer
            never_seen = http.post("/models/other/predict", json=ROW)
            assert never_seen.status_code == 503
            assert never_seen.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert http.get("/health/ready").status_code == 200
        # Restarted while MLflow is still down: the state database says what served.
        gateway.stop()
        gateway.start()
        with httpx.Client(base_url=base, timeout=30) as http:
            response = http.post(f"/models/{IRIS}/predict", json=ROW)
            assert response.status_code == 200, response.text
            assert (response.headers["x-model-version"], response.headers["x-model-alias"]) == (
                str(version),
                "champion",
            )
    finally:
        if gateway is not None:
            gateway.stop()
        mlflow.stop()


def test_several_workers_serve(iris_registry: Registry, tmp_path: Path) -> None:
    """`serve --workers 2`: both processes answer. New connections spread over them until each
    reports (GET /fleet, a heartbeat every 0.5 s) that a request used the version it holds;
    nothing is warmed at start, so only an answered request loads it."""
    env = {"GATEWAY_WARM_ALIASES": "", "GATEWAY_HEARTBEAT_SECONDS": "0.5"}
    process, base = gateway_server(tracking_uri=iris_registry.tracking_uri, workdir=tmp_path, env=env, workers=2)
    process.start()
    sent = 0
    try:
        with httpx.Client(base_url=base, timeout=60) as client:

            def both_answered() -> bool:
                nonlocal sent
                for _ in range(4):  # new connections: the kernel hands each to either worker
                    response = client.post(f"/models/{IRIS}/predict", json=ROW, headers={"connection": "close"})
                    assert response.status_code == 200, response.text
                    sent += 1
                replicas = client.get("/fleet").json()["replicas"]
                processes = [p for r in replicas for p in r["processes"] if p["state"] != "stopped"]
                assert len(processes) <= 2, processes
                served = [p for p in processes if any(h["name"] == IRIS and h["last_served"] for h in p["holdings"])]
                return len(served) == 2

            wait_until(both_answered, timeout=90, interval=0.2, what="both workers to answer a request")
        # GATEWAY_BLAS_THREADS' default, set by serve before it started them (gateway/runtimes/blas.py)
        limited = [env for env in process.environments() if env.get("OPENBLAS_NUM_THREADS") == "1"]
        assert len(limited) >= 2, [env.get("OPENBLAS_NUM_THREADS") for env in process.environments()]
    finally:
        process.stop()
    # the access log is on by default: a line per request, whichever worker answered
    assert (tmp_path / "gateway.log").read_text().count(f'"POST /models/{IRIS}/predict" 200 ') == sent


def test_the_access_log_can_be_turned_off(iris_registry: Registry, tmp_path: Path) -> None:
    process, base = gateway_server(
        tracking_uri=iris_registry.tracking_uri, workdir=tmp_path, env={"GATEWAY_ACCESS_LOG": "false"}
    )
    process.start()
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.post(f"/models/{IRIS}/predict", json=ROW).status_code == 200
            assert client.post(f"/models/{IRIS}/predict", json={"garbage": 1}).status_code == 400
            assert metric(base, "gateway_requests_total", model=IRIS, version="1", status="200") == 1
    finally:
        process.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert "Application startup complete" in log  # the rest of the log is still there
    assert f"/models/{IRIS}/predict" not in log


def test_a_trusted_proxys_forwarded_client_is_logged_and_no_one_elses(iris_registry: Registry, tmp_path: Path) -> None:
    """Issue 49: behind HAProxy the access log named the client `127.0.0.1:0`. A proxy at an
    address of GATEWAY_FORWARDED_ALLOW_IPS (here 127.0.0.2) names the client; a caller from
    any other address (127.0.0.1) is logged as itself whatever X-Forwarded-For it sends."""
    process, base = gateway_server(
        tracking_uri=iris_registry.tracking_uri, workdir=tmp_path, env={"GATEWAY_FORWARDED_ALLOW_IPS": "127.0.0.2"}
    )
    process.start()
    try:
        proxy = httpx.Client(base_url=base, timeout=60, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with proxy, httpx.Client(base_url=base, timeout=60) as stranger:
            forwarded = {"X-Forwarded-For": "203.0.113.7"}
            assert proxy.post(f"/models/{IRIS}/predict", json=ROW, headers=forwarded).status_code == 200
            spoofed = {"X-Forwarded-For": "198.51.100.9"}
            assert stranger.post(f"/models/{IRIS}/predict", json=ROW, headers=spoofed).status_code == 200
            log = tmp_path / "gateway.log"
            wait_until(lambda: log.read_text().count(f"/models/{IRIS}/predict") == 2, timeout=10, what="two lines")
    finally:
        process.stop()
    lines = [line for line in log.read_text().splitlines() if f"/models/{IRIS}/predict" in line]
    assert any(f'203.0.113.7 "POST /models/{IRIS}/predict" 200' in line for line in lines), lines
    assert any(re.search(rf'127\.0\.0\.1:[1-9]\d* "POST /models/{IRIS}/predict" 200', line) for line in lines), lines
    assert not any("198.51.100.9" in line for line in lines), lines
