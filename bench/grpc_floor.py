"""The gRPC floor: what grpc.aio itself costs a unary call on one core, for the gateway's gRPC
rows to be read against (issue 28).

An asyncio gRPC server with one generic handler for ``inference.GRPCInferenceService/
ModelInfer`` that takes the request as bytes, ignores it and answers a constant serialized
``ModelInferResponse`` (one FP64 output, the shape of the gateway's answer): no protobuf
parsing, no model. The server options are the gateway's (``grpc.so_reuseport``, message
limits). Run by the bench: ``python bench/grpc_floor.py --port N``; it prints ``ready`` once
it listens and serves until it is terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gateway.protocols.proto import grpc_service_pb2 as pb  # noqa: E402

METHOD = "ModelInfer"
SERVICE = "inference.GRPCInferenceService"


def constant_answer() -> bytes:
    answer = pb.ModelInferResponse(model_name="iris", model_version="1", id="")
    answer.outputs.add(name="predict", datatype="FP64", shape=[1])
    answer.raw_output_contents.append(struct.pack("<d", 2.0))
    return answer.SerializeToString()


async def serve(port: int) -> None:
    answer = constant_answer()

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {METHOD: grpc.unary_unary_rpc_method_handler(infer)},  # bytes in, bytes out
    )
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.so_reuseport", 1)]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
