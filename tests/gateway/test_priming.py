"""Once ready, a process imports in the background what its registry's versions load with
(gateway.dataplane.priming), and only that: /status says what was primed."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mlflow.models import Model

from gateway.dataplane.priming import modules_for
from gateway.demo import log_iris_version
from tests.conftest import Registry, empty_registry, running_gateway, settings_under
from tests.support.models import Doubler, log_pyfunc
from tests.support.servers import gateway_server
from tests.support.waiting import until, wait_until

pytestmark = pytest.mark.anyio


async def test_the_registrys_flavors_are_primed_once_ready_and_no_other(tmp_path: Path) -> None:
    registry = empty_registry(tmp_path / "registry")
    registry.log(log_pyfunc, "plain", Doubler())
    iris = registry.log(log_iris_version, "pickled-iris", serialization_format="cloudpickle")
    registry.client.set_registered_model_alias("pickled-iris", "champion", str(iris))
    settings = settings_under(tmp_path, warm_aliases=["champion"])
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        primer = gateway.services.primer
        assert primer is not None and gateway.services.ready
        await until(lambda: primer.seconds is not None, "the priming to finish", timeout=60)
        # the pickled iris needs MLflow's sklearn loader and scikit-learn; the PythonModel its
        # loader; no skops (no version is a skops file) and no torch (no version needs it)
        assert sorted(primer.modules) == ["mlflow.pyfunc.model", "mlflow.sklearn", "sklearn"]
        assert all(not state.startswith("failed") for state in primer.modules.values())
        page = (await gateway.client.get("/status")).text
        line = page.split("Libraries primed for the registry's flavors: ", 1)[1].split("</p>", 1)[0]
        shown, _, took = line.rpartition(" in ")
        assert sorted(shown.split(", ")) == sorted(primer.modules) and took.endswith(" s")


def test_a_served_process_maps_the_primed_libraries_and_not_torch(iris_registry: Registry, tmp_path: Path) -> None:
    """``registry-gateway serve`` on a registry of one pickled scikit-learn model: once ready,
    with nothing warmed and no request sent, scikit-learn's compiled modules are mapped into the
    process (primed)
    and torch's are not (no version of the registry needs it: skops, which imports torch, only
    for a skops file). Read from /proc, as the process itself cannot misreport it."""
    # nothing warmed at start either: what is mapped before any request is the priming's
    env = {"GATEWAY_WARM_ALIASES": "[]"}
    server, base = gateway_server(tracking_uri=iris_registry.tracking_uri, workdir=tmp_path, env=env)
    server.start()
    try:
        shown: list[str] = []
        with httpx.Client(base_url=base, timeout=30) as http:

            def primed() -> bool:
                page = http.get("/status").text
                shown[:] = [page.split("Libraries primed for the registry's flavors: ", 1)[-1].split("</p>", 1)[0]]
                return " in " in shown[0] and not shown[0].startswith("under way")

            wait_until(primed, timeout=60, what="the priming to finish")
        assert sorted(shown[0].rpartition(" in ")[0].split(", ")) == ["mlflow.sklearn", "sklearn"]
        mapped = server.mapped_files()
        assert any("/sklearn/" in path for path in mapped)
        assert not any("/torch/lib/" in path for path in mapped)
    finally:
        server.stop()


def _mlmodel(flavors: dict[str, dict[str, object]]) -> Model:
    model = Model()
    model.flavors = flavors
    return model


def test_each_flavor_primes_its_loader_and_library_and_keras_never() -> None:
    sklearn_skops = {
        "python_function": {"loader_module": "mlflow.sklearn"},
        "sklearn": {"serialization_format": "skops"},
    }
    assert modules_for(_mlmodel(sklearn_skops)) == ["mlflow.sklearn", "sklearn", "skops.io"]
    torch = {"python_function": {"loader_module": "mlflow.pytorch"}, "pytorch": {}}
    assert modules_for(_mlmodel(torch)) == ["mlflow.pytorch", "torch"]
    # Keras chooses its backend from the first version loaded: an import ahead would fix it
    keras = {"python_function": {"loader_module": "mlflow.keras"}, "keras": {"keras_backend": "torch"}}
    assert modules_for(_mlmodel(keras)) == []
