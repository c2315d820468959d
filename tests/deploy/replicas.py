"""Stub replicas for the proxies' tests: what a gateway looks like from a proxy, and nothing else.

A :class:`StubReplica` answers HTTP on one port and the Open Inference Protocol's gRPC
``ModelInfer`` (gateway/protocols/proto's messages) on another, each answer naming the
replica, and records what reached it: the path or model, the request id, the ``x-model-name``
header or metadata. The proxies' own health checks (``GET /health/ready`` with no
``X-Forwarded-For``) are counted apart. What a replica does can be changed while it runs:
``status`` (503: draining), ``ready`` (what its health check answers), ``gate`` (model
requests wait on it, so they stay in flight: the load a bounded hash sees), ``stop()``
(gone: refused connections, kept-alive ones cut).
"""

from __future__ import annotations

import json
import socket
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from gateway.protocols.proto import grpc_service_pb2 as pb
from gateway.protocols.proto import grpc_service_pb2_grpc as pb_grpc

GRPC_SERVICE = "inference.GRPCInferenceService"
GATE_SECONDS = 20.0  # a held request is let go after this even if the test forgets it


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the proxies open many connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a proxy gave up on a connection (a check's deadline, a client gone): nothing to say


@dataclass
class StubReplica:
    name: str
    status: int = 200
    ready: bool = True
    gate: threading.Event | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    grpc_seen: list[dict[str, Any]] = field(default_factory=list)
    probes: int = 0
    http_port: int = 0
    grpc_port: int = 0
    _http: ThreadingHTTPServer | None = None
    _grpc: grpc.Server | None = None
    _connections: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- HTTP ------------------------------------------------------------------------

    def start(self) -> int:
        """Serve HTTP (on the port it had before, after a stop); returns the port."""
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the proxies' upstream pools expect
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def setup(self) -> None:
                super().setup()
                with replica._lock:
                    replica._connections.add(self.connection)

            def finish(self) -> None:
                with replica._lock:
                    replica._connections.discard(self.connection)
                super().finish()

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/health/ready" and "X-Forwarded-For" not in self.headers:
                    replica.probes += 1  # the proxy's own health check
                    self._send(200 if replica.ready else 503, {"replica": replica.name, "ready": replica.ready})
                    return
                request = {
                    "path": self.path,
                    "request_id": self.headers.get("X-Request-Id"),
                    "model_header": self.headers.get("X-Model-Name"),
                    "body": len(body),
                }
                replica.seen.append(request)
                gate = replica.gate
                if gate is not None and self.path != "/health/ready":
                    gate.wait(GATE_SECONDS)
                self._send(replica.status, {"replica": replica.name, **request})

            def _send(self, status: int, answer: dict[str, Any]) -> None:
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = _Server(("127.0.0.1", self.http_port), Handler)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self.http_port

    def stop(self) -> None:
        """Gone: the port refuses connections, and the kept-alive ones are cut."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None

    # --- gRPC ------------------------------------------------------------------------

    def start_grpc(self) -> int:
        """Serve ModelInfer over gRPC (h2c); returns the port."""
        replica = self

        def infer(request: pb.ModelInferRequest, context: grpc.ServicerContext) -> pb.ModelInferResponse:
            metadata = {key: value for key, value in context.invocation_metadata()}
            replica.grpc_seen.append({"model": request.model_name, "id": request.id, "metadata": metadata})
            gate = replica.gate
            if gate is not None:
                gate.wait(GATE_SECONDS)
            answer = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
            answer.parameters["replica"].string_param = replica.name
            output = answer.outputs.add(name="replica", datatype="BYTES", shape=[1])
            output.contents.bytes_contents.append(replica.name.encode())
            return answer

        handler = grpc.method_handlers_generic_handler(
            GRPC_SERVICE,
            {
                "ModelInfer": grpc.unary_unary_rpc_method_handler(
                    infer,
                    request_deserializer=pb.ModelInferRequest.FromString,
                    response_serializer=pb.ModelInferResponse.SerializeToString,
                )
            },
        )
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=16), handlers=[handler])
        self.grpc_port = self._grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        self._grpc.start()
        return self.grpc_port


def grpc_infer(channel: grpc.Channel, model: str, *, header: str | None = None) -> str:
    """A ModelInfer for `model` (with `header` as its x-model-name metadata); the replica that answered."""
    request = pb.ModelInferRequest(model_name=model, id=f"{model}-call")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1.0)
    metadata = [("x-model-name", header)] if header is not None else []
    answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=10)
    replica: str = answer.parameters["replica"].string_param
    return replica
