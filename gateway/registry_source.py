"""Which MLflow registry this process follows, said where an operator looks.

Without ``MLFLOW_TRACKING_URI`` (or ``MLFLOW_REGISTRY_URI``) MLflow quietly uses its default,
a sqlite file ``mlflow.db`` in the working directory, which it creates: a gateway started so
serves an empty registry and looks healthy. So the startup log always names the registry,
warns when it is MLflow's default, and ``/health/ready`` and ``/models`` say so when there are
no models to serve.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from registry_sync.registry import RegistryReader

_MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@dataclass(frozen=True, slots=True)
class RegistrySource:
    uri: str  # as logged and shown: any password hidden
    defaulted: bool  # nothing chose it: MLflow's own default

    @classmethod
    def of(cls, reader: RegistryReader, *, chosen: bool) -> RegistrySource:
        """``chosen``: the caller gave the reader its URI (else it read the environment)."""
        defaulted = not chosen and not any(os.environ.get(variable) for variable in _MLFLOW_VARIABLES)
        return cls(uri=hide_password(reader.registry_uri), defaulted=defaulted)

    def default_warning(self) -> str | None:
        if not self.defaulted:
            return None
        return (
            f"MLFLOW_TRACKING_URI is not set: following MLflow's default registry, {self.uri}, a file in the "
            "working directory; set MLFLOW_TRACKING_URI (or MLFLOW_REGISTRY_URI) to the registry to serve"
        )

    def empty_note(self, *, ever_read: bool) -> str:
        """What to tell an operator when no registered model is known."""
        if not ever_read:
            return f"No registered models yet: the registry {self.uri} has not been read successfully (see the log)"
        note = f"The registry {self.uri} has no registered models"
        if self.defaulted:
            note += " (MLFLOW_TRACKING_URI is not set, so this is MLflow's default: is that the registry you meant?)"
        return note


def hide_password(uri: str) -> str:
    """``scheme://user:***@host/...``: tracking URIs may carry credentials; logs must not."""
    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return uri
