"""The KServe Python SDK's inference clients, driven over stdin/stdout by test_oip_kserve.py.

The ``kserve`` package pins protobuf < 7 and pandas < 3, which the gateway's own environment
cannot take, so it lives in ``.venv-kserve`` (``make kserve-env``) and this script runs there,
as a subprocess of the test, for as long as the test module needs it. The first line on stdin
names the gateway (``{"rest": "http://127.0.0.1:8000", "grpc": "127.0.0.1:8001"}``: the test
starts this script first, so that importing the SDK overlaps the gateway's start); each line
after it is one call as JSON, and each line on stdout its outcome as JSON: ``{"ok": ...}``, or
``{"error": ...}`` with what the SDK raised. Nothing here knows the gateway: it calls the SDK the way its
users do (``InferenceRESTClient`` with ``protocol="v2"``, ``InferenceGRPCClient``, requests
built from ``InferInput`` and ``InferRequest``) and reports what the SDK hands back.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import RequestedOutput
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse


class Driver:
    def __init__(self, rest_url: str, grpc_address: str) -> None:
        self.rest_url = rest_url
        self.rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=60))
        # retries=0: the test wants to see the first answer, not the third
        self.grpc = InferenceGRPCClient(grpc_address, retries=0, timeout=60)
        # The SDK's clients have no model metadata call and no version on ModelReady; the SDK's
        # generated gRPC stubs and its REST data models have both: what a KServe user reaches for.
        self.channel = grpc.aio.insecure_channel(grpc_address)
        self.stub = GRPCInferenceServiceStub(self.channel)
        self.http = httpx.AsyncClient(base_url=rest_url, timeout=60)

    async def close(self) -> None:
        await self.rest.close()
        await self.grpc.close()
        await self.channel.close()
        await self.http.aclose()

    async def server(self, transport: str) -> dict[str, Any]:
        if transport == "rest":
            return {
                "live": await self.rest.is_server_live(self.rest_url),
                "ready": await self.rest.is_server_ready(self.rest_url),
            }
        return {"live": await self.grpc.is_server_live(), "ready": await self.grpc.is_server_ready()}

    async def model_ready(self, transport: str, model: str, version: str | None) -> bool:
        if transport == "rest":
            # the REST client builds /v2/models/{name}/ready and has no version argument: a
            # version goes in the gateway's X-Model-Version header, which it passes on
            headers = {"X-Model-Version": version} if version else None
            return bool(await self.rest.is_model_ready(self.rest_url, model, headers=headers))
        if version is None:
            return bool(await self.grpc.is_model_ready(model))
        answer = await self.stub.ModelReady(pb.ModelReadyRequest(name=model, version=version), timeout=60)
        return bool(answer.ready)

    async def model_metadata(self, transport: str, model: str, version: str | None) -> dict[str, Any]:
        if transport == "rest":
            path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
            answer = await self.http.get(path)
            answer.raise_for_status()
            # KServe's own data model for the answer: it must parse, and this is what it read
            return ModelMetadataResponse.model_validate_json(answer.content).model_dump(exclude_none=True)
        message = await self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model, version=version or ""), timeout=60)
        return {
            "name": message.name,
            "versions": list(message.versions),
            "platform": message.platform,
            "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in message.inputs],
            "outputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in message.outputs],
        }

    async def infer(
        self,
        transport: str,
        model: str,
        version: str | None,
        inputs: list[dict[str, Any]],
        binary: bool,
        outputs: list[str] | None = None,
        id: str | None = None,  # noqa: A002 - the protocol's name for it
    ) -> dict[str, Any]:
        tensors = []
        for spec in inputs:
            tensor = InferInput(spec["name"], spec["shape"], spec["datatype"])
            data = np.asarray(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])
            tensor.set_data_from_numpy(data, binary_data=binary)
            tensors.append(tensor)
        requested = (
            [RequestedOutput(name, {"binary_data": True} if binary else None) for name in outputs] if outputs else None
        )
        if transport == "rest":
            headers = {"X-Model-Version": version} if version else None
            seen: dict[str, str] = {}
            request = InferRequest(model, tensors, request_id=id, request_outputs=requested)
            response = await self.rest.infer(self.rest_url, request, model, headers=headers, response_headers=seen)
            # InferResponse.from_bytes reads no model_version; the gateway's header says it
            served = seen.get("x-model-version")
        else:
            request = InferRequest(model, tensors, request_id=id, request_outputs=requested, model_version=version)
            response = await self.grpc.infer(request)
            served = response.model_version
        return {
            "model_name": response.model_name,
            "model_version": served,
            "id": response.id,
            "outputs": [
                {
                    "name": output.name,
                    "datatype": output.datatype,
                    "shape": list(output.shape),
                    "dtype": str(output.as_numpy().dtype),
                    "data": output.as_numpy().tolist(),
                }
                for output in response.outputs
            ],
        }


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, httpx.HTTPStatusError):
        return {"type": "HTTPStatusError", "status": exc.response.status_code, "message": str(exc)}
    if isinstance(exc, grpc.aio.AioRpcError):
        return {"type": "RpcError", "code": exc.code().name, "message": exc.details() or ""}
    return {"type": type(exc).__name__, "message": str(exc)}


async def main() -> None:
    loop = asyncio.get_running_loop()
    gateway = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    driver = Driver(gateway["rest"], gateway["grpc"])
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            call = json.loads(line)
            try:
                outcome: dict[str, Any] = {"ok": await getattr(driver, call.pop("call"))(**call)}
            except Exception as exc:  # noqa: BLE001 - reported to the test, which judges it
                outcome = {"error": _error(exc)}
            sys.stdout.write(json.dumps(outcome) + "\n")
            sys.stdout.flush()
    finally:
        await driver.close()


if __name__ == "__main__":
    asyncio.run(main())
