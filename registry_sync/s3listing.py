"""A cheap look at a version's objects in S3: keys, sizes and ETags, no bytes.

In direct mode (an ``s3://`` artifact root) the gateway holds the same credentials as any
MLflow client (``AWS_*``, ``MLFLOW_S3_ENDPOINT_URL``), so the sync can list a pinned
version's prefix every poll and re-hash it only when the listing changed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any
from urllib.parse import urlparse

from registry_sync.errors import ArtifactFetchFailed


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


class S3Lister:
    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:  # like MLflow: its endpoint variable, else AWS's own
                import boto3  # here: a gateway whose artifacts are not on S3 never loads it

                self._client = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
            return self._client

    def fingerprint(self, name: str, version: int, uri: str) -> str:
        """sha256 over the sorted (key, size, ETag) of every object under the version's prefix."""
        parsed = urlparse(uri)
        prefix = parsed.path.lstrip("/").rstrip("/") + "/"
        entries = []
        try:
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=prefix):
                for item in page.get("Contents", []):
                    entries.append(f"{item['Key'][len(prefix) :]}\t{item['Size']}\t{item['ETag']}")
        except Exception as exc:  # botocore's many errors: unreachable, denied, no such bucket
            raise ArtifactFetchFailed(name, version, f"listing {uri}: {type(exc).__name__}: {exc}") from exc
        return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()
