"""The HTTP surface besides the predict lanes: model and control routes, health, the
OpenAPI pages and their examples, reading a request's body within its limits
(``request_body``), and the one place errors become HTTP (``errors``). The JSON these routes
answer with is :mod:`gateway.wire.api_schemas`."""
