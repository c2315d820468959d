"""Reading deploy/: where its files are, and the small parsers the deploy tests share."""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NGINX = DEPLOY / "nginx"
HAPROXY = DEPLOY / "haproxy"
ENVOY = DEPLOY / "envoy"
# Variables the containers may get besides GATEWAY_* settings.
FOREIGN_ENV = re.compile(r"^(MLFLOW_\w+|AWS_\w+|HOME)$")


def deploy_module(name: str) -> ModuleType:
    """A script of deploy/ as a module (deploy/ is no package): deploy_module("local_fleet")."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dev_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        pytest.fail(f"{name} is not installed: it is in the dev extra (pip install -e '.[dev]')")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def role(command: list[str]) -> str | None:
    """The --role of a `serve` command line, None for anything else."""
    if not command or command[0] != "serve":
        return None
    return command[command.index("--role") + 1] if "--role" in command else "all"


def option(command: list[str], name: str, default: str | None = None) -> str | None:
    """The value of `--name value` on a command line."""
    return command[command.index(name) + 1] if name in command else default


def env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def assert_known_settings(names: Iterable[str], where: str) -> None:
    fields = {f"GATEWAY_{name.upper()}" for name in GatewaySettings.model_fields}
    for key in names:
        assert key in fields or FOREIGN_ENV.match(key), f"{where}: {key} is not a setting"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


def upstream_servers(conf: str) -> dict[str, list[str]]:
    """nginx upstream blocks: name -> the addresses of their `server` lines."""
    blocks = re.findall(r"upstream\s+(\w+)\s*\{(.*?)\}", conf, flags=re.S)
    return {name: re.findall(r"^\s*server\s+(\S+?)[\s;]", body, flags=re.M) for name, body in blocks}


def haproxy_sections(conf: str) -> dict[str, list[str]]:
    """An HAProxy configuration as `kind name` -> its lines (comments and blank lines dropped)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in conf.splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(" ".join(line.split()[:2]), [])
        else:
            assert current is not None, f"a line outside any section: {raw!r}"
            current.append(" ".join(line.split()))
    return sections


def haproxy_servers(conf: str) -> dict[str, list[list[str]]]:
    """`backend name` -> the words of each of its `server` lines."""
    return {
        name: [line.split() for line in lines if line.startswith("server ")]
        for name, lines in haproxy_sections(conf).items()
        if name.startswith("backend ")
    }


# What a gateway needs after its drain and graceful timeout to unload its models and exit,
# before a SIGKILL (compose's stop_grace_period, Kubernetes' terminationGracePeriodSeconds).
UNLOAD_MARGIN_SECONDS = 5
