"""Where environment builds look for packages: uv's own index settings when the host has any,
else pip's, so a host whose pip is set up for a private mirror or a folder of wheels builds
from it too (issue 49: a build under GATEWAY_ENV_ISOLATE=always asked PyPI for a wheel that
only the host's PIP_FIND_LINKS folder held).

pip's settings are its environment variables (``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``,
``PIP_FIND_LINKS``, ``PIP_NO_INDEX``) over its configuration files (``pip.conf``: the global,
the user's and ``PIP_CONFIG_FILE``, their ``[global]`` then ``[install]`` sections), read as pip
reads them; they become uv's command-line options, with pip's rule for several indexes (the
best version any has: ``--index-strategy unsafe-best-match``). What a build asked is said in
its failure.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# uv's own settings of where to look: any of them set, and pip's are not read.
UV_INDEX_VARIABLES = (
    "UV_INDEX",
    "UV_DEFAULT_INDEX",
    "UV_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_INDEX_STRATEGY",
    "UV_CONFIG_FILE",
)
_UV_CHOOSING = ("UV_INDEX", "UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_CONFIG_FILE")
_PIP_KEYS = {  # pip's setting -> its environment variable
    "index-url": "PIP_INDEX_URL",
    "extra-index-url": "PIP_EXTRA_INDEX_URL",
    "find-links": "PIP_FIND_LINKS",
    "no-index": "PIP_NO_INDEX",
}
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class PackageIndex:
    """Where a build looks: ``options`` for ``uv pip`` (empty where uv's own settings rule),
    ``identity`` for the environment keys, ``asked`` in words for a failure."""

    options: tuple[str, ...] = ()
    identity: dict[str, object] = field(default_factory=dict)
    asked: str = ""


def package_index(environ: Mapping[str, str] | None = None, *, home: Path | None = None) -> PackageIndex:
    env = os.environ if environ is None else environ
    identity: dict[str, object] = {name: env.get(name, "") for name in UV_INDEX_VARIABLES}
    uv_set = [name for name in _UV_CHOOSING if env.get(name)]
    uv_files = [str(p) for p in _uv_config_files(env, home) if p.is_file()]
    if uv_set or uv_files:
        said = [f"{name}={env[name]}" for name in uv_set] + uv_files
        return PackageIndex((), identity, "uv's own index settings: " + ", ".join(said))
    pip = _pip_settings(env, home)
    if not pip:
        return PackageIndex((), identity, "PyPI (uv's default: no uv or pip index setting on this host)")
    options: list[str] = []
    asked: list[str] = []
    if "index-url" in pip:
        value, source = pip["index-url"]
        options += ["--index-url", value]
        asked.append(f"index {value} ({source})")
    if "extra-index-url" in pip:
        value, source = pip["extra-index-url"]
        for url in value.split():
            options += ["--extra-index-url", url]
        asked.append(f"extra index {' '.join(value.split())} ({source})")
    if "find-links" in pip:
        value, source = pip["find-links"]
        for place in value.split():
            options += ["--find-links", place]
        asked.append(f"find-links {' '.join(value.split())} ({source})")
    no_index = "no-index" in pip and pip["no-index"][0].strip().lower() in _TRUE
    if no_index:
        options.append("--no-index")
        asked.append(f"no index ({pip['no-index'][1]})")
    elif "index-url" not in pip:
        asked.insert(0, "PyPI (uv's default index)")
    if not env.get("UV_INDEX_STRATEGY"):
        # pip takes the best version any index has; uv, by default, the first index that has the
        # name (an extra index before the main one): pip's rule, as pip's settings are
        options += ["--index-strategy", "unsafe-best-match"]
    identity["pip"] = {key: value for key, (value, _) in sorted(pip.items())}
    return PackageIndex(tuple(options), identity, "pip's settings: " + ", ".join(asked))


def _uv_config_files(env: Mapping[str, str], home: Path | None) -> list[Path]:
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else (home or Path.home()) / ".config"
    return [config_home / "uv" / "uv.toml", Path("/etc/uv/uv.toml")]


def _pip_config_files(env: Mapping[str, str], home: Path | None) -> list[Path]:
    """pip's configuration files, the later overriding the earlier (pip's order)."""
    named = env.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []  # pip reads none then
    base = home or Path.home()
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else base / ".config"
    dirs = [Path(d) for d in env.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d]
    files = [*(d / "pip" / "pip.conf" for d in reversed(dirs)), Path("/etc/pip.conf")]
    files += [base / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    return files + ([Path(named)] if named else [])


def _pip_settings(env: Mapping[str, str], home: Path | None) -> dict[str, tuple[str, str]]:
    """pip's index settings: setting -> (value, where it came from)."""
    found: dict[str, tuple[str, str]] = {}
    for path in _pip_config_files(env, home):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        for section in ("global", "install"):
            if not parser.has_section(section):
                continue
            for key, value in parser.items(section):
                key = key.replace("_", "-")
                if key in _PIP_KEYS and value.strip():
                    found[key] = (value.strip(), str(path))
    for key, variable in _PIP_KEYS.items():
        if env.get(variable, "").strip():
            found[key] = (env[variable].strip(), variable)
    return found
