"""Production figures written back to MLflow by the sync leader.

Every ``GATEWAY_MLFLOW_WRITEBACK_SECONDS`` the process that holds the sync lease (and only it:
one writer however many replicas) reads what every serving process published per version
(``registry_sync/figures.py``) and, for each version answered since its last write, logs to
MLflow in one batch per version:

- metrics ``production_requests`` (requests answered since the last write, over the fleet),
  ``production_error_rate`` (the share of them answered 5xx) and ``production_p99_ms`` (from
  the fleet's summed latency buckets), plus whatever each figure provider adds (live quality:
  ``production_accuracy``...). They go through a run of the experiment
  ``GATEWAY_MLFLOW_WRITEBACK_EXPERIMENT`` named ``<model> v<version>`` (made when first
  needed), linked to the version's LoggedModel (``model_id``) when it has one: MLflow 3 shows
  them on the model's page and in ``MlflowClient().get_logged_model(id).metrics``. A version
  registered without a LoggedModel (MLflow 2.x) keeps them on that run alone.
- the version tag ``gateway.production``: the latest figures and their time, as one JSON
  object, on the version's page and ``get_model_version`` (the sync does not follow this tag:
  ``registry_sync/registry.py``).

The window of a write is the time since the previous successful write of that version: each
process's published counts are totals since it started, so the leader logs the difference from
the totals the last logged window reached, which the state database keeps
(``registry_sync/writeback_marks.py``), not the leader's memory: a new leader goes on from
there. Exactly once as MLflow shows it: a window is recorded as begun (its step: seconds since
the epoch, above the last one's) before its batch goes to MLflow, and settled after. A leader
that dies (or loses MLflow or the database) between the two leaves it pending, and the next
pass, on whichever process leads, asks MLflow for that step of one of the window's metrics:
there, it is settled and not logged again; absent, it is dropped and the next window logs its
answers with those since. A write that fails moves nothing else: the next interval logs the
same answers and those since.

Failure: nothing here is on a request's path (its own task; MLflow's client in a thread). MLflow
unreachable ends the pass at the first failing call, is counted (``failures``, and
``gateway_mlflow_writebacks_total{outcome="failure"}``), warned once
until a write succeeds again, and retried at the next interval. A provider that raises is
skipped for that version and logged once per provider.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from registry_sync.errors import RegistryError
from registry_sync.figures import FiguresStore, VersionFigures
from registry_sync.periodic import Outage, Periodic
from registry_sync.registry import PRODUCTION_TAG
from registry_sync.repository import StateStore
from registry_sync.writeback_marks import Mark, Pending, Totals, WritebackMarks

log = logging.getLogger(__name__)

PREFIX = "production_"
_LOGGED_MODEL = "models:/m-"  # an MLflow 3 version's source names its LoggedModel
# A run per version identity (docs/ARCHITECTURE.md, invariant 1): a number the registry
# re-created gets a run of its own, not the old version's.
_RUN_TAGS = ("gateway.writeback.model", "gateway.writeback.version", "gateway.writeback.created_ms")

Provider = Callable[[str, str], Mapping[str, float]]
"""Figures of one version (model name, version number) named without the ``production_``
prefix (``{"accuracy": 0.93}``); empty when it has none now."""

Document = Callable[[str, str], Mapping[str, Any] | None]
"""A JSON document about one version (model name, version number), logged as an artifact of
its write-back run beside the metrics (drift's per-feature detail); None when it has none now."""


def logged_model_id(source: str) -> str | None:
    """The LoggedModel a version was registered from (MLflow 3: ``models:/m-<id>``), or None."""
    if source.startswith(_LOGGED_MODEL) and "/" not in source[len("models:/") :]:
        return source[len("models:/") :]
    return None


class OperationalFigures:
    """Requests, error rate and p99 per version over the fleet, since the last logged write."""

    def __init__(self, store: FiguresStore) -> None:
        self._store = store
        self._now: dict[tuple[str, str, int], VersionFigures] = {}
        self._logged: dict[tuple[str, str, int], VersionFigures] = {}

    def refresh(self) -> list[tuple[str, int]]:
        """Read every process's totals; the versions any process answered with."""
        self._now = self._store.by_process()
        self._logged = {key: was for key, was in self._logged.items() if key in self._now}
        return sorted({(name, version) for _, name, version in self._now})

    def totals(self, model: str, version: int) -> Totals:
        """Each process's totals for the version, as last read."""
        return {key[0]: now for key, now in self._now.items() if key[1:] == (model, version)}

    def start_from(self, model: str, version: int, logged: Totals) -> None:
        """The next window of the version starts from these totals (the state database's)."""
        for key in [key for key in self._logged if key[1:] == (model, version)]:
            del self._logged[key]
        for replica, figures in logged.items():
            if (replica, model, version) in self._now:
                self._logged[replica, model, version] = figures

    def window(self, model: str, version: int) -> VersionFigures:
        """What the fleet answered with the version since its last logged write."""
        total = VersionFigures(model, version)
        for key, now in self._now.items():
            if key[1:] == (model, version):
                total = total + (now - self._logged.get(key, VersionFigures(model, version)))
        return total

    def __call__(self, model: str, version: str) -> dict[str, float]:
        window = self.window(model, int(version))
        if window.requests <= 0:
            return {}
        figures = {"requests": float(window.requests), "error_rate": window.error_rate or 0.0}
        p99 = window.p99_seconds()
        if p99 is not None:
            figures["p99_ms"] = p99 * 1000
        return figures

    def logged(self, model: str, version: int) -> None:
        for key, now in self._now.items():
            if key[1:] == (model, version):
                self._logged[key] = now


@dataclass(slots=True)
class WritebackReport:
    written: list[str] = field(default_factory=list)  # "model/version", in order
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Writeback:
    def __init__(
        self,
        client: MlflowClient,
        state: StateStore,
        operational: OperationalFigures,
        *,
        marks: WritebackMarks,
        providers: Sequence[Provider] = (),
        documents: Sequence[tuple[str, Document]] = (),
        experiment: str,
        interval_seconds: float,
        leading: Callable[[], bool] = lambda: True,
        on_pass: Callable[[bool], None] | None = None,
    ) -> None:
        self._client = client
        self._state = state
        self._operational = operational
        self._marks = marks
        self._providers = list(providers)
        self._documents = list(documents)  # (artifact path, provider)
        self._experiment = experiment
        self._on_pass = on_pass  # told of each pass that wrote (True) or failed (False): a metric
        self._runs: dict[tuple[str, int, str], str] = {}
        self._experiment_id: str | None = None
        self._last_written: dict[tuple[str, int], float] = {}
        self._outage = Outage(
            log,
            f"production figures not written back (trying again every {interval_seconds:g} s)",
            "writing production figures back to MLflow again",
        )
        self._failing_providers: set[int] = set()
        self._failing_documents: set[str] = set()
        self.failures = 0  # passes that MLflow (or the state database) failed
        self._loop = Periodic(
            "writing production figures back to MLflow",
            interval_seconds,
            lambda: anyio.to_thread.run_sync(self.write_once),
            log=log,
            when=leading,
        )

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def write_once(self) -> WritebackReport:
        """One pass: every version answered since its last write, a batch each (blocking)."""
        report = WritebackReport()
        try:
            versions = self._operational.refresh()
        except RegistryError as exc:
            return self._failed(report, f"reading the fleet's figures: {exc}")
        for name, version in versions:
            try:
                mark = self._resume(name, version)
            except Exception as exc:  # the state database (RegistryError) or MLflow's client
                return self._failed(report, f"resuming {name} v{version}'s write-back: {type(exc).__name__}: {exc}")
            self._operational.start_from(name, version, mark.logged)
            figures = self._figures(name, version)
            if not figures:
                continue
            now = time.time()
            window = Pending(
                max(int(now), mark.step + 1), PREFIX + next(iter(figures)), self._operational.totals(name, version)
            )
            try:
                if not self._marks.begin(mark, step=window.step, key=window.key, covers=window.covers):
                    continue  # another leader moved this version on since it was read
            except RegistryError as exc:
                return self._failed(report, f"beginning {name} v{version}'s window: {exc}")
            try:
                self._log_metrics(name, version, figures, now, window.step)
            except Exception as exc:  # MLflow's client raises MlflowException and requests' errors
                return self._failed(report, f"writing {name} v{version} to MLflow: {type(exc).__name__}: {exc}")
            # Logged: from here on these counts are MLflow's, whatever happens to the tag (MLflow
            # going away between the two once made the next pass log them a second time).
            self._operational.logged(name, version)
            report.written.append(f"{name}/{version}")
            try:
                self._marks.settle(name, version, window)
            except RegistryError as exc:  # left pending: the next pass finds it in MLflow
                return self._failed(report, f"settling {name} v{version}'s window: {exc}")
            try:
                self._log_documents(name, version)
            except Exception as exc:
                return self._failed(report, f"logging {name} v{version}'s documents: {type(exc).__name__}: {exc}")
            try:
                self._tag(name, version, figures, now)
            except Exception as exc:
                return self._failed(report, f"tagging {name} v{version} in MLflow: {type(exc).__name__}: {exc}")
        if report.written:  # a pass that wrote nothing said nothing of MLflow: an outage goes on
            self._outage.passed()
            if self._on_pass is not None:
                self._on_pass(True)
        return report

    def _failed(self, report: WritebackReport, error: str) -> WritebackReport:
        if self._on_pass is not None:
            self._on_pass(False)
        self.failures += 1
        self._outage.failed(error)
        report.error = error
        return report

    def _figures(self, name: str, version: int) -> dict[str, float]:
        figures = dict(self._operational(name, str(version)))
        for index, provider in enumerate(self._providers):
            try:
                figures.update(provider(name, str(version)))
            except Exception:
                if index not in self._failing_providers:
                    log.exception("a production figure provider failed for %s v%d (skipped)", name, version)
                    self._failing_providers.add(index)
        return figures

    def _resume(self, name: str, version: int) -> Mark:
        """The version's mark, with a window a leader left pending settled (MLflow has a point
        of its metric at its step) or dropped (it has none)."""
        mark = self._marks.read(name, version)
        pending = mark.pending
        if pending is None:
            return mark
        run_id, _ = self._run_of(name, version)
        if any(point.step == pending.step for point in self._client.get_metric_history(run_id, pending.key)):
            self._marks.settle(name, version, pending)
            log.info(
                "%s v%d: the window at step %d was in MLflow already (not logged again)", name, version, pending.step
            )
        else:
            self._marks.drop(name, version, pending)
        return self._marks.read(name, version)

    def _run_of(self, name: str, version: int) -> tuple[str, str | None]:
        """The version's write-back run, and its LoggedModel (None: a version without one)."""
        state = self._state.version(name, version)
        model_id = logged_model_id(state.source) if state is not None else None
        created = str(state.created_ms) if state is not None and state.created_ms is not None else ""
        return self._run_id(name, version, created), model_id

    def _log_metrics(self, name: str, version: int, figures: Mapping[str, float], now: float, step: int) -> None:
        run_id, model_id = self._run_of(name, version)
        ms = int(now * 1000)
        metrics = [Metric(PREFIX + key, float(value), ms, step, model_id=model_id) for key, value in figures.items()]
        self._client.log_batch(run_id, metrics=metrics)

    def _log_documents(self, name: str, version: int) -> None:
        documents = []
        for path, provider in self._documents:
            try:
                document = provider(name, str(version))
            except Exception:  # like a figure provider's: skipped for this version, logged once
                if path not in self._failing_documents:
                    log.exception(
                        "a production document provider (%s) failed for %s v%d (skipped)", path, name, version
                    )
                    self._failing_documents.add(path)
                continue
            if document is not None:
                documents.append((path, document))
        if not documents:
            return
        run_id, _ = self._run_of(name, version)
        for path, document in documents:
            self._client.log_dict(run_id, dict(document), path)

    def _tag(self, name: str, version: int, figures: Mapping[str, float], now: float) -> None:
        since = self._last_written.get((name, version))
        latest = {
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "window_seconds": round(now - since, 3) if since is not None else None,
            **{key: value for key, value in figures.items()},
        }
        self._client.set_model_version_tag(name, str(version), PRODUCTION_TAG, json.dumps(latest, sort_keys=True))
        self._last_written[name, version] = now

    def _run_id(self, name: str, version: int, created: str) -> str:
        known = self._runs.get((name, version, created))
        if known is not None:
            return known
        experiment_id = self._experiment_id
        if experiment_id is None:
            experiment = self._client.get_experiment_by_name(self._experiment)
            experiment_id = experiment.experiment_id if experiment is not None else None
            if experiment_id is None:
                experiment_id = self._client.create_experiment(self._experiment)
            self._experiment_id = experiment_id
        tags = dict(zip(_RUN_TAGS, (name, str(version), created), strict=True))
        found = self._client.search_runs(
            [experiment_id],
            filter_string=" and ".join(f"tags.`{key}` = '{_quoted(value)}'" for key, value in tags.items()),
            max_results=1,
        )
        if found:
            run_id = str(found[0].info.run_id)
        else:
            run_id = str(self._client.create_run(experiment_id, run_name=f"{name} v{version}", tags=tags).info.run_id)
        self._runs[name, version, created] = run_id
        return run_id


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
