"""Where PyTorch versions compute: GATEWAY_DEVICE, the ``gateway.device`` tag (issue 27), and an
honest device (issue 41): only ``auto`` falls back to the CPU; a CUDA device named outright
that the host lacks stops the gateway at start (GATEWAY_DEVICE) or fails the version's load (a
tag), in words. Tests marked ``gpu`` need CUDA and skip without it; the rest hold on any host."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.demo import log_torch_version, torch_available
from gateway.runtimes.base import DeviceRequest
from gateway.runtimes.inprocess import InProcessRuntime
from gateway.runtimes.worker import devices, raw, wire
from gateway.runtimes.workers import WorkerProcess
from gateway.settings import GatewaySettings
from tests.conftest import Registry, empty_registry, running_gateway
from tests.support.ci import missing
from tests.support.numeric import mlp_error_bound
from tests.support.servers import BIN

pytestmark = pytest.mark.torch
if not torch_available():
    missing("torch is not installed (pip install '.[torch]')", module=True)

import mlflow.pytorch  # noqa: E402 - after the skip: torch is optional
import torch  # noqa: E402
from mlflow.models import Model  # noqa: E402

CUDA = torch.cuda.is_available()
DRIVER_GPUS = devices.cuda_devices()[0]  # torch's, or the NVIDIA driver's where torch here has no CUDA
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (this host has none)")
without_cuda = pytest.mark.skipif(CUDA, reason="checks what a host without CUDA does")
ROWS = np.random.default_rng(7).random((5, 4), dtype=np.float32)
_names = itertools.count(1)


def _network() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()


FORMATS = ["pt2", "pickle"]


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The network saved in each of MLflow's formats: ``pt2`` (torch.export, MLflow 3's default)
    and ``pickle`` (torch.save of the module)."""
    paths = {}
    for serialization in FORMATS:
        path = paths[serialization] = tmp_path_factory.mktemp(serialization) / "model"
        mlflow.pytorch.save_model(
            _network(),
            str(path),
            serialization_format=serialization,
            input_example=ROWS[:2],
            pip_requirements=["torch"],
        )
    return paths


@pytest.fixture(params=FORMATS)
def saved(request: pytest.FixtureRequest, formats: dict[str, Path]) -> Path:
    return formats[request.param]


def _answers(pyfunc: Any) -> np.ndarray:
    return np.asarray(pyfunc.predict(ROWS))


