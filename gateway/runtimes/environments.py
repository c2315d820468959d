"""Python environments built with uv from a version's requirements, shared by key.

An environment is keyed by what it holds, not by how it was asked for: the requirements are
first resolved (``uv pip compile``), and the key hashes the resolved set with the Python
version, the platform, uv's index settings and whether source distributions were allowed.
Two spellings of one set share an environment; so do any number of versions. Each is built
once per host, whatever the number of gateway processes (a file lock), in a temporary
directory renamed into place when complete, and kept under ``<env_dir>/<key>``.

uv is the ``uv`` package's own binary; its cache lives beside the environments (same file
system: installs are hard links) and is never bypassed. Interpreters are never downloaded.
Requirement lines are data: pip options, direct references and local paths are refused
unless allowed, and the index comes from uv's own configuration (``UV_INDEX``, uv.toml...),
else from pip's (gateway/runtimes/package_index.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from gateway.runtimes.package_index import package_index
from gateway.runtimes.requirements import MLFLOW_DISTRIBUTIONS, Requirements, installed_release, python_minor

log = logging.getLogger(__name__)

_COMPLETE = "environment.json"  # written last: an environment without it was never finished
_REQUESTS = ".requests"  # what each request resolved to (see EnvironmentStore._known)
_TAIL = 1200  # characters of uv's error kept for the version's status and the audit log


class EnvironmentRefused(Exception):
    """The requirements cannot become an environment here: bad lines, uv's error, a timeout."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Environment:
    key: str
    path: Path
    python_version: str  # the interpreter's, "3.11.7"
    requested_python: str | None  # what the model asked for
    note: str | None = None  # e.g. that the model's Python was not found on this host

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


@dataclass(frozen=True, slots=True)
class EnvironmentInfo:
    """What ``registry-gateway envs list`` shows of one built environment."""

    key: str
    path: Path
    python_version: str
    requirements: tuple[str, ...]
    size_bytes: int
    built_at: float
    last_used: float


@dataclass(frozen=True, slots=True)
class BuildOptions:
    allow_sdist: bool = False
    allow_direct_references: bool = False
    require_python: bool = False  # refuse instead of using this interpreter when the model's is missing
    timeout_seconds: float = 600.0
    http_timeout_seconds: float = 30.0
    max_concurrent: int = 2
    max_bytes: int = 20 * 2**30
    compile_bytecode: bool = False


def uv_binary() -> str:
    import uv

    return str(uv.find_uv_bin())


