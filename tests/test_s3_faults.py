"""Faults in S3 under a running gateway (direct mode, a real S3 endpoint and `mlflow server`).

Each ends with the bad version refused or failed with a recorded reason, the previous
version still serving, and nothing partial ever loaded.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.demo import log_iris_version, using_registry
from gateway.settings import GatewaySettings
from registry_sync.registry import RegistryReader
from tests.conftest import Gateway, iris_split, running_gateway
from tests.support.s3 import S3, moto_s3
from tests.support.servers import Process, mlflow_server
from tests.support.versions import loaded
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ROW = iris_split([[6.7, 3.0, 5.2, 2.3]])
ADMIN = {"Authorization": "Bearer t0ken"}
_names = itertools.count()


class DirectS3:
    """moto_server plus an `mlflow server` whose artifact root is s3:// (clients go direct).

    In this mode the server never touches S3: it records s3:// locations, and each client
    (the tests, the gateway) reads and writes them at the endpoint its own
    MLFLOW_S3_ENDPOINT_URL names. So an S3 endpoint of a test's own can sit behind a
    server shared with others (``server``), and die without it."""

    def __init__(self, root: Path, server: Process | None = None) -> None:
        self.root = root
        self._moto = moto_s3(root / "moto")
        self.s3: S3 = self._moto.__enter__()
        self._own_server = server is None
        if server is None:
            server = mlflow_server(
                root / "mlflow",
                artifacts=["--default-artifact-root", f"s3://{self.s3.bucket}/direct", "--no-serve-artifacts"],
            )
            try:
                server.start()
            except BaseException:
                self.kill_s3()
                raise
        self.server: Process = server
        self.tracking_uri = self.server.health_url.removesuffix("/health")

    def kill_s3(self) -> None:
        self._moto.__exit__(None, None, None)

    def close(self) -> None:
        if self._own_server:
            self.server.stop()
        self.kill_s3()

    def model(self, versions: int) -> str:
        name = f"s3-fault-{next(_names)}"
        with using_registry(self.tracking_uri) as client:
            for _ in range(versions):
                log_iris_version(name)
            client.set_registered_model_alias(name, "champion", "1")
        return name

    def keys(self, name: str, version: int) -> list[str]:
        uri = RegistryReader(tracking_uri=self.tracking_uri).download_uri(name, version)
        prefix = uri.removeprefix(f"s3://{self.s3.bucket}/")
        listed = self.s3.client().list_objects_v2(Bucket=self.s3.bucket, Prefix=prefix)
        return [item["Key"] for item in listed["Contents"]]


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectS3]:
    with pytest.MonkeyPatch.context() as patch:
        env = DirectS3(tmp_path_factory.mktemp("direct-s3"))
        try:
            for key, value in env.s3.client_env.items():
                patch.setenv(key, value)  # the tests and the in-process gateway read S3 directly
            yield env
        finally:
            env.close()


@pytest.fixture
def doomed(direct: DirectS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DirectS3]:
    """An S3 endpoint of the test's own, which it may kill; clients reach it directly. The
    registry is the module's `mlflow server` (starting one costs seconds of CPU): it never
    reaches S3 itself, and the test's models have names of their own."""
    env = DirectS3(tmp_path / "own-s3", server=direct.server)
    try:
        for key, value in env.s3.client_env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        yield env
    finally:
        env.close()


@pytest.fixture
def gateway_for(direct: DirectS3, make_settings: Callable[..., GatewaySettings]) -> Callable[..., Any]:
    def start(**overrides: Any) -> Any:
        values = {"warm_aliases": ["champion"], "admin_token": "t0ken"}
        settings = make_settings(**{**values, **overrides})
        return running_gateway(settings, direct.tracking_uri)

    return start


async def serving(gateway: Gateway, name: str) -> str:
    response = await gateway.client.post(f"/models/{name}/predict", json=ROW)
    assert response.status_code == 200, response.text
    return response.headers["x-model-version"]


