"""Import the libraries the registry's versions load with, in the background once the process
is ready, so that the first request for a flavor on a fresh replica does not pay its imports
(a scikit-learn model MLflow 3 logged as skops imports skops, which imports torch where it is
installed: seconds on the first request).

What is primed is read from the versions' MLmodel files (two small files each, cached on disk;
gateway.routing.inventory reads them the same way): for each model, its default version (the
default alias, else latest) and each warm alias's target. Each version names its pyfunc loader
(``mlflow.sklearn``) and its flavor's library (``sklearn``; ``skops.io`` for a skops file); a
flavor no version of the registry uses is never imported, so a replica is charged no memory for
it. Keras and TensorFlow are not primed: Keras takes its backend from the first version loaded
(gateway.runtimes.frameworks), which an import ahead of it would fix. Readiness never waits for
this, and a failed import is noted, not raised: the version's load says what is wrong.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable

import anyio.to_thread
from mlflow.models import Model

from gateway.errors import GatewayError
from gateway.runtimes.base import flavor_of

log = logging.getLogger(__name__)

# A flavor's own library, as its MLflow loader imports it (the loader module itself comes from
# the MLmodel). Flavors not named here are primed through their loader module alone.
_LIBRARIES: dict[str, tuple[str, ...]] = {
    "sklearn": ("sklearn",),
    "pytorch": ("torch",),
    "transformers": ("transformers",),
    "sentence_transformers": ("sentence_transformers",),
    "xgboost": ("xgboost",),
    "lightgbm": ("lightgbm",),
    "catboost": ("catboost",),
    "onnx": ("onnxruntime",),
    "statsmodels": ("statsmodels.api",),
}
_NEVER = ("keras", "tensorflow")  # the backend is the first loaded version's to choose


def modules_for(mlmodel: Model) -> list[str]:
    """The modules loading this version imports first: its pyfunc loader, its flavor's library."""
    flavor = flavor_of(mlmodel)
    if flavor in _NEVER or any(name in mlmodel.flavors for name in _NEVER):
        return []
    modules = []
    loader = mlmodel.flavors.get("python_function", {}).get("loader_module")
    if isinstance(loader, str) and loader.startswith("mlflow."):
        modules.append(loader)
    modules += _LIBRARIES.get(flavor, ())
    sklearn = mlmodel.flavors.get("sklearn")
    if flavor == "sklearn" and isinstance(sklearn, dict) and sklearn.get("serialization_format") == "skops":
        modules.append("skops.io")
    return modules


class Primer:
    """Primes once, in the background; :meth:`describe` says what, for /status."""

    def __init__(
        self,
        versions: Callable[[], Iterable[tuple[str, int]]],
        mlmodel: Callable[[str, int], Awaitable[Model]],
    ) -> None:
        self._versions = versions  # the (model, version) pairs to prime for
        self._mlmodel = mlmodel
        self.modules: dict[str, str] = {}  # module -> "imported" | "already imported" | "failed: ..."
        self.seconds: float | None = None  # None: not finished

    async def run(self) -> None:
        started = time.perf_counter()
        wanted: list[str] = []
        for name, version in self._versions():
            try:
                needed = modules_for(await self._mlmodel(name, version))
            except GatewayError:
                continue  # its files cannot be read: its load will say so
            wanted += [module for module in needed if module not in wanted]
        for module in wanted:
            self.modules[module] = await anyio.to_thread.run_sync(_import, module)
        self.seconds = time.perf_counter() - started
        if wanted:
            log.info("primed the registry's libraries in %.1f s: %s", self.seconds, ", ".join(wanted))

    def describe(self) -> str:
        if self.seconds is None:
            return "under way" + (f" ({', '.join(self.modules)} so far)" if self.modules else "")
        if not self.modules:
            return "nothing to prime"
        shown = ", ".join(
            m if not state.startswith("failed") else f"{m} ({state})" for m, state in self.modules.items()
        )
        return f"{shown} in {self.seconds:.1f} s"


def _import(module: str) -> str:
    if module in sys.modules:
        return "already imported"
    try:
        importlib.import_module(module)
    except Exception as exc:  # an optional library not installed here, or broken
        return f"failed: {type(exc).__name__}: {exc}"
    return "imported"
