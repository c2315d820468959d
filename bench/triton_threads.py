"""Threads sharing one tritonclient gRPC client, the way most tritonclient users call a server.

``--connections`` threads (the name matches bench/grpc_load.py's arguments) each call
``InferenceServerClient.infer`` in a closed loop on ONE client, hence one channel and one
HTTP/2 connection. The request is the one in ``--body-file`` (a serialized
``ModelInferRequest``): its model, version and inputs are read from it and sent through
tritonclient's own API, raw contents as tritonclient always sends. ``--shared`` is accepted
and implied. Prints the same JSON object as bench/grpc_load.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from grpc_load import _cpu_seconds, summary  # noqa: E402

from gateway.protocols.proto import grpc_service_pb2 as pb  # noqa: E402

_DTYPES = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32}


def inputs_of(message: pb.ModelInferRequest) -> list[triton.InferInput]:
    inputs = []
    for spec, raw in zip(message.inputs, message.raw_input_contents, strict=True):
        array = np.frombuffer(raw, dtype=_DTYPES[spec.datatype]).reshape(list(spec.shape))
        tensor = triton.InferInput(spec.name, list(spec.shape), spec.datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def drive(target: str, message: pb.ModelInferRequest, *, threads: int, duration: float) -> dict[str, object]:
    client = triton.InferenceServerClient(target)
    inputs = inputs_of(message)
    latencies: list[float] = []
    errors: list[str] = []
    client.infer(message.model_name, inputs, model_version=message.model_version)  # raises if it cannot
    cpu = _cpu_seconds()
    started = time.perf_counter()
    deadline = started + duration

    def loop() -> None:
        while time.perf_counter() < deadline:
            begun = time.perf_counter()
            try:
                client.infer(message.model_name, inputs, model_version=message.model_version, client_timeout=5)
            except Exception as exc:  # noqa: BLE001 - counted and the first one shown, as grpc_load does
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - begun)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result = summary(latencies, errors, started=started, cpu=cpu)
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--body-file", type=Path, required=True, help="A serialized ModelInferRequest.")
    parser.add_argument("--connections", type=int, default=16, help="Threads sharing the one client.")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--shared", action="store_true", help="Implied: there is one client.")
    args = parser.parse_args()
    message = pb.ModelInferRequest.FromString(args.body_file.read_bytes())
    print(json.dumps(drive(args.target, message, threads=args.connections, duration=args.duration)))


if __name__ == "__main__":
    main()
