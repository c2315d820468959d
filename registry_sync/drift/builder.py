"""The sync leader's pass that gives each served version its drift reference, once.

Every ``GATEWAY_DRIFT_REFERENCE_INTERVAL_SECONDS``, in the process that holds the sync lease
(one writer however many replicas: the others read the state database), :meth:`ReferenceBuilder.run_once`
looks at the versions that are or may soon be served (those an alias points at, as MLflow sets
it or as gateways serve it; a traffic split's arms; each model's latest READY version, which
its default route serves without the default alias; those loaded in this process) that are
READY and not refused, and computes the reference of each that has none for its identity:

1. its signature's input columns, from its MLmodel (read without loading the model); without
   named columns the reference fails with "no tabular signature" (no event: a property of the
   version, shown on its drift page);
2. the first source that can be used (``sources.py``: the run's training dataset, the tag,
   the artifact, in that order), read, checked against those columns and sampled; when
   sources exist and none can be used, the reference fails with each one's reason; no source
   at all: status ``none`` (the first requests served become a baseline, elsewhere);
3. the profile of that sample, and of the version's outputs on up to
   ``GATEWAY_DRIFT_OUTPUT_ROWS`` of its rows, predicted through ``predict``: this process's
   own inference path (the version's runtime, in process or in its worker). Without one (a
   process that serves no models) or when the predict fails, the reference is ready for the
   inputs and ``outputs_reason`` says why it has no outputs.

A reference is computed once per version identity. A failed one (a source that cannot be read,
columns that do not match) is written once with its reason and one ``failed`` event, and tried
again only when the version's ``gateway.drift.*`` tags change or after
``GATEWAY_DRIFT_RETRY_SECONDS``; the same failure again writes no second event. A change of
those tags recomputes a ready reference too. A baseline reference (``source_kind`` baseline) is
kept when a recomputation still finds no source.

Failure: nothing here is on a request's path; the blocking work (MLflow, files, S3, profiling)
runs in a thread, the predict in the version's own executor. MLflow or the artifact store not
answering about a version (its run, its MLmodel, its artifacts) decides nothing: the version
is left for the next pass, warned once (registry_sync/periodic.py ``Outage``). The state
database unavailable ends the pass (Periodic logs it) and the next interval tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio.to_thread
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from registry_sync.artifacts import ArtifactStore, uri_within
from registry_sync.drift.profile import Profile, output_frame, profile_columns
from registry_sync.drift.references import FAILED, NONE, READY, Reference, ReferenceStore
from registry_sync.drift.sources import (
    ARTIFACT_PATHS,
    NO_SIGNATURE,
    TAG,
    Located,
    NoTabularSignature,
    Table,
    Unusable,
    read_reference,
    signature_columns,
    training_dataset,
)
from registry_sync.errors import ArtifactLocationRefused, RegistryError, RegistryUnavailable, described
from registry_sync.identity import VersionId
from registry_sync.periodic import Outage, Periodic
from registry_sync.repository import EventKind, StateStore, VersionState

log = logging.getLogger(__name__)

TAG_PREFIX = "gateway.drift."
PREDICT_CHUNK_ROWS = 1_000
"""Rows per predict call for the output profile: a worker's message stays small."""

Predict = Callable[[VersionId, pd.DataFrame], Awaitable[object]]
"""The version's predictions for a DataFrame of its signature's columns."""

NO_SOURCE = (
    "no reference: the version's run logged no training dataset the gateway can read (a local or S3 "
    f"Parquet or CSV file, mlflow.log_input(..., context='training')), it has no {TAG} tag and no "
    f"{' or '.join(ARTIFACT_PATHS)} artifact; the first requests it serves become its baseline"
)


class NotThere(Exception):
    """The version has no artifact at that path: the next source is tried."""


@dataclass(frozen=True, slots=True)
class ReferenceLimits:
    rows: int = 100_000  # GATEWAY_DRIFT_REFERENCE_ROWS
    max_bytes: int = 1024 * 2**20  # GATEWAY_DRIFT_REFERENCE_MAX_MB
    output_rows: int = 10_000  # GATEWAY_DRIFT_OUTPUT_ROWS
    bins: int = 10  # GATEWAY_DRIFT_BINS
    max_categories: int = 50  # GATEWAY_DRIFT_MAX_CATEGORIES
    retry_seconds: float = 3600.0  # GATEWAY_DRIFT_RETRY_SECONDS


def drift_tags_digest(tags: Mapping[str, str]) -> str:
    """sha256 of the version's ``gateway.drift.*`` tags: what, changed, recomputes a reference
    (other tags, such as the write-back's ``gateway.production``, change without meaning it)."""
    drift = sorted((key, value) for key, value in tags.items() if key.startswith(TAG_PREFIX))
    return hashlib.sha256(json.dumps(drift).encode()).hexdigest()


