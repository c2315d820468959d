"""Gateway configuration, read from the environment (prefix ``GATEWAY_``).

MLflow's own variables (``MLFLOW_TRACKING_URI``, ``MLFLOW_REGISTRY_URI``,
``MLFLOW_S3_ENDPOINT_URL``, ``AWS_*``) keep their own names and are read by MLflow.

Each concern keeps its settings in a module of its own (``serving``, ``sync``, ``access``,
``sandbox``, ``observability``...), a :class:`SettingsSection` with the docstring under each
field; :class:`GatewaySettings` composes them, so every setting is still
``settings.<name>``. docs/settings.md lists them in the order of the sections below.

Every value is checked here, when the settings load: a bad one is a :class:`SettingsError`
whose message has one line per bad variable, naming it, never a traceback from wherever the
value was first used. What is valid but surely a mistake (a misspelled variable, a warm
alias no request can name) is a warning (:func:`doubts`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import InvalidSelector
from gateway.settings.access import AccessSettings
from gateway.settings.devices import DeviceSettings
from gateway.settings.drift import DriftSettings
from gateway.settings.environments import EnvironmentSettings
from gateway.settings.fleet import FleetSettings
from gateway.settings.grpc import GrpcSettings
from gateway.settings.http_server import HttpServerSettings
from gateway.settings.jobs import JobsSettings
from gateway.settings.loading import LoadingSettings
from gateway.settings.observability import ObservabilitySettings
from gateway.settings.oidc import OidcSettings
from gateway.settings.performance import PerformanceSettings
from gateway.settings.quality import QualitySettings
from gateway.settings.sandbox import SandboxSettings
from gateway.settings.section import PREFIX, LogLevel, SettingsSection, default_target
from gateway.settings.serving import ServingSettings
from gateway.settings.sync import SyncSettings
from gateway.settings.traffic import TrafficSettings
from gateway.settings.usage import UsageSettings
from gateway.settings.writeback import WritebackSettings
from gateway.wire.selectors import parse_selector

__all__ = [
    "PREFIX",
    "SECTIONS",
    "GatewaySettings",
    "LogLevel",
    "SettingsError",
    "SettingsSection",
    "default_target",
    "doubts",
    "env_name",
    "load_settings",
]

# The sections in the order docs/settings.md lists them.
SECTIONS: tuple[type[SettingsSection], ...] = (
    ServingSettings,
    HttpServerSettings,
    SyncSettings,
    AccessSettings,
    OidcSettings,
    UsageSettings,
    LoadingSettings,
    FleetSettings,
    PerformanceSettings,
    TrafficSettings,
    GrpcSettings,
    EnvironmentSettings,
    SandboxSettings,
    DeviceSettings,
    ObservabilitySettings,
    QualitySettings,
    WritebackSettings,
    DriftSettings,
    JobsSettings,
)


class SettingsError(Exception):
    """Settings that cannot be used; the message has one line per variable, naming it."""


# pydantic collects a class's fields from its bases last to first: the sections are listed
# in reverse so that the fields keep SECTIONS' order (tests/test_settings_reference.py checks it).
class GatewaySettings(
    JobsSettings,
    DriftSettings,
    QualitySettings,
    WritebackSettings,
    ObservabilitySettings,
    DeviceSettings,
    SandboxSettings,
    EnvironmentSettings,
    GrpcSettings,
    TrafficSettings,
    PerformanceSettings,
    FleetSettings,
    LoadingSettings,
    UsageSettings,
    OidcSettings,
    AccessSettings,
    SyncSettings,
    HttpServerSettings,
    ServingSettings,
    BaseSettings,
):
    """Every knob of one gateway process."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", use_attribute_docstrings=True)


def env_name(field: str) -> str:
    return f"{PREFIX}{field.upper()}"


def load_settings() -> GatewaySettings:
    """The settings in the environment, or a :class:`SettingsError` naming each bad variable."""
    try:
        return GatewaySettings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{env_name(field)}: {message}")
        raise SettingsError("\n".join(dict.fromkeys(lines))) from None


def doubts(settings: GatewaySettings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Settings that load but are surely mistakes, one line each, naming the variable:
    ``GATEWAY_*`` variables that are no setting (a misspelling is ignored, silently, by the
    settings themselves) and warm aliases that no selector can name."""
    environ = os.environ if environ is None else environ
    known = {env_name(field) for field in GatewaySettings.model_fields}
    found = []
    for variable in sorted(environ):
        name = variable.upper()  # the settings read the environment case-insensitively
        if name.startswith(PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            found.append(f"{variable} is not a setting and is ignored{hint}")
    for alias in settings.warm_aliases:
        try:
            kind = parse_selector(alias).kind
        except InvalidSelector:
            found.append(f"GATEWAY_WARM_ALIASES: '{alias}' is not an alias name (letters, digits, '_' or '-')")
            continue
        if kind == "version":
            found.append(
                f"GATEWAY_WARM_ALIASES: '{alias}' is all digits, which selects a version number, never an alias"
            )
        elif kind == "latest":
            found.append("GATEWAY_WARM_ALIASES: 'latest' selects the highest READY version, never an alias")
    return found
