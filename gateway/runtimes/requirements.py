"""A version's Python environment, as its files say, and whether this process satisfies it.

MLflow logs a model's environment beside it: ``python_env.yaml`` (the Python version, and
``-r requirements.txt``), ``requirements.txt`` (pip requirement lines) and ``conda.yaml`` (the
same, for conda). Nothing here imports what it checks: installed releases are read from the
distributions' metadata.

What "satisfied" means (docs/operations.md: Models with their own environments):

- Python: the major.minor of the model's Python equals this interpreter's.
- Each requirement line is parsed as PEP 508 (``packaging``); a line that does not parse, a
  pip option (``-e``, ``--index-url``...) or a direct reference (``pkg @ url``, a path) is a
  mismatch. A line whose environment marker is false here is skipped.
- The distribution must be installed here, and its release must meet the specifier, compared
  on public versions: a local label (``+cpu``, ``+cu121``) on either side is ignored, since it
  names a build of the same release. Pre-releases installed here count.
- ``match="minor"`` (the default): an exact pin ``==X.Y.Z`` is met by any installed X.Y.*,
  since MLflow pins the exact release of everything it finds, and patch releases keep their
  API; ``match="exact"``: only by X.Y.Z itself. Other operators are evaluated as written.
- MLflow itself (``mlflow``, ``mlflow-skinny``): an exact pin is met by an installed MLflow of
  the same major version, in both modes. The gateway loads every in-process version with its
  own MLflow, which reads models logged by any release of its major version.
- Extras are not checked: ``pkg[extra]==1.0`` asks for ``pkg`` at 1.0.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import Specifier
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

Match = Literal["minor", "exact"]
MLFLOW_DISTRIBUTIONS = frozenset({"mlflow", "mlflow-skinny"})


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a model version asks for."""

    python: str | None  # the Python it was logged with ("3.11.7"), when its files say
    lines: tuple[str, ...]  # its pip requirement lines, comments and blanks removed
    source: str  # the file the lines came from


@dataclass(frozen=True, slots=True)
class Verdict:
    satisfied: bool
    mismatches: tuple[str, ...]  # one line each, e.g. "scikit-learn==1.5.2 (installed: 1.9.1)"

    @property
    def reason(self) -> str:
        if self.satisfied:
            return "this process's environment satisfies every requirement"
        shown = "; ".join(self.mismatches[:5])
        more = len(self.mismatches) - 5
        return shown + (f"; and {more} more" if more > 0 else "")


class RequirementsUnreadable(Exception):
    """The version's environment files exist but cannot be read."""


def read_requirements(model_dir: Path) -> Requirements:
    """The Python and the pip requirements a model directory logged (empty if it logged none)."""
    python = None
    env_file = model_dir / "python_env.yaml"
    conda_file = model_dir / "conda.yaml"
    try:
        if env_file.is_file():
            env = yaml.safe_load(env_file.read_text()) or {}
            python = str(env["python"]) if env.get("python") else None
        conda = yaml.safe_load(conda_file.read_text()) or {} if conda_file.is_file() else {}
    except (OSError, yaml.YAMLError, TypeError, AttributeError) as exc:
        raise RequirementsUnreadable(f"unreadable environment file: {exc}") from exc
    conda_deps = conda.get("dependencies") or [] if isinstance(conda, dict) else []
    if python is None:
        python = next((str(d).split("=", 1)[1].lstrip("=") for d in conda_deps if str(d).startswith("python=")), None)
    requirements_file = model_dir / "requirements.txt"
    if requirements_file.is_file():
        return Requirements(python, _lines(requirements_file.read_text()), "requirements.txt")
    pip = next((d["pip"] for d in conda_deps if isinstance(d, dict) and "pip" in d), None)
    if pip is not None:
        return Requirements(python, _lines("\n".join(str(p) for p in pip)), "conda.yaml")
    return Requirements(python, (), "none")


def _lines(text: str) -> tuple[str, ...]:
    kept = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            kept.append(line)
    return tuple(kept)


def installed_release(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def python_minor(version: str | None) -> str | None:
    if not version:
        return None
    parts = version.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]) else None


def check(
    requirements: Requirements,
    *,
    match: Match = "minor",
    installed: Callable[[str], str | None] = installed_release,
    python: str | None = None,
    environment: dict[str, str] | None = None,
) -> Verdict:
    """Whether this process (its Python, ``installed`` distributions) meets ``requirements``."""
    running = python or "{}.{}".format(*sys.version_info[:2])
    mismatches = []
    wanted = python_minor(requirements.python)
    if requirements.python and wanted is None:
        mismatches.append(f"python {requirements.python} (unreadable version)")
    elif wanted is not None and wanted != python_minor(running):
        mismatches.append(f"python {wanted} (this process runs {python_minor(running)})")
    env: dict[str, Any] = dict(environment or default_environment())
    for line in requirements.lines:
        problem = _unmet(line, match=match, installed=installed, environment=env)
        if problem is not None:
            mismatches.append(problem)
    return Verdict(not mismatches, tuple(mismatches))


def _unmet(
    line: str, *, match: Match, installed: Callable[[str], str | None], environment: dict[str, Any]
) -> str | None:
    if line.startswith("-"):
        return f"{line} (a pip option, not a requirement)"
    try:
        requirement = Requirement(line)
    except InvalidRequirement:
        return f"{line} (not a PEP 508 requirement)"
    if requirement.url:
        return f"{line} (a direct reference)"
    if requirement.marker is not None and not requirement.marker.evaluate(environment):
        return None
    name = canonicalize_name(requirement.name)
    have = installed(name)
    if have is None:
        return f"{line} (not installed)"
    try:
        release = Version(Version(have).public)
    except InvalidVersion:
        return f"{line} (installed: {have}, not a PEP 440 version)"
    for spec in requirement.specifier:
        if not _meets(release, spec, mlflow=name in MLFLOW_DISTRIBUTIONS, match=match):
            return f"{line} (installed: {have})"
    return None


def _meets(release: Version, spec: Specifier, *, mlflow: bool, match: Match) -> bool:
    if spec.operator in ("==", "===") and not spec.version.endswith(".*"):
        try:
            pinned = Version(Version(spec.version).public)
        except InvalidVersion:
            return False
        if mlflow:
            return pinned.major == release.major
        if match == "minor":
            return pinned.release[:2] == release.release[:2] and pinned.epoch == release.epoch
        return pinned == release
    public = Specifier(f"{spec.operator}{Version(spec.version).public}") if "+" in spec.version else spec
    return public.contains(release, prereleases=True)