def _overwrite(s3: S3, key: str) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"rewritten in place\n")


def _delete(s3: S3, key: str) -> None:
    s3.client().delete_object(Bucket=s3.bucket, Key=key)


def _truncate(s3: S3, key: str) -> None:
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=body[: len(body) // 2])


def leftovers(cache_root: Path) -> list[Path]:
    """What is written aside under the artifact cache (a name starting with a dot): staging
    folders and files not yet renamed. os.walk, not rglob: a failing fetch removes its staging
    folder while this looks, and rglob (Python 3.11) raises FileNotFoundError for a folder gone
    between its listing and its walk; os.walk passes over it."""
    return [Path(d, n) for d, dirs, files in os.walk(cache_root) for n in (*dirs, *files) if n.startswith(".")]


@pytest.mark.parametrize("fault", [_overwrite, _delete, _truncate], ids=["overwritten", "deleted", "truncated"])
async def test_changed_objects_refuse_the_version_and_the_old_one_serves(
    direct: DirectS3, gateway_for: Callable[..., Any], fault: Callable[[S3, str], None]
) -> None:
    name = direct.model(versions=2)
    async with gateway_for() as gateway:
        assert await serving(gateway, name) == "1"
        first_use = await gateway.client.post(f"/models/{name}/versions/2/predict", json=ROW)
        assert first_use.status_code == 200, first_use.text
        await gateway.services.catalog.refresh()  # the pin that load wrote (followed within a second)
        pinned = (await gateway.client.get(f"/models/{name}/versions/2")).json()["sha256"]
        assert pinned  # pinned when first fetched, before anything happened to it
        model_file = next(k for k in direct.keys(name, 2) if k.endswith("model.skops"))
        fault(direct.s3, model_file)
        with using_registry(direct.tracking_uri) as client:
            client.set_registered_model_alias(name, "champion", "2")
        report = (await gateway.client.post("/admin/sync", params={"verify": "true"}, headers=ADMIN)).json()
        assert report["refused"] >= 1, report
        assert await serving(gateway, name) == "1"
        detail = (await gateway.client.get(f"/models/{name}/versions/2")).json()
        assert detail["sha256"] == pinned and detail["loaded"] is None
        assert detail["refused"] and pinned in detail["refused"]
        direct_call = await gateway.client.post(f"/models/{name}/versions/2/predict", json=ROW)
        assert direct_call.status_code == 409
        kinds = [e["kind"] for e in (await gateway.client.get("/events", params={"model": name})).json()["events"]]
        assert "refused" in kinds
        assert loaded(gateway.services.cache, name, 2) is None


async def test_a_changed_listing_is_caught_by_the_next_poll_without_a_download(
    direct: DirectS3, gateway_for: Callable[..., Any]
) -> None:
    name = direct.model(versions=2)
    async with gateway_for() as gateway:
        assert await serving(gateway, name) == "1"
        first_use = await gateway.client.post(f"/models/{name}/versions/2/predict", json=ROW)
        assert first_use.status_code == 200, first_use.text  # loaded: its bytes are worth checking
        verify = {"verify": "true"}
        first = (await gateway.client.post("/admin/sync", params=verify, headers=ADMIN)).json()
        assert first["verified"] >= 1, first  # no listing recorded yet: hashed once, listing kept
        state = await asyncio.to_thread(gateway.services.store.version, name, 2)
        assert state is not None and state.listing and (state.artifact_uri or "").startswith("s3://")
        fetched = gateway.services.artifacts.downloaded_bytes
        assert gateway.services.metrics.registry.get_sample_value("gateway_artifact_downloaded_bytes") == fetched
        quiet = (await gateway.client.post("/admin/sync", params=verify, headers=ADMIN)).json()
        assert quiet["refused"] == quiet["verified"] == 0, quiet  # an unchanged listing: one LIST, nothing more
        assert gateway.services.artifacts.downloaded_bytes == fetched
        _overwrite(direct.s3, next(k for k in direct.keys(name, 2) if k.endswith("MLmodel")))
        report = (await gateway.client.post("/admin/sync", params=verify, headers=ADMIN)).json()
        assert report["refused"] >= 1, report
        detail = (await gateway.client.get(f"/models/{name}/versions/2")).json()
        assert detail["refused"] and "changed" in detail["refused"]
        assert await serving(gateway, name) == "1"


async def test_s3_unreachable_fails_the_new_version_and_leaves_nothing_partial(
    doomed: DirectS3, make_settings: Callable[..., GatewaySettings]
) -> None:
    env = doomed
    name = env.model(versions=1)
    settings = make_settings(warm_aliases=["champion"])
    async with running_gateway(settings, env.tracking_uri) as gateway:
        assert await serving(gateway, name) == "1"
        with using_registry(env.tracking_uri):
            log_iris_version(name)  # version 2, stored while S3 is still up
        env.kill_s3()  # S3 goes away
        answer = await gateway.client.post(f"/models/{name}/versions/2/predict", json=ROW)
        assert answer.status_code == 503, answer.text
        assert f"'{name}' version 2" in answer.json()["message"]
        assert await serving(gateway, name) == "1"  # the loaded version never needed S3
        events = (await gateway.client.get("/events", params={"model": name})).json()["events"]
        assert any(e["kind"] == "failed" and e["version"] == 2 for e in events)
        cache_root = settings.artifact_cache_dir

        # A fetch still under way (a reader of version 2's MLmodel, say) holds its staging folder
        # until it fails: once every fetch has ended, none may be left.
        await asyncio.to_thread(
            wait_until, lambda: leftovers(cache_root) == [], timeout=30, what="no partial download left"
        )
        assert (await asyncio.to_thread(gateway.services.store.version, name, 2)).digest is None


async def test_s3_dying_mid_download_leaves_nothing_partial(
    doomed: DirectS3, tmp_path: Path, make_settings: Callable[..., GatewaySettings]
) -> None:
    import mlflow.pyfunc

    from tests.support.models import SIGNATURE, Doubler
    from tests.support.waiting import until

    env = doomed
    name = env.model(versions=1)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(160 * 2**20))  # big enough to catch in the act
    settings = make_settings(warm_aliases=["champion"])
    async with running_gateway(settings, env.tracking_uri) as gateway:
        assert await serving(gateway, name) == "1"
        with using_registry(env.tracking_uri), mlflow.start_run():  # version 2, unseen so far
            mlflow.pyfunc.log_model(
                name="model",
                python_model=Doubler(),
                artifacts={"weights": str(weights)},
                registered_model_name=name,
                signature=SIGNATURE,
                pip_requirements=["mlflow"],
            )
        request = asyncio.create_task(
            gateway.client.post(f"/models/{name}/versions/2/predict", json={"dataframe_records": [{"x": 1.0}]})
        )
        blobs = settings.artifact_cache_dir / "blobs"

        def downloading() -> bool:  # a staging directory holding part of the weights
            assert not request.done(), request.result().text
            return any(
                p.is_file() and 0 < p.stat().st_size < 160 * 2**20 for p in blobs.glob(".*/**/*") if "weights" in str(p)
            )

        await until(downloading, "the weights to be half way down", timeout=60)
        env.kill_s3()  # S3 dies mid-download
        answer = await request
        assert answer.status_code == 503, answer.text
        assert f"'{name}' version 2" in answer.json()["message"]
        assert await serving(gateway, name) == "1"
        # no staging left; a file written aside and renamed meanwhile (version 1's metadata, as
        # it is used) is gone a moment later, a partial download never
        await asyncio.to_thread(
            wait_until,
            lambda: leftovers(settings.artifact_cache_dir) == [],
            timeout=30,
            what="no partial download left",
        )
        assert (await asyncio.to_thread(gateway.services.store.version, name, 2)).digest is None  # nothing pinned
        assert loaded(gateway.services.cache, name, 2) is None
