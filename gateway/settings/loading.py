"""What the gateway agrees to load and decode: flavors, pickles, artifact locations, body sizes."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from gateway.runtimes.policy import TESTED_FLAVORS
from gateway.settings.section import SettingsSection, comma_list


class LoadingSettings(SettingsSection):
    """What the gateway agrees to load and decode: flavors, pickles, artifact locations, body sizes."""

    allowed_flavors: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(TESTED_FLAVORS))
    """Comma-separated flavors a version may load with (the one whose loader MLflow runs:
    ``sklearn``, ``xgboost``, ``transformers``..., ``python_function`` for a PythonModel or
    models-from-code, ``custom_loader`` for a loader module of the model's own); ``*`` allows
    every flavor. Default: every flavor of the tested matrix (docs/user-guide.md: Flavors), not
    ``custom_loader`` nor flavors the gateway is not tested with. Another flavor answers 409
    naming this setting, and ``/events`` has a ``refused`` event."""

    allow_pickle: bool = True
    """``false``: refuse (409, an event) versions whose loading unpickles bytes: scikit-learn
    saved with pickle or cloudpickle, PyTorch saved with ``torch.save``, a pickled PythonModel,
    statsmodels, a LightGBM scikit-learn model, transformers weights in ``.bin`` files, a skops
    model that trusts types its own MLmodel lists. On by default because MLflow's
    default for many flavors is pickle: it trusts whoever can write the registry and its
    artifact store to run code in the gateway (docs/security.md: "What the gateway loads")."""

    allowed_artifact_uris: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated URI prefixes (``s3://models/``, ``mlflow-artifacts:/``,
    ``file:///srv/mlruns/``) that versions' artifacts must lie under; a version elsewhere is
    refused (409, an event) before anything is downloaded. Empty (the default): anywhere the
    registry points."""

    max_body_rows: int = Field(default=100_000, ge=1)
    """Most rows a CSV or Parquet request body may hold; more answers 413."""

    max_decoded_mb: float = Field(default=256, gt=0)
    """Most memory, in MiB, a CSV or Parquet request body may take once decoded (a small
    compressed Parquet file can decode to gigabytes: its metadata is checked first); more
    answers 413."""

    @field_validator("allowed_flavors")
    @classmethod
    def _some_flavor(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one flavor (or '*' for any)")
        return value

    @field_validator("allowed_artifact_uris")
    @classmethod
    def _uri_prefixes(cls, value: list[str]) -> list[str]:
        for prefix in value:
            if ":" not in prefix and not prefix.startswith("/"):
                raise ValueError(f"'{prefix}' is not a URI prefix (s3://bucket/path, mlflow-artifacts:/, file:///dir)")
        return value

    @property
    def max_decoded_bytes(self) -> int:
        return int(self.max_decoded_mb * 1024 * 1024)

    @field_validator("allowed_flavors", "allowed_artifact_uris", mode="before")
    @classmethod
    def _split_flavors_and_uris(cls, value: object) -> object:
        return comma_list(value)
