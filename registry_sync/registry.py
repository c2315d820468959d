"""A read-only view of the MLflow model registry, in our own plain types.

Everything MLflow-specific about reading the registry lives here: paging, version
numbers as strings, the alias map living on the registered model (not on versions),
and MLflow's exceptions, which are wrapped into :mod:`registry_sync.errors`.
All methods block; callers run them in threads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry_sync.errors import RegisteredModelNotFound, RegistryError, RegistryUnavailable
from registry_sync.identity import VersionId

log = logging.getLogger(__name__)

READY = "READY"
# The version tag the leader's write-back sets (registry_sync/writeback.py): the gateway's own
# figures, changed every write-back interval. Not read into the state database: following it
# would make a tags_changed event and a new generation per version at every write.
PRODUCTION_TAG = "gateway.production"

_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
# A name MLflow rejects outright (``a:b``, ``..``) cannot name a model: not found, not an outage.
_NAMED_NOT_FOUND_CODES = _NOT_FOUND_CODES | {"INVALID_PARAMETER_VALUE"}


@dataclass(frozen=True, slots=True)
class VersionRecord:
    name: str
    version: int
    status: str
    source: str
    run_id: str | None
    created_ms: int | None
    updated_ms: int | None
    description: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status == READY

    @property
    def id(self) -> VersionId:
        return VersionId(self.name, self.version, self.source, self.created_ms)


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One registered model as the registry showed it at one moment."""

    name: str
    description: str
    aliases: dict[str, int]
    tags: dict[str, str]
    versions: dict[int, VersionRecord]
    created_ms: int | None = None
    updated_ms: int | None = None
    """MLflow moves it when a version is created or deleted (not for aliases or tags)."""
    versions_read: bool = True
    """False when only the model was read (its aliases), not its versions."""

    @property
    def latest_ready(self) -> int | None:
        ready = [v for v, record in self.versions.items() if record.ready]
        return max(ready) if ready else None

    @property
    def stamp(self) -> tuple[int | None, int | None]:
        """What changes when the model's set of versions does (or the model is re-created)."""
        return self.created_ms, self.updated_ms


@contextmanager
def _boundary(name: str | None = None) -> Iterator[None]:
    """Turn whatever the MLflow client raises into our errors."""
    try:
        yield
    except RegistryError:
        raise
    except MlflowException as exc:
        if name is not None and exc.error_code in _NAMED_NOT_FOUND_CODES:
            raise RegisteredModelNotFound(name) from exc
        raise RegistryUnavailable(f"{exc.error_code}: {exc.message}") from exc
    except Exception as exc:  # requests, SQLAlchemy, OSError: the registry is unreachable
        raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from exc


class RegistryReader:
    """Reads registered models, versions and aliases from one MLflow registry."""

    def __init__(self, *, tracking_uri: str | None = None, registry_uri: str | None = None) -> None:
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
        self.tracking_uri: str = self._client._tracking_client.tracking_uri
        self.registry_uri: str = self._client._registry_uri or self.tracking_uri
        # Whether the registry takes ``name IN (...)`` in a version search: MLflow 3 does; 2.x
        # answers INVALID_PARAMETER_VALUE ("Only the 'run_id' attribute supports comparison with
        # a list"). Unknown until asked; then one search per name for a 2.x registry.
        self._name_lists: bool | None = None

    def model_names(self) -> list[str]:
        with _boundary():
            return sorted(model.name for model in self._paged_models())

    def all_models(self) -> list[ModelRecord]:
        """Every model with its versions and aliases, in two paged calls whatever the size."""
        with _boundary():
            registered = list(self._paged_models())
            versions: dict[str, dict[int, VersionRecord]] = {}
            for record in self._paged_versions(None):
                versions.setdefault(record.name, {})[record.version] = record
        return [_model_record(model, versions.get(model.name, {})) for model in registered]

    def registered_models(self) -> list[ModelRecord]:
        """Every model with its aliases but not its versions (``versions_read`` False): one
        paged call that costs per model, not per version."""
        with _boundary():
            return [_model_record(model, {}, versions_read=False) for model in self._paged_models()]

    def versions_of(self, names: Iterable[str]) -> dict[str, dict[int, VersionRecord]]:
        """The versions of these models, a batch of names per call."""
        wanted = sorted(set(names))
        found: dict[str, dict[int, VersionRecord]] = {name: {} for name in wanted}
        with _boundary():
            for start in range(0, len(wanted), _NAMES_PER_CALL):
                for record in self._versions_named(wanted[start : start + _NAMES_PER_CALL]):
                    if record.name in found:
                        found[record.name][record.version] = record
        return found

    def _versions_named(self, batch: list[str]) -> list[VersionRecord]:
        """The versions of a batch of models: one search where the registry takes a list of
        names, one per name where it does not (an MLflow 2.x server)."""
        if self._name_lists is not False:
            quoted = ", ".join(_quote(name) for name in batch)
            try:
                records = list(self._paged_versions(None, filter_string=f"name IN ({quoted})"))
            except MlflowException as exc:
                if self._name_lists or not _refuses_name_lists(exc):
                    raise
                log.info("the registry %s takes no list of names (MLflow 2.x): one search per model", self.registry_uri)
                self._name_lists = False
            else:
                self._name_lists = True
                return records
        return [record for name in batch for record in self._paged_versions(name)]

    def get_model(self, name: str) -> ModelRecord:
        with _boundary(name):
            model = self._client.get_registered_model(name)
            versions = list(self._paged_versions(name))
        return _model_record(model, {record.version: record for record in versions})

    def download_uri(self, name: str, version: int) -> str:
        """Where the artifacts of a version really are (MLflow 3 sources are ``models:/m-...``)."""
        with _boundary(name):
            return str(self._client.get_model_version_download_uri(name, str(version)))

    def _paged_models(self) -> Iterator[Any]:
        token: str | None = None
        while True:
            page = self._client.search_registered_models(max_results=200, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _paged_versions(self, name: str | None, *, filter_string: str | None = None) -> Iterator[VersionRecord]:
        """Versions of one model, of the models ``filter_string`` names, or of every model."""
        if filter_string is None:
            filter_string = "" if name is None else f"name={_quote(name)}"
        token: str | None = None
        while True:
            page = self._client.search_model_versions(filter_string=filter_string, max_results=1000, page_token=token)
            for mv in page:
                if name is not None and mv.name != name:
                    continue
                yield VersionRecord(
                    name=mv.name,
                    version=int(mv.version),
                    status=str(mv.status),
                    source=str(mv.source),
                    run_id=mv.run_id,
                    created_ms=mv.creation_timestamp,
                    updated_ms=mv.last_updated_timestamp,
                    description=mv.description or "",
                    tags={key: value for key, value in (mv.tags or {}).items() if key != PRODUCTION_TAG},
                )
            token = page.token
            if not token:
                return


_NAMES_PER_CALL = 100  # models per search_model_versions call when reading some models


def _refuses_name_lists(exc: MlflowException) -> bool:
    """MLflow 2.x's answer to ``name IN (...)`` in a version search."""
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "list" in str(exc.message)


def _quote(name: str) -> str:
    return "'{}'".format(name.replace("'", "\\'"))


def _model_record(model: Any, versions: dict[int, VersionRecord], *, versions_read: bool = True) -> ModelRecord:
    return ModelRecord(
        name=model.name,
        description=model.description or "",
        aliases={alias: int(version) for alias, version in (model.aliases or {}).items()},
        tags=dict(model.tags or {}),
        versions=versions,
        created_ms=model.creation_timestamp,
        updated_ms=model.last_updated_timestamp,
        versions_read=versions_read,
    )