class ReferenceBuilder:
    def __init__(
        self,
        state: StateStore,
        references: ReferenceStore,
        artifacts: ArtifactStore,
        client: MlflowClient,
        *,
        limits: ReferenceLimits,
        scratch: Path,
        interval_seconds: float,
        predict: Predict | None,
        no_predict_reason: str = "this process serves no models (--role sync): no outputs were predicted",
        leading: Callable[[], bool] = lambda: True,
        loaded: Callable[[], Iterable[VersionId]] = list,
        actor: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self._references = references
        self._artifacts = artifacts
        self._client = client
        self._limits = limits
        self._scratch = scratch
        self._predict = predict
        self._no_predict_reason = no_predict_reason
        self._loaded = loaded
        self._actor = actor
        self._clock = clock
        self._outage = Outage(  # MLflow or the artifact store not answering about a version
            log,
            "drift references not computed now (MLflow or the artifact store did not answer; trying again each pass)",
            "computing drift references again",
        )
        self._loop = Periodic("computing drift references", interval_seconds, self.run_once, log=log, when=leading)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def run_once(self) -> list[Reference]:
        """One pass: the references computed (and saved) for the served versions due one. A
        version whose sources MLflow or the artifact store could not be asked about now is
        left for the next pass (warned once, until a version's sources can be asked again)."""
        due = await anyio.to_thread.run_sync(self._due)
        computed = []
        for state, existing in due:
            try:
                reference = await self.build(state)
            except RegistryError as exc:
                self._outage.failed(f"{state.id}: {exc}")
                continue
            self._outage.passed()
            computed.append(await anyio.to_thread.run_sync(self._keep, reference, existing))
        return computed

    def _due(self) -> list[tuple[VersionState, Reference | None]]:
        snapshot = self._state.snapshot()
        served = {(route.name, route.version) for route in snapshot.routes.values()}
        served |= {(route.name, route.active_version) for route in snapshot.routes.values() if route.active_version}
        served |= {(model.name, version) for model in snapshot.traffic.values() for version in model.arms}
        served |= {(version.name, version.version) for version in self._loaded()}
        latest: dict[str, int] = {}  # what a model without its default alias serves
        for (name, number), held in snapshot.versions.items():
            if held.ready and not held.refused_reason and number > latest.get(name, 0):
                latest[name] = number
        served |= set(latest.items())
        known = {
            (reference.version.name, reference.version.version): reference for reference in self._references.list()
        }
        gone = [key for key in known if (kept := snapshot.versions.get(key)) is None or kept.deleted]
        if gone:
            self._references.forget(gone)  # deleted from the registry: its reference goes with it
        now = self._clock()
        due = []
        for key in sorted(served):
            state = snapshot.versions.get(key)
            if state is None or not state.ready or state.refused_reason:
                continue
            existing = known.get(key)
            if existing is not None and not existing.version.same_version(state.id):
                existing = None  # another version that had the number
            if self._is_due(state, existing, now):
                due.append((state, existing))
        return due

    def _is_due(self, state: VersionState, existing: Reference | None, now: float) -> bool:
        if existing is None:
            return True
        if existing.tags_digest != drift_tags_digest(state.tags):
            return True
        return existing.status == FAILED and now >= existing.computed_at + self._limits.retry_seconds

    async def build(self, state: VersionState) -> Reference:
        """The reference of one version (computed, not saved). MLflow or the artifact store
        unavailable raises RegistryError: nothing is decided, the next pass tries again."""
        version, digest = state.id, drift_tags_digest(state.tags)
        now = self._clock()
        try:
            located, table = await anyio.to_thread.run_sync(self._read, state)
        except NoTabularSignature as exc:
            return Reference(version, FAILED, now, reason=str(exc), tags_digest=digest)
        except Unusable as exc:
            kind, uri = (exc.located.kind, exc.located.uri) if exc.located else (None, None)
            return Reference(version, FAILED, now, kind, uri, reason=str(exc), tags_digest=digest)
        if located is None or table is None:
            return Reference(version, NONE, now, reason=NO_SOURCE, tags_digest=digest)
        inputs = profile_columns(table.frame, bins=self._limits.bins, max_categories=self._limits.max_categories)
        outputs, outputs_reason = await self._outputs(version, table.frame)
        profile = Profile(inputs, outputs, rows=len(table.frame), sampled_from=table.sampled_from)
        return Reference(
            version,
            READY,
            now,
            source_kind=located.kind,
            source_uri=located.uri,
            profile=profile,
            outputs_reason=outputs_reason,
            tags_digest=digest,
        )

    def _read(self, state: VersionState) -> tuple[Located | None, Table | None]:
        """The first of the version's sources that can be used, read (blocking). When sources
        exist and none can be used, Unusable about the first, with every one's reason."""
        try:
            metadata = self._artifacts.metadata(state.id, digest=state.digest)
        except ArtifactLocationRefused as exc:
            raise Unusable(f"its MLmodel was not read: {exc}") from exc
        columns = signature_columns(metadata.model)
        self._scratch.mkdir(parents=True, exist_ok=True)
        failures: list[Unusable] = []
        with tempfile.TemporaryDirectory(dir=self._scratch, prefix="drift-") as directory:
            for located in self._sources(state):
                try:
                    return located, self._read_one(state, located, columns, Path(directory))
                except NotThere:
                    continue
                except Unusable as exc:
                    failures.append(Unusable(str(exc), located))
        if not failures:
            return None, None
        if len(failures) == 1:
            raise failures[0]
        reasons = "; ".join(
            f"{failure.located.kind} {failure.located.uri}: {failure}" for failure in failures if failure.located
        )
        raise Unusable(f"no source could be used ({reasons})", failures[0].located)

    def _sources(self, state: VersionState) -> list[Located]:
        """The version's sources, in the order they are tried: its run's training dataset, the
        tag, the artifact paths (those are only looked for when read)."""
        found = []
        if state.run_id:
            try:
                run = self._client.get_run(state.run_id)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise RegistryUnavailable(f"reading the version's run {state.run_id}: {described(exc)}") from exc
                run = None  # the run was deleted: its datasets with it
            except Exception as exc:  # requests' errors: MLflow unreachable
                raise RegistryUnavailable(f"reading the version's run {state.run_id}: {described(exc)}") from exc
            if (dataset := training_dataset(run)) is not None:
                found.append(dataset)
        if tagged := state.tags.get(TAG, "").strip():
            found.append(Located("tag", tagged))
        found.extend(Located("artifact", path) for path in ARTIFACT_PATHS)
        return found

    def _read_one(self, state: VersionState, located: Located, columns: list[str], directory: Path) -> Table:
        """One source read; an absent artifact is NotThere (the next source is tried)."""
        local: Path | None = None
        if located.kind == "artifact":
            try:
                local = self._artifacts.fetch_file(state.id, located.uri, directory)
            except ArtifactLocationRefused as exc:
                raise Unusable(str(exc)) from exc
            except RegistryError:
                raise
            except Exception as exc:  # MLflow's artifact repositories raise their own and requests' errors
                raise RegistryUnavailable(f"looking for the artifact {located.uri}: {described(exc)}") from exc
            if local is None:
                raise NotThere()
        else:
            self._check_location(located)
        return read_reference(
            str(local) if local is not None else located.uri,
            columns=columns,
            rows=self._limits.rows,
            max_bytes=self._limits.max_bytes,
            scratch=directory,
            name=located.uri,
        )

    def _check_location(self, located: Located) -> None:
        """A file named by a run or a tag is read only where the version's own artifacts may be
        (GATEWAY_ALLOWED_ARTIFACT_URIS, when set): a tag must not make the leader read any file."""
        allowed = self._artifacts.allowed_uris
        if allowed and not any(uri_within(located.uri, prefix) for prefix in allowed):
            raise Unusable(f"{located.uri} is outside GATEWAY_ALLOWED_ARTIFACT_URIS", located)

    async def _outputs(self, version: VersionId, frame: pd.DataFrame) -> tuple[tuple[Any, ...], str | None]:
        rows = min(self._limits.output_rows, len(frame))
        if rows == 0:
            return (), "GATEWAY_DRIFT_OUTPUT_ROWS is 0: no outputs were predicted"
        if self._predict is None:
            return (), self._no_predict_reason
        parts = []
        try:
            for start in range(0, rows, PREDICT_CHUNK_ROWS):
                chunk = frame.iloc[start : min(start + PREDICT_CHUNK_ROWS, rows)].reset_index(drop=True)
                parts.append(output_frame(await self._predict(version, chunk)))
        except Exception as exc:  # the model's, the runtime's or the load's: the inputs still count
            log.warning("%s: no output profile for its drift reference: %s", version, described(exc))
            return (), f"predicting on the reference failed: {described(exc)}"
        outputs = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        columns = profile_columns(outputs, bins=self._limits.bins, max_categories=self._limits.max_categories)
        if not columns:
            return (), "the version's outputs are not a table of numbers or categories"
        return columns, None

    def _keep(self, reference: Reference, existing: Reference | None) -> Reference:
        """Save ``reference``, with one event when it newly failed (or failed otherwise) and one
        when it is ready after a failure (blocking)."""
        version = reference.version
        if reference.status == NONE and existing is not None and existing.weaker and existing.status == READY:
            reference = replace(existing, tags_digest=reference.tags_digest)  # still no better source
        self._references.save(reference)
        if reference.status == FAILED and not (reference.reason or "").startswith(NO_SIGNATURE):
            if existing is None or existing.status != FAILED or existing.reason != reference.reason:
                self._state.record(
                    EventKind.FAILED,
                    version.name,
                    version=version.version,
                    reason=f"drift reference: {reference.reason}",
                    actor=self._actor,
                )
        elif reference.status == READY and existing is not None and existing.status == FAILED:
            self._state.record(
                EventKind.RECOVERED,
                version.name,
                version=version.version,
                reason=f"drift reference ready from {reference.source_kind} {reference.source_uri}",
                actor=self._actor,
            )
        log.info("%s: drift reference %s %s", version, reference.status, reference.reason or reference.source_uri)
        return reference
