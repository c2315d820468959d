"""Errors raised while reading the MLflow registry and its artifacts.

Foreign exceptions (MLflow, botocore, requests) are wrapped here at the boundary,
so callers never have to know which client failed.
"""

from __future__ import annotations

import re

# A local path, or a file: URI, as a foreign exception's message carries them: '/' not after a
# letter, digit, ':' or '/' (so neither 'http://host/x' nor 'and/or'), up to a space, quote,
# bracket or ':'.
_LOCAL_PATH = re.compile(r"""\bfile:/+[^\s'"`,;:()<>\[\]{}]*|(?<![\w.:/~-])/[^\s'"`,;:()<>\[\]{}]+""")


def without_paths(text: str) -> str:
    """``text`` with every local path (the artifact cache, a temporary directory, a local
    artifact store) replaced by ``<path>``: error answers say what failed, the logs say where."""
    return _LOCAL_PATH.sub("<path>", text)


def described(exc: BaseException) -> str:
    """A foreign exception for an error answer: its type and message, without local paths."""
    return without_paths(f"{type(exc).__name__}: {exc}")


class RegistryError(Exception):
    """Base of everything the control plane raises."""


class RegisteredModelNotFound(RegistryError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Registered model '{name}' not found in the MLflow registry")


class RegistryUnavailable(RegistryError):
    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"MLflow registry unavailable: {detail}")


class ArtifactDigestMismatch(RegistryError):
    def __init__(self, name: str, version: int, *, digest: str, expected: str) -> None:
        self.name = name
        self.version = version
        self.digest = digest
        self.expected = expected
        super().__init__(f"Artifacts of '{name}' version {version} hash to {digest}, pinned {expected}")


class ArtifactFetchFailed(RegistryError):
    def __init__(self, name: str, version: int, detail: str) -> None:
        self.name = name
        self.version = version
        self.detail = detail
        super().__init__(f"Could not fetch artifacts of '{name}' version {version}: {detail}")


class ArtifactLocationRefused(RegistryError):
    """The version's artifacts are somewhere this deployment does not fetch from (outside
    ``GATEWAY_ALLOWED_ARTIFACT_URIS``), or would lead the download out of its directory (a
    symbolic link). Nothing was downloaded. ``detail`` says why without the location itself,
    which the logs and the version's metadata show to operators."""

    def __init__(self, name: str, version: int, *, policy: str, detail: str) -> None:
        self.name = name
        self.version = version
        self.policy = policy
        self.detail = detail
        self.fields = {"policy": policy}
        super().__init__(f"Artifacts of '{name}' version {version} refused: {detail}")
