"""What every group of settings shares: the base class that turns the docstring under each
field into its description (docs/settings.md), and the helpers their validators use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from gateway.wire.selectors import split_model_reference

PREFIX = "GATEWAY_"
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


class SettingsSection(BaseModel):
    """One concern's settings; :class:`gateway.settings.GatewaySettings` composes them all and
    reads them from the environment."""

    model_config = ConfigDict(use_attribute_docstrings=True)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "registry-gateway"


def default_target(value: str) -> tuple[str, str | None]:
    """GATEWAY_DEFAULT_MODEL as (model name, version selector or None for its default route):
    ``name@alias`` and ``name/version`` split at the last ``@`` or ``/`` (MLflow allows neither
    in an alias; a version is digits or ``latest``)."""
    return split_model_reference(value)


def comma_list(value: object) -> object:
    """A comma-separated variable as a list of its non-empty items (other values unchanged)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value
