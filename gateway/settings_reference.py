"""The settings reference (docs/settings.md), generated from :class:`GatewaySettings`: every
``GATEWAY_*`` variable with its default and the docstring under its field, so the reference
cannot drift from the code (``make docs`` writes it; tests/test_settings_reference.py fails
when the file is stale)."""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic.fields import FieldInfo

from gateway.settings import PREFIX, GatewaySettings

# Defaults computed from the machine (the home or working directory, XDG variables): shown as written.
_DEFAULT_TEXT = {
    "artifact_cache_dir": "`$XDG_CACHE_HOME/registry-gateway` (`~/.cache/registry-gateway`)",
    "env_dir": "`$XDG_CACHE_HOME/registry-gateway/envs` (`~/.cache/registry-gateway/envs`)",
    "database_url": "`sqlite:///$PWD/gateway-state.db` (the working directory's)",
}
HEADER = """# Settings reference

Generated from `gateway/settings/` (a module per concern) by `make docs` (`python -m gateway.settings_reference`):
do not edit by hand. Every setting is an environment variable (any case); an invalid value
stops every command at once with one line per bad variable. MLflow's own variables keep their
names (`MLFLOW_TRACKING_URI`, `MLFLOW_REGISTRY_URI`, `MLFLOW_S3_ENDPOINT_URL`, `AWS_*`).

| Variable | Default | What it does |
|---|---|---|
"""


def _default(name: str, field: FieldInfo) -> str:
    if name in _DEFAULT_TEXT:
        return _DEFAULT_TEXT[name]
    value: Any = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "unset"
    if isinstance(value, list):
        return f"`{','.join(map(str, value))}`" if value else "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _description(field: FieldInfo) -> str:
    text = inspect.cleandoc(field.description or "")
    text = re.sub(r"``([^`]+)``", r"`\1`", text)  # reST literals as Markdown code
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    rows = [
        f"| `{PREFIX}{name.upper()}` | {_default(name, field)} | {_description(field)} |"
        for name, field in GatewaySettings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
