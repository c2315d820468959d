"""Once ready, a process imports in the background what its registry's versions load with
(gateway.dataplane.priming), and only that: /status says what was primed."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.models import Model

from gateway.dataplane.priming import modules_for
from gateway.demo import log_iris_version
from tests.conftest import empty_registry, running_gateway, settings_under
from tests.support.models import Doubler, log_pyfunc
from tests.support.waiting import until

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
