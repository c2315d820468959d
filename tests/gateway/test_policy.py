"""The loading policy (flavors, pickle) and where artifacts may come from, on real registries."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.models import Model

from gateway.demo import IRIS, TORCH, iris_frame, torch_available
from gateway.runtimes.policy import CUSTOM_LOADER, TESTED_FLAVORS, LoadingPolicy, PolicyViolation, loading_flavor
from gateway.settings import GatewaySettings
from registry_sync.artifacts import uri_within
from tests.conftest import Registry, empty_registry, iris_split, running_gateway
from tests.support.ci import needs
from tests.support.models import Doubler, log_pyfunc

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}
IRIS_ROW = iris_split([[5.1, 3.5, 1.4, 0.2]])


async def _refusals(client: Any, model: str) -> list[str]:
    events = (await client.get("/events", params={"model": model})).json()["events"]
    return [event["reason"] for event in events if event["kind"] == "refused"]


async def test_pickle_off_refuses_a_pickled_model_once_in_events_and_serves_skops(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    settings = make_settings(allow_pickle=False)
    async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:
        for _ in range(2):  # the second request tries again (no retry window): still one event
            refused = await gateway.client.post("/models/doubler/versions/1/predict", json=X)
            assert refused.status_code == 409, refused.text
            assert refused.json()["error_code"] == "INVALID_STATE"
            assert refused.json()["policy"] == "GATEWAY_ALLOW_PICKLE"
            assert "cloudpickle" in refused.json()["message"]
        reasons = await _refusals(gateway.client, "doubler")
        assert len(reasons) == 1 and "GATEWAY_ALLOW_PICKLE" in reasons[0]
        # iris is saved with skops (MLflow's default) and no trusted types of its own
        served = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=IRIS_ROW)
        assert served.status_code == 200, served.text
        if torch_available():  # torch.export archive: MLflow's own check finds no pickle in it
            example = {"inputs": [[0.1, 0.2, 0.3, 0.4]]}
            torch_answer = await gateway.client.post(f"/models/{TORCH}/versions/1/predict", json=example)
            assert torch_answer.status_code == 200, torch_answer.text
        # a refused version's bytes do not stay in the cache
        loaded = gateway.services.cache.digests()
        blobs = {p.name for p in (settings.artifact_cache_dir / "blobs").iterdir() if not p.name.startswith(".")}
        assert blobs == loaded


async def test_a_flavor_outside_the_allowed_list_is_refused(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    async with running_gateway(make_settings(allowed_flavors=["sklearn"]), sqlite_registry.tracking_uri) as gateway:
        refused = await gateway.client.post("/models/doubler/versions/1/predict", json=X)
        assert refused.status_code == 409 and refused.json()["policy"] == "GATEWAY_ALLOWED_FLAVORS"
        assert "'python_function'" in refused.json()["message"]
        detail = (await gateway.client.get("/models/doubler/versions/1")).json()
        assert detail["refused"] and detail["refused"] in refused.json()["message"]  # the version says why too
        assert (await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=IRIS_ROW)).status_code == 200
        assert (await gateway.client.get(f"/models/{IRIS}/versions/1")).json()["refused"] is None


def test_settings_read_the_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ALLOWED_FLAVORS", " sklearn, pytorch ")
    monkeypatch.setenv("GATEWAY_ALLOW_PICKLE", "false")
    monkeypatch.setenv("GATEWAY_ALLOWED_ARTIFACT_URIS", "s3://models/,mlflow-artifacts:/")
    settings = GatewaySettings()
    assert settings.allowed_flavors == ["sklearn", "pytorch"] and settings.allow_pickle is False
    assert settings.allowed_artifact_uris == ["s3://models/", "mlflow-artifacts:/"]
    assert GatewaySettings.model_fields["allowed_flavors"].default_factory() == list(  # type: ignore[call-arg,misc]
        TESTED_FLAVORS
    )
    assert CUSTOM_LOADER not in TESTED_FLAVORS  # a loader module of the model's own: only by name


# --- what counts as pickle, on models saved for real ------------------------------------


def _sklearn(tmp_path: Path, **kwargs: Any) -> Path:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    features, target = iris_frame()
    path = tmp_path / "model"
    model = LogisticRegression(max_iter=200).fit(features, target)
    mlflow.sklearn.save_model(model, path, pip_requirements=["scikit-learn"], **kwargs)
    return path


def _check(path: Path, *, allow_pickle: bool = False) -> None:
    LoadingPolicy(allow_pickle=allow_pickle).check(Model.load(str(path / "MLmodel")), path)


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_sklearn_pickled_is_refused_without_pickle(tmp_path: Path, fmt: str) -> None:
    path = _sklearn(tmp_path, serialization_format=fmt)
    with pytest.raises(PolicyViolation, match=f"serialized with {fmt}"):
        _check(path)
    _check(path, allow_pickle=True)


def test_skops_counts_as_pickle_only_when_it_trusts_types_it_names_itself(tmp_path: Path) -> None:
    _check(_sklearn(tmp_path / "plain", serialization_format="skops"))
    trusting = _sklearn(
        tmp_path / "trusting", serialization_format="skops", skops_trusted_types=["builtins.eval", "os.system"]
    )
    with pytest.raises(PolicyViolation, match="trusts types"):
        _check(trusting)


@pytest.mark.torch
@needs(torch_available(), "needs torch")
def test_pytorch_saved_with_torch_save_is_refused_without_pickle(tmp_path: Path) -> None:
    import mlflow.pytorch
    import torch

    path = tmp_path / "model"
    mlflow.pytorch.save_model(torch.nn.Linear(4, 3), path, serialization_format="pickle", pip_requirements=["torch"])
    assert loading_flavor(Model.load(str(path / "MLmodel"))) == "pytorch"
    with pytest.raises(PolicyViolation, match="torch.save"):
        _check(path)


MODEL_AS_CODE = """
import mlflow


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
"""


def test_a_model_as_code_is_python_function_and_not_pickle(tmp_path: Path) -> None:
    """MLflow's models-from-code (loader ``mlflow.pyfunc.loaders.code_model``) runs the model's
    own code as a PythonModel does and unpickles nothing: ``python_function`` to the allowed
    flavors (not a flavor named "pyfunc", which refused it by default), and no pickle, though
    MLflow notes a cloudpickle_version for it all the same."""
    import mlflow.pyfunc

    code = tmp_path / "echo.py"
    code.write_text(MODEL_AS_CODE)
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(path, python_model=str(code), pip_requirements=["pandas"])
    metadata = Model.load(str(path / "MLmodel"))
    assert metadata.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert loading_flavor(metadata) == "python_function"
    _check(path)  # pickle off: nothing pickled
    with pytest.raises(PolicyViolation, match="'python_function' is not one of the allowed flavors"):
        LoadingPolicy.of(["sklearn"], allow_pickle=True).check(metadata, path)


CUSTOM_LOADER_MODULE = """
class _Halver:
    def predict(self, model_input, params=None):
        return model_input / 2