def _agree(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Two correct float32 evaluations of the network: within twice its rounding bound."""
    bound = mlp_error_bound(_network(), ROWS)
    assert np.all(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)) <= 2 * bound)


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("auto", "auto"), (" CPU ", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"), ("CUDA:01", "cuda:1")],
)
def test_device_specs_have_one_spelling(spec: str, parsed: str) -> None:
    assert devices.parse(spec) == parsed


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "cuda:x", "mps", ""])
def test_anything_else_is_refused_by_name(spec: str) -> None:
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        devices.parse(spec)
    with pytest.raises(ValueError, match="is not a device"):
        GatewaySettings(device=spec)


@without_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_a_cuda_device_this_torch_lacks_is_refused_in_words(spec: str) -> None:
    with pytest.raises(devices.DeviceUnavailable) as refused:
        devices.resolve(spec, f"GATEWAY_DEVICE={spec}")
    said = str(refused.value)
    assert said.startswith(f"GATEWAY_DEVICE={spec} asks for {spec}, but this host has no CUDA device (torch ")
    assert "GATEWAY_DEVICE=auto" in said


@pytest.mark.skipif(DRIVER_GPUS > 0, reason="checks what a host without any CUDA device does")
def test_gateway_device_cuda_on_a_host_without_one_stops_serve_at_start() -> None:
    """As a misspelled device does: non-zero, one line, before any worker or database."""
    for spec in ("cuda", "cuda:1"):
        devices.require("auto", "GATEWAY_DEVICE=auto")
        devices.require("cpu", "GATEWAY_DEVICE=cpu")
        with pytest.raises(devices.DeviceUnavailable, match=f"asks for {spec}, but this host has no CUDA device"):
            devices.require(spec, f"GATEWAY_DEVICE={spec}")
    result = subprocess.run(
        [str(BIN / "registry-gateway"), "serve"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GATEWAY_DEVICE": "cuda:1", "GATEWAY_DATABASE_URL": "sqlite:////nonexistent/dir/x.db"},
    )
    assert result.returncode != 0
    assert result.stderr.startswith("Error: GATEWAY_DEVICE=cuda:1 asks for cuda:1, but this host has no CUDA device")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.anyio
@pytest.mark.skipif(DRIVER_GPUS > 0, reason="checks what a host without any CUDA device does")
async def test_an_app_built_for_a_gpu_this_host_lacks_does_not_start(
    torch_registry: Registry, make_settings: Callable[..., Any]
) -> None:
    """The same check where an ASGI server builds the app without the command (app_factory)."""
    with pytest.raises(devices.DeviceUnavailable, match="GATEWAY_DEVICE=cuda asks for cuda"):
        async with running_gateway(make_settings(device="cuda"), torch_registry.tracking_uri):
            pass


@without_cuda
def test_auto_is_the_cpu_here_and_mlflows_own_default_decides_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", raising=False)
    assert devices.resolve("auto", "GATEWAY_DEVICE=auto") == (
        "cpu",
        "GATEWAY_DEVICE=auto: this host has no CUDA device",
    )
    monkeypatch.setenv("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cuda")  # as `mlflow models serve` is told
    device, reason = devices.resolve("auto", "GATEWAY_DEVICE=auto")
    assert device == "cpu" and reason.startswith("GATEWAY_DEVICE=auto and MLFLOW_DEFAULT_PREDICTION_DEVICE=cuda, but")


def test_each_format_loads_where_it_is_told_and_answers_as_mlflow(saved: Path) -> None:
    pyfunc, device, reason = devices.load(str(saved), "cpu", "tagged gateway.device=cpu")
    assert (device, reason, devices.device_of(pyfunc)) == ("cpu", "tagged gateway.device=cpu", "cpu")
    _agree(_answers(pyfunc), _answers(mlflow.pyfunc.load_model(str(saved))))


def test_moving_a_loaded_version_gives_the_same_answers(saved: Path) -> None:
    """The move that serves a pt2 version MLflow will not load on the GPU (its weights were saved
    on the CPU): torch.export's device pass for pt2, ``.to`` for a pickled module. Here it runs
    to the CPU, the one device every host has; the ``gpu`` tests run it to CUDA."""
    pyfunc, _, _ = devices.load(str(saved), "cpu", "GATEWAY_DEVICE=cpu")
    before = _answers(pyfunc)
    wrapper = pyfunc._model_impl
    module = wrapper.pytorch_model
    devices.move(pyfunc, str(saved), "cpu")
    exported = (saved / "data" / "model.pt2").exists()
    assert (wrapper.pytorch_model is not module) == exported  # pt2: a program moved by its own pass
    _agree(_answers(pyfunc), before)


def test_the_fast_path_predicts_what_mlflow_does_under_inference_mode(saved: Path) -> None:
    """The flavor's own predict (raw.py) skips MLflow's wrapper for torch.inference_mode; the
    same module, device and kernels give the same bits."""
    pyfunc, _, _ = devices.load(str(saved), "cpu", "GATEWAY_DEVICE=cpu")
    predict = raw.raw_predict(pyfunc, "pytorch", None)
    assert predict is not None
    modes: list[bool] = []
    pyfunc._model_impl.pytorch_model.register_forward_pre_hook(
        lambda *_: modes.append(torch.is_inference_mode_enabled())
    )
    ours = predict(ROWS)
    theirs = pyfunc._model_impl.predict(ROWS)
    assert modes == [True, False]  # ours, then MLflow's no_grad
    assert ours.dtype == theirs.dtype == np.float32 and np.array_equal(ours, theirs)


def test_the_in_process_runtime_reports_the_device_and_why(saved: Path) -> None:
    loaded = InProcessRuntime().load(
        saved, Model.load(str(saved / "MLmodel")), DeviceRequest("cpu", "GATEWAY_DEVICE=cpu")
    )
    assert (loaded.device, loaded.device_reason, loaded.device_bytes) == ("cpu", "GATEWAY_DEVICE=cpu", 0)
    assert loaded.size_bytes > 4 * (4 * 16 + 16 + 16 * 3 + 3)  # its weights are host memory here


@without_cuda
def test_a_worker_places_its_pytorch_versions_by_the_same_rules(formats: dict[str, Path]) -> None:
    """The isolated worker (its own interpreter: here the gateway's, for want of a torch
    environment that is not GBs of CUDA) loads on the device it is sent and says where and why,
    or refuses a device named outright that it lacks; one worker holds a version of each format."""
    worker = WorkerProcess(Path(sys.executable), label="devices", on_exit=lambda process, code: None)
    worker.start()
    try:
        for handle, saved in formats.items():
            load = {"op": "load", "id": handle, "path": str(saved), "device": "cuda:0"}
            answer, _ = worker.call({**load, "device_source": "tagged gateway.device=cuda:0"}, [])
            assert not answer["ok"] and "tagged gateway.device=cuda:0 asks for cuda:0, but" in str(answer), answer
            answer, _ = worker.call({**load, "device": "auto", "device_source": "GATEWAY_DEVICE=auto"}, [])
            assert answer["ok"], answer
            assert answer["device"] == "cpu"
            assert answer["device_reason"] == "GATEWAY_DEVICE=auto: this host has no CUDA device"
            buffers: list[Any] = []
            answer, out = worker.call({"op": "predict", "id": handle, "data": wire.encode(ROWS, buffers)}, buffers)
            assert answer["ok"], answer
            _agree(np.asarray(wire.decode(answer["value"], out)), _answers(mlflow.pyfunc.load_model(str(saved))))
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def torch_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry of this module's own: tests tag its versions."""
    return empty_registry(tmp_path_factory.mktemp("device-registry"))


@pytest.fixture
def tagged(torch_registry: Registry) -> Iterator[Callable[[str], tuple[str, int]]]:
    def log(device: str) -> tuple[str, int]:
        name = f"placed-{next(_names)}"
        version = torch_registry.log(log_torch_version, name)
        torch_registry.client.set_model_version_tag(name, str(version), "gateway.device", device)
        return name, version

    yield log


@pytest.mark.anyio
@without_cuda
async def test_a_version_tagged_for_a_gpu_this_host_lacks_is_refused_and_auto_serves_from_the_cpu(
    torch_registry: Registry, tagged: Callable[[str], tuple[str, int]], make_settings: Callable[..., Any]
) -> None:
    """A tag that names a GPU is asked for by name: its load fails, saying why, rather than
    serving slower than asked. The same network tagged ``auto`` serves from the CPU, and says so."""
    refused, refused_version = tagged("cuda:0")
    name, version = tagged("auto")
    async with running_gateway(make_settings(), torch_registry.tracking_uri) as gateway:
        answer = await gateway.client.post(
            f"/models/{refused}/versions/{refused_version}/predict", json={"inputs": ROWS.tolist()}
        )
        assert 500 <= answer.status_code < 600, answer.text
        said = "tagged gateway.device=cuda:0 asks for cuda:0, but this host has no CUDA device"
        assert said in answer.json()["message"]
        answer = await gateway.client.post(f"/models/{name}/versions/{version}/predict", json={"inputs": ROWS.tolist()})
        assert answer.status_code == 200, answer.text
        runtime = (await gateway.client.get(f"/models/{name}/versions/{version}")).json()["runtime"]
        assert runtime["device"] == "cpu"
        assert runtime["device_reason"] == "tagged gateway.device=auto: this host has no CUDA device"
        labels = {"model": name, "version": str(version), "runtime": "in_process", "environment": "", "device": "cpu"}
        assert gateway.services.metrics.registry.get_sample_value("gateway_version_runtime", labels) == 1
        reference = torch_registry.pyfunc(name, version)
        ours = np.asarray(answer.json()["predictions"], dtype=np.float32)
        bound = mlp_error_bound(reference._model_impl.pytorch_model, ROWS)
        theirs = np.asarray(reference.predict(ROWS), dtype=np.float64)
        assert np.all(np.abs(ours.astype(np.float64) - theirs) <= 2 * bound)


@pytest.mark.anyio
async def test_a_tag_that_names_no_device_is_said_and_the_setting_applies(
    torch_registry: Registry, tagged: Callable[[str], tuple[str, int]], make_settings: Callable[..., Any]
) -> None:
    name, version = tagged("gpu")
    async with running_gateway(make_settings(device="cpu"), torch_registry.tracking_uri) as gateway:
        answer = await gateway.client.post(f"/models/{name}/versions/{version}/predict", json={"inputs": ROWS.tolist()})
        assert answer.status_code == 200, answer.text
        runtime = (await gateway.client.get(f"/models/{name}/versions/{version}")).json()["runtime"]
        assert runtime["device"] == "cpu"
        assert runtime["device_reason"] == "GATEWAY_DEVICE=cpu (its tag gateway.device: 'gpu' is not a device " + (
            "(auto, cpu, cuda or cuda:N))"
        )


# --- on a GPU -------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_each_format_serves_from_the_gpu_with_its_bytes_counted_there(saved: Path) -> None:
    """A version logged on the CPU in either format (pt2 cannot be loaded across devices by
    MLflow itself) computes on cuda:0; its weights count on the device, not in host memory."""
    loaded = InProcessRuntime().load(
        saved, Model.load(str(saved / "MLmodel")), DeviceRequest("auto", "GATEWAY_DEVICE=auto")
    )
    assert loaded.device == "cuda:0", loaded.device_reason
    assert devices.device_of(loaded.model) == "cuda:0"
    assert all(p.device.type == "cuda" for p in loaded.model._model_impl.pytorch_model.parameters())
    assert loaded.device_bytes >= 4 * (4 * 16 + 16 + 16 * 3 + 3)
    _agree(_answers(loaded.model), _answers(mlflow.pyfunc.load_model(str(saved), model_config={"device": "cpu"})))
