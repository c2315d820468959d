"""registry-gateway's data plane: HTTP, the model cache, loading and predicting."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("registry-gateway")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