def _load_pyfunc(path):
    return _Halver()
"""


def test_a_loader_module_of_the_models_own_is_admitted_only_by_name(tmp_path: Path) -> None:
    """``mlflow.pyfunc.save_model(loader_module=..., code_paths=...)``: code the model ships and
    MLflow imports with nothing of its own between; not in the default list, whatever pickle says."""
    import mlflow.pyfunc

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "halving_loader.py").write_text(CUSTOM_LOADER_MODULE)
    (tmp_path / "weights.txt").write_text("none")
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(
        path,
        loader_module="halving_loader",
        data_path=str(tmp_path / "weights.txt"),
        code_paths=[str(tmp_path / "code" / "halving_loader.py")],
        pip_requirements=["pandas"],
    )
    metadata = Model.load(str(path / "MLmodel"))
    assert loading_flavor(metadata) == CUSTOM_LOADER
    with pytest.raises(PolicyViolation, match="'custom_loader' is not one of the allowed flavors"):
        LoadingPolicy(allow_pickle=True).check(metadata, path)  # the default flavors
    LoadingPolicy.of([*TESTED_FLAVORS, CUSTOM_LOADER], allow_pickle=False).check(metadata, path)  # code, not pickle
    LoadingPolicy.of(["*"], allow_pickle=True).check(metadata, path)


# --- artifact locations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "prefix", "inside"),
    [
        ("s3://models/iris/1", "s3://models/", True),
        ("s3://models/iris/1", "s3://models", True),
        ("s3://models-evil/iris/1", "s3://models", False),
        ("s3://models/iris/../secret/x", "s3://models/iris/", False),
        ("S3://MODELS/iris", "s3://models", True),
        ("s3://other/iris", "s3://models/", False),
        ("file:///srv/mlruns/../../etc", "file:///srv/mlruns", False),
        ("file:///srv/mlruns/1/artifacts", "file:///srv/mlruns/", True),
        ("/srv/mlruns/1/artifacts", "file:///srv/mlruns", True),
        ("file:///etc/passwd", "s3://models/", False),
        ("mlflow-artifacts:/1/abc/artifacts", "mlflow-artifacts:/", True),
        ("mlflow-artifacts://host/1/abc", "mlflow-artifacts:/", False),
    ],
)
def test_uri_prefixes_match_whole_segments(uri: str, prefix: str, inside: bool) -> None:
    assert uri_within(uri, prefix) is inside


async def test_artifacts_outside_the_allowed_locations_are_refused_before_any_download(
    sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    settings = make_settings(allowed_artifact_uris=["s3://models/", "file:///nonexistent/"])
    async with running_gateway(settings, sqlite_registry.tracking_uri) as gateway:
        refused = await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=IRIS_ROW)
        assert refused.status_code == 409, refused.text
        assert refused.json()["policy"] == "GATEWAY_ALLOWED_ARTIFACT_URIS"
        assert str(sqlite_registry.root) not in refused.text  # the caller is not told where
        assert any("GATEWAY_ALLOWED_ARTIFACT_URIS" in r for r in await _refusals(gateway.client, IRIS))
        blobs = settings.artifact_cache_dir / "blobs"
        assert not blobs.exists() or not any(blobs.iterdir())
    allowed = make_settings(allowed_artifact_uris=[(sqlite_registry.root / "artifacts").as_uri()])
    async with running_gateway(allowed, sqlite_registry.tracking_uri) as gateway:
        assert (await gateway.client.post(f"/models/{IRIS}/versions/1/predict", json=IRIS_ROW)).status_code == 200


async def test_a_symlink_in_the_artifacts_is_never_followed(
    tmp_path_factory: pytest.TempPathFactory, make_settings: Callable[..., GatewaySettings]
) -> None:
    root = tmp_path_factory.mktemp("symlink-registry")
    registry = empty_registry(root)
    version = registry.log(log_pyfunc, "linked", Doubler())
    secret = root / "outside" / "host-secret.txt"
    secret.parent.mkdir()
    secret.write_text("host-secret-7f3a")
    artifacts = Path(registry.client.get_model_version_download_uri("linked", str(version)).removeprefix("file://"))
    os.symlink(secret, artifacts / "notes.txt")
    settings = make_settings()
    async with running_gateway(settings, registry.tracking_uri) as gateway:
        refused = await gateway.client.post(f"/models/linked/versions/{version}/predict", json=X)
        assert refused.status_code == 409, refused.text
        assert refused.json()["policy"] == "symbolic links" and str(root) not in refused.text
    copied = [p for p in settings.artifact_cache_dir.rglob("*") if p.is_file() and b"host-secret" in p.read_bytes()]
    assert copied == []
    os.unlink(artifacts / "notes.txt")  # the same version without the link serves
    async with running_gateway(
        make_settings(database_url=f"sqlite:///{root / 'state2.db'}"), registry.tracking_uri
    ) as gateway:
        assert (await gateway.client.post(f"/models/linked/versions/{version}/predict", json=X)).status_code == 200
