"""Fetch a model version's artifacts into a local directory, once per host and bytes.

Artifacts come from wherever MLflow keeps them (local files, the MLflow artifact
proxy, S3); MLflow's own download code knows each of those, so it does the fetching.
A download lands in a temporary directory and is renamed into place only when it is
complete, so a crash never leaves a half-written version that looks whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import mlflow.artifacts
from mlflow.models import Model

from registry_sync.errors import (
    ArtifactDigestMismatch,
    ArtifactFetchFailed,
    ArtifactLocationRefused,
    RegistryError,
    described,
)
from registry_sync.hashing import directory_bytes, directory_digest
from registry_sync.identity import VersionId
from registry_sync.registry import RegistryReader

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionMetadata:
    """What a version's MLmodel says about it, read without downloading the model."""

    model: Model
    serving_example: Any | None  # a ready-to-send scoring request body, when logged


class ArtifactStore:
    """This host's copies of version artifacts, content-addressed: ``blobs/<sha256>``.

    A copy is found only through a digest pinned for the version, so one directory can be
    shared by any number of gateways, state databases and registries: the same bytes are
    stored once, and no version is ever given another one's bytes by its name or number.
    """

    def __init__(
        self,
        reader: RegistryReader,
        root: Path,
        *,
        max_bytes: int | None = None,
        allowed_uris: Sequence[str] = (),
    ) -> None:
        self._reader = reader
        self.root = root
        self.max_bytes = max_bytes
        self.allowed_uris = tuple(allowed_uris)  # prefixes; none: every location is allowed
        self._blobs = root / "blobs"
        self.in_use: Callable[[], set[str]] = set  # digests loaded models use (set by the gateway)
        self._evicting = threading.Lock()  # one eviction pass at a time in this process
        self.downloaded_bytes = 0  # what this process fetched from artifact stores (a metric)

    def blob_path(self, digest: str) -> Path:
        """Where the bytes with this manifest digest live on this host (if they do)."""
        return self._blobs / digest

    def metadata(self, version: VersionId, *, digest: str | None = None) -> VersionMetadata:
        """Read MLmodel and the serving example: from the pinned copy when this host has it,
        else by fetching only those two files (kept per version identity and registry)."""
        base = self.blob_path(digest) if digest else None
        if base is None or not base.is_dir():
            base = self._fetch_metadata(version)
        try:
            model = Model.load(str(base / "MLmodel"))
            example_file = (model.saved_input_example_info or {}).get("serving_input_path")
            example = None
            if example_file and (base / example_file).is_file():
                example = json.loads((base / example_file).read_text())
        except Exception as exc:
            log.warning("%s: unreadable MLmodel in %s: %s: %s", version, base, type(exc).__name__, exc)
            raise ArtifactFetchFailed(version.name, version.version, f"unreadable MLmodel: {described(exc)}") from exc
        return VersionMetadata(model, example)

    def _fetch_metadata(self, version: VersionId) -> Path:
        # Keyed by registry and identity: another registry's (or a deleted) version of the
        # same name and number never lends its MLmodel.
        key = hashlib.sha256(f"{self._reader.registry_uri}\0{version.uid}".encode()).hexdigest()[:32]
        final = self.root / "metadata" / key
        if final.is_dir():
            return final
        uri = self._located(version).rstrip("/")
        with self._staging(version, final.parent) as staging:
            self._download(f"{uri}/MLmodel", staging)
            info = Model.load(str(staging / "MLmodel")).saved_input_example_info or {}
            if example_file := info.get("serving_input_path"):
                self._download(f"{uri}/{example_file}", staging)
            _rename_into_place(staging, final)
        return final

    def fetch_file(self, version: VersionId, path: str, destination: Path) -> Path | None:
        """One file of the version's artifacts (``drift/reference.parquet``...) into
        ``destination``, None when the version has no such file; the same location policy as
        a model's files (GATEWAY_ALLOWED_ARTIFACT_URIS). Not verified against the pin: it is
        data about the version, never loaded as code."""
        uri = self._located(version).rstrip("/")
        folder, _, name = path.rpartition("/")
        listed = mlflow.artifacts.list_artifacts(
            artifact_uri=f"{uri}/{folder}" if folder else uri, tracking_uri=self._reader.tracking_uri
        )
        if not any(posixpath.basename(entry.path) == name and not entry.is_dir for entry in listed):
            return None
        destination.mkdir(parents=True, exist_ok=True)
        return self._download(f"{uri}/{path}", destination)

    def source_digest(self, version: VersionId) -> str:
        """Digest of the version's artifacts as the store holds them now (fresh download)."""
        uri = self._located(version)
        with self._staging(version, self.root) as staging:
            return directory_digest(self._download(uri, staging))

    def forget(self, digest: str) -> None:
        """Drop this host's copy of these bytes (say, refused for a version) unless a loaded
        model uses them."""
        if digest and digest not in self.in_use():
            shutil.rmtree(self.blob_path(digest), ignore_errors=True)

    def fetch_verified(self, version: VersionId, *, expected: str | None = None) -> tuple[Path, str]:
        """The version's directory and the sha256 of what is in it.

        With a pin (``expected``) a copy of those bytes on this disk is used, after hashing
        it again; without one the bytes always come from the artifact store, so a first pin
        is never taken from a local copy that nothing vouches for. A download is hashed in
        its staging directory and moved into ``blobs/<digest>`` only if it matches the pin;
        otherwise ArtifactDigestMismatch carries the digest it had, and nothing is kept.
        """
        if expected is not None:
            blob = self.blob_path(expected)
            if blob.is_dir():
                digest = directory_digest(blob)  # every use re-checks the bytes on this disk
                if digest == expected:
                    os.utime(blob)  # recently used: the last blob evicted
                    return blob, digest
                log.warning("copy of %s on this host changed; fetching again", version)
                shutil.rmtree(blob, ignore_errors=True)
        uri = self._located(version)
        with self._staging(version, self._blobs) as staging:
            downloaded = self._download(uri, staging)
            _refuse_links(version, downloaded)
            if not (downloaded / "MLmodel").is_file():
                log.warning("%s: no MLmodel file at %s", version, uri)
                raise ArtifactFetchFailed(version.name, version.version, "no MLmodel file among its artifacts")
            self.downloaded_bytes += directory_bytes(downloaded)
            digest = directory_digest(downloaded)
            if expected is not None and digest != expected:
                raise ArtifactDigestMismatch(version.name, version.version, digest=digest, expected=expected)
            _rename_into_place(downloaded, self.blob_path(digest))
        log.info("fetched %s from %s (sha256 %s)", version, uri, digest)
        self._evict(keep=digest)
        return self.blob_path(digest), digest

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

    def _located(self, version: VersionId) -> str:
        """Where the version's artifacts are, once that is a place this deployment fetches
        from: ArtifactLocationRefused, before any download, if not."""
        uri = self._reader.download_uri(version.name, version.version)
        if self.allowed_uris and not any(uri_within(uri, prefix) for prefix in self.allowed_uris):
            log.warning("%s: artifacts at %s are outside GATEWAY_ALLOWED_ARTIFACT_URIS; refused", version, uri)
            raise ArtifactLocationRefused(
                version.name,
                version.version,
                policy="GATEWAY_ALLOWED_ARTIFACT_URIS",
                detail="its artifact location is not under GATEWAY_ALLOWED_ARTIFACT_URIS",
            )
        source = local_path(uri)
        if source is not None and source.is_dir():
            _refuse_links(version, source)
        return uri

    def _download(self, uri: str, destination: Path) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(destination), tracking_uri=self._reader.tracking_uri
            )
        )

    @contextmanager
    def _staging(self, version: VersionId, parent: Path) -> Iterator[Path]:
        """A temporary directory beside where the files will live, always removed; whatever
        goes wrong inside becomes ArtifactFetchFailed naming the version (and no local path)."""
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version.version}-", dir=parent))
        try:
            yield staging
        except RegistryError:
            raise
        except Exception as exc:  # the message is the client's; where it failed is the operator's
            log.warning("%s: fetching artifacts failed: %s: %s", version, type(exc).__name__, exc)
            raise ArtifactFetchFailed(version.name, version.version, described(exc)) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _rename_into_place(source: Path, final: Path) -> None:
    try:
        os.rename(source, final)
    except OSError:
        if not final.is_dir():  # another process finished first: keep its copy
            raise


