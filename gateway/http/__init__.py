"""The HTTP surface besides the predict lanes: model and control routes, health, the
OpenAPI pages and their examples, and the one place errors become HTTP (``errors``)."""
