"""Looking at a replica never changes what it holds: the pages and listings a person or a
monitor reads (/status, /models, /models/<name>, a version's detail, /fleet, OIP metadata and
readiness over REST and gRPC) show what is held and what MLflow points at, and load nothing. A sync process and a
``--role gateway`` replica share one state database over a real registry."""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest

from gateway.protocols.proto import grpc_service_pb2 as pb
from gateway.protocols.proto import grpc_service_pb2_grpc as pb_grpc
from registry_sync.repository import EventKind
from tests.conftest import empty_registry
from tests.gateway.fleet.processes import ADMIN, fleet_settings, process
from tests.support.models import Doubler, log_pyfunc
from tests.support.servers import free_port
from tests.support.versions import loaded_keys

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}
_names = itertools.count()


async def test_reading_a_replica_loads_nothing_and_a_later_predict_still_serves(tmp_path: Path) -> None:
    registry = empty_registry(tmp_path / "registry")
    names = []
    for _ in range(2):
        name = f"read-{next(_names):02d}"
        version = registry.log(log_pyfunc, name, Doubler())
        registry.client.set_registered_model_alias(name, "champion", str(version))
        names.append(name)
    grpc_port = free_port()
    async with (
        process(fleet_settings(tmp_path, "sync:8001", "sync"), registry) as sync,
        process(fleet_settings(tmp_path, "g1:8000", "gateway", grpc_port=grpc_port), registry) as replica,
    ):
        assert (await sync.client.post("/admin/sync", headers=ADMIN)).status_code == 200
        await replica.services.catalog.refresh()
        assert loaded_keys(replica.services.cache) == []  # a new fleet replica warms nothing
        first = names[0]
        reads = [
            "/status",
            "/models",
            f"/models/{first}",
            f"/models/{first}/versions/champion",
            f"/models/{first}/versions/1",
            "/fleet",
            f"/v2/models/{first}",
            f"/v2/models/{first}/versions/champion",
            f"/v2/models/{first}/ready",
        ]
        for path in reads:
            response = await replica.client.get(path)
            assert response.status_code == 200, (path, response.text)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ModelReady(pb.ModelReadyRequest(name=first))).ready
            assert (await stub.ModelMetadata(pb.ModelMetadataRequest(name=first, version="champion"))).versions == ["1"]
        shown = (await replica.client.get(f"/models/{first}")).json()
        assert shown["registry_aliases"] == {"champion": 1} and shown["default_version"] == 1
        assert all(v["loaded"] is None for v in shown["versions"])  # shown as not held
        await replica.services.reconciler.settle()
        assert loaded_keys(replica.services.cache) == []
        assert replica.services.catalog.held(first, "champion") is None  # not taken over either
        loads = [e for e in replica.services.store.events(name=None, limit=200) if e.name in names]
        assert [e for e in loads if e.kind in (EventKind.WARMED, EventKind.SWAPPED)] == []
        # the fleet's holdings say the same: nothing held on g1
        fleet = (await replica.client.get("/fleet")).json()
        assert {m["name"] for m in fleet["models"]} & set(names) == set()
        # and a request still takes its alias over and is served
        response = await replica.client.post(f"/models/{first}/predict", json=X)
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == "1"
        assert loaded_keys(replica.services.cache) == [(first, 1)]