def local_path(uri: str) -> Path | None:
    """The directory a ``file:`` URI (or a bare path) names; None for remote stores."""
    parts = urlsplit(uri)
    if parts.scheme not in ("", "file"):
        return None
    return Path(unquote(parts.path))


def uri_within(uri: str, prefix: str) -> bool:
    """``uri`` lies under ``prefix``: whole path segments only (``s3://models`` is not a prefix
    of ``s3://models-evil``), after resolving ``..`` (and, for local files, symbolic links)."""
    path, root = local_path(uri), local_path(prefix)
    if path is not None and root is not None:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    if path is not None or root is not None:
        return False  # a local location is never under a remote prefix, nor the reverse
    uri_parts, prefix_parts = urlsplit(uri), urlsplit(prefix)
    if (uri_parts.scheme.lower(), uri_parts.netloc.lower()) != (
        prefix_parts.scheme.lower(),
        prefix_parts.netloc.lower(),
    ):
        return False
    uri_path = posixpath.normpath("/" + uri_parts.path.lstrip("/"))
    prefix_path = posixpath.normpath("/" + prefix_parts.path.lstrip("/"))
    return prefix_path == "/" or uri_path == prefix_path or uri_path.startswith(prefix_path.rstrip("/") + "/")


def _refuse_links(version: VersionId, directory: Path) -> None:
    """ArtifactLocationRefused if anything under ``directory`` is a symbolic link: a download
    never follows one out of the version's own files (or leaves one in the cache)."""
    for folder, dirs, files in os.walk(directory, followlinks=False):
        for entry in (*dirs, *files):
            if os.path.islink(os.path.join(folder, entry)):
                log.warning("%s: %s is a symbolic link; refused", version, os.path.join(folder, entry))
                raise ArtifactLocationRefused(
                    version.name,
                    version.version,
                    policy="symbolic links",
                    detail="its artifacts contain a symbolic link, which the gateway never follows",
                )
