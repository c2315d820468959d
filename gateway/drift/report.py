"""What the drift route, ``GET /drift``, ``/status`` and ``registry-gateway status`` show: the
monitor's last figures as answer bodies, or why a version has none. No I/O: everything is what
the monitor last read (every GATEWAY_DRIFT_INTERVAL_SECONDS)."""

from __future__ import annotations

from gateway.drift.book import KnownReference
from gateway.drift.monitor import DriftMonitor
from gateway.wire.api_schemas import (
    DriftFeatureBody,
    DriftList,
    DriftReferenceBody,
    DriftRow,
    DriftThresholdsBody,
    DriftWindowBody,
    VersionDriftBody,
    utc_iso,
)
from registry_sync.drift.references import FAILED, NONE, READY
from registry_sync.drift.sources import NO_SIGNATURE
from registry_sync.drift.verdict import VersionDrift, feature_json
from registry_sync.identity import VersionId

WORST_SHOWN = 5


def reference_body(reference: KnownReference | None) -> DriftReferenceBody | None:
    if reference is None:
        return None
    return DriftReferenceBody(
        status=reference.status,
        source_kind=reference.source_kind,
        source_uri=reference.source_uri,
        reason=reference.reason,
        outputs_reason=reference.outputs_reason,
        rows=reference.rows,
        computed_at=utc_iso(reference.computed_at) if reference.computed_at is not None else None,
        weaker=reference.weaker,
    )


def features_of(drift: VersionDrift) -> list[DriftFeatureBody]:
    return [DriftFeatureBody(**feature_json(kind, f, drift.thresholds)) for kind, f in drift.worst_first()]


def status_of(drift: VersionDrift) -> str:
    if not drift.enough:
        return "not_enough_rows"
    return "drifting" if drift.drifting else "ok"


def version_body(
    monitor: DriftMonitor,
    version: VersionId,
    *,
    tabular: bool | None,
    window_seconds: float,
    window_rows: int,
    baseline_rows: int,
) -> VersionDriftBody:
    """One version's drift; ``tabular``: whether its signature names columns (None: not loaded here)."""
    reference = monitor.book.get(version)
    drift = monitor.latest.get(version)
    read_at = utc_iso(monitor.read_at) if monitor.read_at is not None else None
    if drift is None:
        return VersionDriftBody(
            model=version.name,
            version=version.version,
            reference=reference_body(reference),
            status="no_figures",
            reason=_why_none(reference, tabular=tabular, baseline_rows=baseline_rows),
            read_at=read_at,
        )
    t = drift.thresholds
    window = drift.window
    status = status_of(drift)
    reason: str | None = None
    if status == "not_enough_rows":
        reason = f"{window.rows} rows in the fleet's window; {t.min_rows} are needed before a feature is flagged"
    return VersionDriftBody(
        model=version.name,
        version=version.version,
        reference=reference_body(reference),
        status=status,  # type: ignore[arg-type]
        reason=reason,
        window=DriftWindowBody(
            rows=window.rows,
            requests=window.requests,
            mismatched_requests=window.mismatched,
            unreadable_requests=window.unreadable,
            processes=drift.processes,
            seconds=window_seconds,
            max_rows_per_process=window_rows,
        ),
        thresholds=DriftThresholdsBody(
            psi=t.psi, p_value=t.p_value, outlier_share=t.outlier_share, min_rows=t.min_rows
        ),
        flagged=list(drift.flagged),
        features=features_of(drift),
        read_at=read_at,
    )


def _why_none(reference: KnownReference | None, *, tabular: bool | None, baseline_rows: int) -> str:
    if tabular is False:
        return "no tabular signature: the version's signature names no input columns, so there is nothing to bin"
    if reference is None:
        return "no reference yet: the sync leader has not profiled this version's training data"
    if reference.status == FAILED:
        if (reference.reason or "").startswith(NO_SIGNATURE):
            return reference.reason or NO_SIGNATURE
        return f"the reference could not be used: {reference.reason or 'no reason given'}"
    if reference.status == NONE:
        found = reference.reason or "no reference source"
        if baseline_rows <= 0:
            return f"{found}; baselines are off (GATEWAY_DRIFT_BASELINE_ROWS=0)"
        return f"{found}; a baseline of the first {baseline_rows} rows served is being collected"
    if reference.status == READY:
        return "no sampled request in the window yet (GATEWAY_DRIFT_SAMPLE)"
    return f"reference {reference.status}"


def describe(monitor: DriftMonitor, name: str | None = None) -> DriftList:
    """Every version with a window (of one model, if ``name``): drifting first, then by largest PSI."""
    rows = []
    for version, drift in monitor.latest.items():
        if name is not None and version.name != name:
            continue
        reference = monitor.book.get(version)
        rows.append(
            DriftRow(
                model=version.name,
                version=version.version,
                status=status_of(drift),  # type: ignore[arg-type]
                rows=drift.window.rows,
                max_psi=drift.max_psi,
                flagged=list(drift.flagged),
                reference=reference.source_kind if reference is not None else None,
                weaker=reference.weaker if reference is not None else False,
                worst=features_of(drift)[:WORST_SHOWN],
            )
        )
    rows.sort(key=lambda r: (r.status != "drifting", -r.max_psi, r.model, r.version))
    read_at = utc_iso(monitor.read_at) if monitor.read_at is not None else None
    return DriftList(read_at=read_at, interval_seconds=monitor.interval_seconds, rows=rows)
