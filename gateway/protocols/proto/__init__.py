"""The Open Inference Protocol's gRPC service: grpc_service.proto and its generated stubs (``make protos``)."""
