"""A real S3 endpoint on loopback: moto's standalone server, as a subprocess."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from tests.support.servers import BIN, Process, free_port

REGION = "us-east-1"


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    server: Process | None = field(default=None, compare=False, repr=False)

    @property
    def client_env(self) -> dict[str, str]:
        """What any MLflow client needs to use this endpoint directly (not through a proxy)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
        }

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextmanager
def moto_s3(root: Path, bucket: str = "models") -> Iterator[S3]:
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = Process(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        log=root / "moto.log",
        health_url=f"http://127.0.0.1:{port}/moto-api/",
        name="moto_server",
    )
    server.start(timeout=60)
    try:
        s3 = S3(f"http://127.0.0.1:{port}", bucket, server)  # server: a test stops and starts it (an outage)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
