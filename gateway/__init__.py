"""registry-gateway: one HTTP service for every version of every model in an MLflow registry.

The layout: `protocols` (wire protocols, decoding to and encoding from the data plane),
`dataplane` (loading, the LRU, batching, predicting), `routing` (which version answers,
following the state database), `admission` (keys, scopes, limits), `http` (the rest of the
HTTP surface); `process` builds them all for one process; `app` and `cli` are the roots."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("registry-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
