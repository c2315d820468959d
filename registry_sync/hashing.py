"""sha256 of a model's artifacts: one digest per file, one digest over the sorted manifest.

The manifest digest is what gets pinned per version. It covers every file's path, size
and content, so renaming, truncating or rewriting any file changes it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileDigest:
    path: str  # relative, with '/' separators
    size: int
    sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(root: Path) -> list[FileDigest]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return [FileDigest(p.relative_to(root).as_posix(), p.stat().st_size, file_sha256(p)) for p in files]


def manifest_digest(entries: list[FileDigest]) -> str:
    digest = hashlib.sha256()
    for entry in sorted(entries, key=lambda e: e.path):
        digest.update(f"{entry.sha256}  {entry.size}  {entry.path}\n".encode())
    return digest.hexdigest()


def directory_bytes(root: Path) -> int:
    """Bytes of every file under ``root``; files removed while it counts count as nothing."""
    total = 0
    for directory, _, files in os.walk(root):
        for file in files:
            try:
                total += os.stat(os.path.join(directory, file)).st_size
            except FileNotFoundError:
                pass
    return total


def directory_digest(root: Path) -> str:
    """The digest that pins a version: over every file under ``root``."""
    return manifest_digest(manifest(root))