class EnvironmentStore:
    """Builds, finds, lists and prunes the environments under ``root``."""

    def __init__(
        self,
        root: Path,
        options: BuildOptions | None = None,
        *,
        span: Callable[[str, dict[str, Any]], contextlib.AbstractContextManager[object]] | None = None,
    ) -> None:
        self.root = root
        self.options = options or BuildOptions()
        self._span = span or (lambda name, attributes: contextlib.nullcontext())  # a trace span around each build
        self._builds = threading.BoundedSemaphore(self.options.max_concurrent)
        self._uv: str | None = None

    # --- building ------------------------------------------------------------------

    def ensure(self, requirements: Requirements, *, loader_needs: tuple[str, ...] = ()) -> Environment:
        """The environment for these requirements, built first if this host has none.
        ``loader_needs``: what MLflow's loader of the model's flavor imports, added when the
        model did not name it (see :func:`loader_needs`). Blocks (seconds to minutes): call it
        from a loader thread, never the event loop."""
        self._refuse_unsafe(requirements.lines)
        lines = with_worker_needs(requirements.lines, loader_needs)
        request = self._request_key(lines, requirements.python)
        known = self._known(request, requirements.python)
        if known is not None:
            return known
        interpreter, python_version, note = self._interpreter(requirements.python)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._builds:
            resolved = self._compile(lines, python_version)
            key = self._key(resolved, python_version)
            final = self.root / key
            with self._locked(key):
                if not (final / _COMPLETE).is_file():
                    with self._span("environment.build", {"gateway.environment": key, "python": python_version}):
                        self._build(key, final, interpreter, resolved, requirements, python_version)
        _touch(final / _COMPLETE)
        self._remember(request, key, note)
        return Environment(key, final, python_version, requirements.python, note)

    # A request (the lines asked for, the model's Python, the index, the sdist policy) that
    # was resolved on this host once is mapped to its environment on disk: a version loaded
    # again (after an eviction, a restart) needs neither the index nor an interpreter search,
    # so it loads with the index down, and keeps the very releases it was first served with.

    def _request_key(self, lines: tuple[str, ...], python: str | None) -> str:
        request = {
            "lines": list(lines),
            "python": python_minor(python),
            "index": package_index().identity,
            "sdist": self.options.allow_sdist,
            "require_python": self.options.require_python,
        }
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]

    def _known(self, request: str, requested_python: str | None) -> Environment | None:
        try:
            known = json.loads((self.root / _REQUESTS / f"{request}.json").read_text())
            key = str(known["key"])
            info = json.loads((self.root / key / _COMPLETE).read_text())
        except (OSError, ValueError, KeyError):
            return None  # never resolved here, or its environment was pruned since
        _touch(self.root / key / _COMPLETE)
        return Environment(key, self.root / key, str(info["python"]), requested_python, known.get("note"))

    def _remember(self, request: str, key: str, note: str | None) -> None:
        folder = self.root / _REQUESTS
        folder.mkdir(exist_ok=True)
        staging = folder / f".{request}.{os.getpid()}"
        staging.write_text(json.dumps({"key": key, "note": note}))
        os.replace(staging, folder / f"{request}.json")

    def _refuse_unsafe(self, lines: tuple[str, ...]) -> None:
        for line in lines:
            if line.startswith("-"):
                raise EnvironmentRefused(f"requirement line '{line}' is a pip option; models cannot set options")
            if self.options.allow_direct_references:
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                if line.startswith((".", "/", "~")) or "://" in line:
                    raise EnvironmentRefused(
                        f"requirement line '{line}' is a local path or URL (GATEWAY_ENV_ALLOW_DIRECT_REFERENCES)"
                    ) from None
                continue  # uv says what is wrong with it
            if requirement.url:
                raise EnvironmentRefused(
                    f"requirement '{line}' is a direct reference (GATEWAY_ENV_ALLOW_DIRECT_REFERENCES)"
                )

    def _interpreter(self, wanted: str | None) -> tuple[str, str, str | None]:
        """The interpreter to build on: one of the model's Python minor version found on this
        host, else this process's own (with a note), never a download."""
        own = getattr(sys, "_base_executable", sys.executable), "{}.{}.{}".format(*sys.version_info[:3])
        minor = python_minor(wanted)
        if minor is None or minor == python_minor(own[1]):
            return own[0], own[1], None
        found = find_python(minor, uv=self.uv)
        if found is not None:
            return found[0], found[1], None
        if self.options.require_python:
            raise EnvironmentRefused(
                f"the model was logged with Python {wanted}, and no Python {minor} is installed on this host "
                "(GATEWAY_ENV_REQUIRE_PYTHON)"
            )
        return own[0], own[1], f"logged with Python {wanted}; no Python {minor} on this host, built on {own[1]}"

    @property
    def uv(self) -> str:
        if self._uv is None:
            self._uv = uv_binary()
        return self._uv

    def _environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env.pop("PYTHONPATH", None)
        # uv's cache beside the environments (one file system: installs are hard links), unless
        # the operator put it elsewhere
        env.setdefault("UV_CACHE_DIR", str(self.root / ".uv-cache"))
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["UV_HTTP_TIMEOUT"] = str(max(1, int(self.options.http_timeout_seconds)))
        env.setdefault("UV_NO_PROGRESS", "1")
        return env

    def _run(self, args: list[str], *, what: str, asked: str | None = None) -> str:
        try:
            done = subprocess.run(
                [self.uv, *args],
                env=self._environ(),
                capture_output=True,
                text=True,
                timeout=self.options.timeout_seconds,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise EnvironmentRefused(
                f"{what} took longer than {self.options.timeout_seconds:g} s (GATEWAY_ENV_BUILD_TIMEOUT_SECONDS)"
            ) from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-_TAIL:]
            where = f", looking in {asked}" if asked else ""
            raise EnvironmentRefused(f"{what} failed{where}: {tail}")
        return done.stdout

    def _binary_flags(self) -> list[str]:
        return [] if self.options.allow_sdist else ["--only-binary", ":all:"]

    def _compile(self, lines: tuple[str, ...], python_version: str) -> str:
        index = package_index()
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".compile-") as scratch:
            source = Path(scratch) / "requirements.in"
            source.write_text("\n".join(lines) + "\n")
            out = self._run(
                [
                    "pip",
                    "compile",
                    str(source),
                    "--python-version",
                    python_minor(python_version) or python_version,
                    "--no-header",
                    "--no-annotate",
                    "--quiet",
                    *self._binary_flags(),
                    *index.options,
                ],
                what="resolving the requirements (uv pip compile)",
                asked=index.asked,
            )
        return "\n".join(sorted(line.strip() for line in out.splitlines() if line.strip())) + "\n"

    def _key(self, resolved: str, python_version: str) -> str:
        identity = {
            "resolved": resolved,
            "python": python_version,
            "platform": f"{sys.platform}-{platform.machine()}",
            "index": package_index().identity,
            "sdist": self.options.allow_sdist,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # another process building the same key: wait for it
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _build(
        self, key: str, final: Path, interpreter: str, resolved: str, requirements: Requirements, python_version: str
    ) -> None:
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".build-{key}-"))
        try:
            self._run(
                ["venv", "--quiet", "--relocatable", "--python", interpreter, str(staging / "env")],
                what="creating the environment (uv venv)",
            )
            # The interpreter its workers start on, resolved before any requirement is installed:
            # a wheel may add files to bin/ (a python._pth, which CPython reads at start) and to
            # the environment's root (pyvenv.cfg), so nothing there is read before the sandbox.
            base = os.path.realpath(staging / "env" / "bin" / "python")
            (staging / "resolved.txt").write_text(resolved)
            index = package_index()
            self._run(
                [
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(staging / "env" / "bin" / "python"),
                    "-r",
                    str(staging / "resolved.txt"),
                    *self._binary_flags(),
                    *index.options,
                ],
                what="installing the requirements (uv pip install)",
                asked=index.asked,
            )
            env = staging / "env"
            if self.options.compile_bytecode:
                self._compile_bytecode(base, env, final)
            (env / "resolved.txt").write_text(resolved)
            info = {
                "key": key,
                "python": python_version,
                "interpreter": base,
                "requirements": list(requirements.lines),
                "built_at": time.time(),
                "build_seconds": round(time.monotonic() - started, 3),
            }
            (env / _COMPLETE).write_text(json.dumps(info, indent=1))
            if final.exists():  # an unfinished one left by a crash
                shutil.rmtree(final)
            os.rename(env, final)
            log.info("built environment %s (Python %s) in %.1f s", key, python_version, info["build_seconds"])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.prune(keep={key})

    def _compile_bytecode(self, base: str, env: Path, final: Path) -> None:
        """Every module of the environment compiled once, now: its workers may not write to it (it
        is read-only to them, and they run ``-B``), so without this each worker start compiled
        from source everything it imported (MLflow, pandas, NumPy...), seconds of CPU each time.
        Compiled by the base interpreter with ``-I -S``: compiling runs no code of the
        environment's, and no ``.pth`` file of it runs (nor ``bin/python._pth``, read only
        beside the interpreter it belongs to). The paths in the bytecode are the final ones.
        Best effort: a file that does not compile (a package's Python 2 sample) is left to
        Python, as before."""
        site_packages = sorted((env / "lib").glob("python*/site-packages"))
        if not site_packages:
            return
        command = [base, "-I", "-S", "-m", "compileall", "-q", "-j", "0"]
        command += ["-s", str(env), "-p", str(final), *map(str, site_packages)]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.options.timeout_seconds,
                stdin=subprocess.DEVNULL,
                env=self._environ(),
            )
        except subprocess.TimeoutExpired:
            log.warning(
                "compiling the bytecode of %s took longer than %g s: left to Python",
                final.name,
                self.options.timeout_seconds,
            )
            return
        if done.returncode != 0:
            log.info("some files of %s did not compile (left to Python): %s", final.name, done.stdout.strip()[-_TAIL:])

    # --- what is here ----------------------------------------------------------------

    def environments(self) -> list[EnvironmentInfo]:
        found: list[EnvironmentInfo] = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.iterdir()):
            marker = path / _COMPLETE
            if path.name.startswith(".") or not marker.is_file():
                continue
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            found.append(
                EnvironmentInfo(
                    key=path.name,
                    path=path,
                    python_version=str(info.get("python", "?")),
                    requirements=tuple(info.get("requirements", ())),
                    size_bytes=_tree_bytes(path),
                    built_at=float(info.get("built_at", 0)),
                    last_used=marker.stat().st_mtime,
                )
            )
        return found

    @contextlib.contextmanager
    def in_use(self, key: str) -> Iterator[None]:
        """Held while a worker runs on the environment: prune leaves it alone."""
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.use", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def prune(self, *, keep: set[str] | None = None, everything: bool = False) -> list[str]:
        """Remove environments no worker uses, least recently used first, until the rest fit in
        the disk budget (or all of them, with ``everything``); returns the keys removed."""
        keep = keep or set()
        environments = sorted(self.environments(), key=lambda e: e.last_used)
        total = sum(e.size_bytes for e in environments)
        removed = []
        for env in environments:
            if not everything and total <= self.options.max_bytes:
                break
            if env.key in keep or not self._try_remove(env):
                continue
            total -= env.size_bytes
            removed.append(env.key)
        return removed

    def _try_remove(self, env: EnvironmentInfo) -> bool:
        locks = self.root / ".locks"
        locks.mkdir(exist_ok=True)
        with open(locks / f"{env.key}.use", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a worker (of any gateway on this host) runs on it
            try:
                trash = self.root / f".remove-{env.key}-{os.getpid()}"
                os.rename(env.path, trash)
                shutil.rmtree(trash, ignore_errors=True)
                log.info("removed environment %s (%.1f MiB)", env.key, env.size_bytes / 2**20)
                return True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def worker_interpreter(python: Path) -> Path:
    """What a worker of the environment whose interpreter is ``python`` (``<env>/bin/python``)
    starts: never a file in the environment, beside which a requirement's wheel may have put
    files (CPython reads ``bin/python._pth`` and ``pyvenv.cfg`` before any code of the worker's
    runs). The base interpreter recorded when the environment was built, before any requirement
    was installed; for one built before that was recorded (or not built by the gateway: its own,
    in tests and bench), the interpreter ``python`` links to."""
    env = python.parent.parent
    try:
        recorded = json.loads((env / _COMPLETE).read_text()).get("interpreter")
    except (OSError, ValueError, AttributeError):
        recorded = None
    interpreter = Path(recorded if isinstance(recorded, str) else os.path.realpath(python))
    if interpreter.is_relative_to(os.path.realpath(env)):
        raise EnvironmentRefused(f"environment {env.name}: its interpreter {interpreter} is a file of its own")
    return interpreter


def loader_needs(metadata: Any) -> tuple[str, ...]:
    """What MLflow's loader for this MLmodel imports beyond the flavor's own library, which
    MLflow does not write into requirements.txt: skops for a scikit-learn model it saved with
    skops (MLflow 3's default) when the model's requirements were given by hand."""
    sklearn = metadata.flavors.get("sklearn") or {}
    return ("skops",) if sklearn.get("serialization_format") == "skops" else ()


def with_worker_needs(lines: tuple[str, ...], needs: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The model's lines, plus what the worker itself imports when the model did not ask for
    it: NumPy and pandas (its wire format), MLflow's pyfunc (of this gateway's major version),
    and ``needs`` (its flavor's loader)."""
    names = set()
    for line in lines:
        try:
            names.add(canonicalize_name(Requirement(line).name))
        except InvalidRequirement:
            continue
    extra = [name for name in ("numpy", "pandas", *needs) if canonicalize_name(name) not in names]
    if not names & MLFLOW_DISTRIBUTIONS:
        major = installed_release("mlflow") or "3"
        extra.append(f"mlflow-skinny=={major.split('.')[0]}.*")
    return (*lines, *extra)


def find_python(minor: str, *, uv: str) -> tuple[str, str] | None:
    """An interpreter of Python ``minor`` ("3.10") on this host, and its full version: what uv
    finds on the system (never downloading), else a pyenv installation."""
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    candidates: list[str] = []
    try:
        done = subprocess.run(
            [uv, "python", "find", "--python-preference", "only-system", minor],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(done.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    if pyenv.is_dir():
        candidates += [str(p / "bin" / "python") for p in sorted(pyenv.glob(f"{minor}.*"), reverse=True)]
    candidates += [f"/usr/bin/python{minor}", f"/usr/local/bin/python{minor}"]
    for candidate in candidates:
        version = _version_of(candidate)
        if version is not None and python_minor(version) == minor:
            return candidate, version
    return None


def _version_of(python: str) -> str | None:
    if not Path(python).is_file():
        return None
    try:
        done = subprocess.run(
            [python, "-E", "-s", "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
