"""Artifacts on S3, both ways MLflow keeps them, against a real S3 endpoint (moto_server)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.demo import IRIS, log_iris_version, using_registry
from tests.conftest import iris_split
from tests.support.s3 import S3, moto_s3
from tests.support.servers import SERVED_SKLEARN_FORMAT, gateway_server, mlflow_server

pytestmark = pytest.mark.e2e

ROW = iris_split([[6.7, 3.0, 5.2, 2.3]])


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


def _serve_and_check(tracking_uri: str, workdir: Path, env: dict[str, str]) -> None:
    gateway, base = gateway_server(tracking_uri=tracking_uri, workdir=workdir, env=env)
    gateway.start()
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            response = http.post(f"/models/{IRIS}/predict", json=ROW)
            assert response.status_code == 200, response.text
            assert response.headers["x-model-version"] == "1"
            detail = http.get(f"/models/{IRIS}/versions/1").json()
            assert detail["sha256"] and detail["loaded"]["flavor"] == "sklearn"
    finally:
        gateway.stop()


def test_proxied_s3_needs_no_credentials_in_the_gateway(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = mlflow_server(
        tmp_path / "mlflow",
        extra_env=s3.client_env,  # only the tracking server talks to S3
        artifacts=["--artifacts-destination", f"s3://{s3.bucket}/proxied"],
    )
    server.start()
    try:
        tracking_uri = server.health_url.removesuffix("/health")
        for key in s3.client_env:
            monkeypatch.delenv(key, raising=False)
        with using_registry(tracking_uri) as client:
            log_iris_version(IRIS, serialization_format=SERVED_SKLEARN_FORMAT)
            client.set_registered_model_alias(IRIS, "champion", "1")
        stored = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="proxied/")
        assert any(o["Key"].endswith("MLmodel") for o in stored.get("Contents", []))
        no_aws = {key: "" for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL")}
        _serve_and_check(tracking_uri, tmp_path / "gateway", no_aws)
    finally:
        server.stop()


def test_direct_s3_uses_the_aws_variables_like_any_mlflow_client(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = mlflow_server(
        tmp_path / "mlflow",
        artifacts=["--default-artifact-root", f"s3://{s3.bucket}/direct", "--no-serve-artifacts"],
    )
    server.start()
    try:
        tracking_uri = server.health_url.removesuffix("/health")
        for key, value in s3.client_env.items():
            monkeypatch.setenv(key, value)  # the test logs straight to S3, as a trainer would
        with using_registry(tracking_uri) as client:
            log_iris_version(IRIS, serialization_format=SERVED_SKLEARN_FORMAT)
            client.set_registered_model_alias(IRIS, "champion", "1")
        stored = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="direct/")
        assert any(o["Key"].endswith("MLmodel") for o in stored.get("Contents", []))
        assert os.environ["MLFLOW_S3_ENDPOINT_URL"] == s3.endpoint
        _serve_and_check(tracking_uri, tmp_path / "gateway", s3.client_env)
    finally:
        server.stop()
