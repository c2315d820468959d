"""Protocol adapters: each wire protocol decodes to, and encodes from, the data plane.

They stand above the process (``gateway.process.Services``) and use it; what their bodies
are as data is :mod:`gateway.wire`, below the data plane, which uses it too.

The data plane (``gateway.dataplane.predictor``, ``batching``, ``inference``, ``cache``; with
``gateway.routing.catalog`` to choose) chooses a version, leases it, queues and predicts, and
knows nothing of the wire. An
adapter reads its protocol's request, asks the service for the version, hands it the work
to run against the leased model (``InferenceService.call``) and writes the answer:

- MLflow's scoring protocol: ``gateway.protocols.mlflow_predict`` (the bare-ASGI lane) with
  ``gateway.wire.mlflow_scoring`` (its bodies), and ``gateway.protocols.mlflow_routes`` (the
  same routes declared to FastAPI, for /docs);
- the Open Inference Protocol (KServe V2) over REST: :mod:`gateway.protocols.oip_rest`,
  with its tensors and the binary extension in :mod:`gateway.wire.oip_codec`;
- the same protocol over gRPC: :mod:`gateway.protocols.oip_grpc` (the same codec), on the
  stubs in :mod:`gateway.protocols.proto`, started by the app's lifespan beside HTTP.
"""
