"""Fetch a model version's artifacts into a local directory, once per host.

Artifacts come from wherever MLflow keeps them (local files, the MLflow artifact
proxy, S3); MLflow's own download code knows each of those, so it does the fetching.
A download lands in a temporary directory and is renamed into place only when it is
complete, so a crash never leaves a half-written version that looks whole.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import mlflow.artifacts
from mlflow.models import Model

from registry_sync.errors import ArtifactDigestMismatch, ArtifactFetchFailed, RegistryError
from registry_sync.hashing import directory_bytes, directory_digest
from registry_sync.registry import RegistryReader

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionMetadata:
    """What a version's MLmodel says about it, read without downloading the model."""

    model: Model
    serving_example: Any | None  # a ready-to-send scoring request body, when logged


class ArtifactStore:
    def __init__(self, reader: RegistryReader, root: Path, *, max_bytes: int | None = None) -> None:
        self._reader = reader
        self.root = root
        self.max_bytes = max_bytes
        self._blobs = root / "blobs"
        self.in_use: Callable[[], set[str]] = set  # digests loaded models use (set by the gateway)
        self._evicting = threading.Lock()  # one eviction pass at a time in this process

    def local_path(self, name: str, version: int) -> Path:
        """The version's link into the blob store (exists only while its blob does)."""
        return self.root / "versions" / quote(name, safe="") / str(version)

    def metadata(self, name: str, version: int) -> VersionMetadata:
        """Read MLmodel and the serving example, fetching only those two files if needed."""
        base = self.local_path(name, version)
        if not base.is_dir():
            base = self._fetch_metadata(name, version)
        try:
            model = Model.load(str(base / "MLmodel"))
            example_file = (model.saved_input_example_info or {}).get("serving_input_path")
            example = None
            if example_file and (base / example_file).is_file():
                example = json.loads((base / example_file).read_text())
        except Exception as exc:
            raise ArtifactFetchFailed(name, version, f"unreadable MLmodel: {type(exc).__name__}: {exc}") from exc
        return VersionMetadata(model, example)

    def _fetch_metadata(self, name: str, version: int) -> Path:
        final = self.root / "metadata" / quote(name, safe="") / str(version)
        if final.is_dir():
            return final
        uri = self._reader.download_uri(name, version).rstrip("/")
        with self._staging(name, version, final.parent) as staging:
            self._download(f"{uri}/MLmodel", staging)
            info = Model.load(str(staging / "MLmodel")).saved_input_example_info or {}
            if example_file := info.get("serving_input_path"):
                self._download(f"{uri}/{example_file}", staging)
            _rename_into_place(staging, final)
        return final

    def source_digest(self, name: str, version: int) -> str:
        """Digest of the version's artifacts as the store holds them now (fresh download)."""
        uri = self._reader.download_uri(name, version)
        with self._staging(name, version, self.root) as staging:
            return directory_digest(self._download(uri, staging))

    def forget(self, name: str, version: int) -> None:
        """Drop this host's copy of a version (say, after it failed verification): its link,
        and its blob unless a loaded model uses those bytes."""
        link = self.local_path(name, version)
        blob = link.resolve() if link.is_symlink() else None
        link.unlink(missing_ok=True)
        if blob is not None and blob.parent == self._blobs and blob.name not in self.in_use():
            shutil.rmtree(blob, ignore_errors=True)

    def fetch_verified(self, name: str, version: int, *, expected: str | None = None) -> tuple[Path, str]:
        """The version's directory and the sha256 of what is in it.

        Content-addressed: bytes live once in ``blobs/<digest>`` whatever versions share
        them, and ``versions/<name>/<version>`` links there. A download is hashed in its
        staging directory and renamed into place only if it matches ``expected`` (the pin);
        otherwise ArtifactDigestMismatch carries the digest it had, and nothing is kept.
        """
        link = self.local_path(name, version)
        if link.is_dir():
            blob = link.resolve()  # the real directory: MLflow refuses to load through a link
            digest = directory_digest(blob)  # every use re-checks the bytes on this disk
            if expected is None or digest == expected:
                os.utime(blob)  # recently used: the last blob evicted
                return blob, digest
            log.warning("copy of %s version %s on this host changed; fetching again", name, version)
            self.forget(name, version)
        uri = self._reader.download_uri(name, version)
        with self._staging(name, version, self._blobs) as staging:
            downloaded = self._download(uri, staging)
            if not (downloaded / "MLmodel").is_file():
                raise ArtifactFetchFailed(name, version, f"no MLmodel file at {uri}")
            digest = directory_digest(downloaded)
            if expected is not None and digest != expected:
                raise ArtifactDigestMismatch(name, version, digest=digest, expected=expected)
            _rename_into_place(downloaded, self._blobs / digest)
        _link(link, self._blobs / digest)
        log.info("fetched %s version %s from %s (sha256 %s)", name, version, uri, digest)
        self._evict(keep=digest)
        return self._blobs / digest, digest

    def _evict(self, *, keep: str) -> None:
        """Least recently used blobs go until the cache fits, but never one a loaded model uses.

        Other threads fetch and forget blobs meanwhile: one that vanishes is simply not counted.
        """
        if self.max_bytes is None:
            return
        with self._evicting:
            blobs = []
            for path in self._blobs.iterdir():
                if path.name.startswith("."):
                    continue  # a download still in its staging directory
                try:
                    blobs.append((path.stat().st_mtime, path, directory_bytes(path)))
                except FileNotFoundError:
                    continue
            total = sum(size for _, _, size in blobs)
            in_use = self.in_use() | {keep}
            for _, blob, size in sorted(blobs, key=lambda item: item[0]):
                if total <= self.max_bytes:
                    break
                if blob.name in in_use:
                    continue
                shutil.rmtree(blob, ignore_errors=True)
                total -= size
                log.info("artifact cache: evicted blob %s (%.1f MiB)", blob.name[:12], size / 2**20)

    def _download(self, uri: str, destination: Path) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(destination), tracking_uri=self._reader.tracking_uri
            )
        )

    @contextmanager
    def _staging(self, name: str, version: int, parent: Path) -> Iterator[Path]:
        """A temporary directory beside where the files will live, always removed; whatever
        goes wrong inside becomes ArtifactFetchFailed naming the version."""
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=parent))
        try:
            yield staging
        except RegistryError:
            raise
        except Exception as exc:
            raise ArtifactFetchFailed(name, version, f"{type(exc).__name__}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (relative, so the cache can move)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{uuid.uuid4().hex}.tmp")  # unique per call: threads race here
    temporary.symlink_to(os.path.relpath(target, link.parent))
    os.replace(temporary, link)


def _rename_into_place(source: Path, final: Path) -> None:
    try:
        os.rename(source, final)
    except OSError:
        if not final.is_dir():  # another process finished first: keep its copy
            raise
