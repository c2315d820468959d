"""The state database's tables (SQLAlchemy 2). Alembic in ``migrations/`` creates them.

- ``model_versions``: the current version under each (name, number) the sync has seen,
  with its identity (source, creation time), its pinned sha256 digest and whether it was
  refused. A version re-created under an old number replaces the row and its pin.
- ``routes``: alias -> version as MLflow says it (``version``) and as the gateways serve
  it (``active_version``: moved only after a warm swap succeeded), with the generation
  at which the row last changed.
- ``events``: the append-only history operators read through ``/events``.
- ``sync_state``: one row; ``generation`` goes up whenever versions or routes change,
  so a gateway follows the database by reading one integer.
- ``webhook_deliveries``: delivery ids already taken, to refuse replays.
- ``leases``: who leads the sync (one row per lease name), with a fencing token that goes
  up with each new holder; expiry is on the database's clock.
- ``sync_requests``: syncs asked of the leader by processes that do not lead (a webhook or
  ``/admin/sync`` on a gateway replica), with the leader's report once done.
- ``api_keys``: the callers' API keys, by name: the sha256 of each secret (never the
  secret), its scopes and limits; a revoked key keeps its row. ``sync_state.keys_generation``
  goes up with every change, so a gateway follows the keys by reading one integer.
- ``traffic``: each model's split of default-route requests as the version tags last set it
  validly (weight and shadow percent per version), and the guard's rollbacks of canaries.
- ``traffic_counts``: what each serving process (replica) answered per model, arm and version
  since it started, as it last published it (every follow interval while the model has a
  split), stamped with the database's clock: ``GET /models/{name}/traffic`` sums them.
- ``fleet_members``: every serving or syncing process of the fleet, as it last reported
  itself (its heartbeat, on the database's clock): its replica, role, state (starting, ready,
  draining, stopped), memory budget and what it holds (versions, bytes, last use).
- ``replica_history``: what each replica (a stable name, across its restarts) served lately,
  per version identity, with when it last answered a request for it: what it warms when it
  starts again (docs/ARCHITECTURE.md: Warm what you serve).
- ``feedback_predictions``: the answers that may get a label (a sampled share): request id to
  the version identity and arm that answered, and its prediction (one output row) and
  probabilities, until ``expires_at`` (GATEWAY_FEEDBACK_RETENTION_HOURS).
- ``feedback_labels``: the labels received (``POST /feedback``), one per request id, with a copy
  of what they are joined to, so that live quality reads one table and a label outlives its
  prediction row.
- ``version_figures``: what each serving process answered per version since it started
  (requests, 5xx errors, its latency histogram's bucket counts), as it last published it (every
  follow interval while it changed), stamped with the database's clock: summable over the fleet,
  for the sync leader's write-back of production figures to MLflow.
- ``usage``: what each caller used of each version a UTC day (requests, rows, errors, predict
  seconds, tokens), added to by every serving process at its flush interval (one upsert per
  row that adds): the fleet's sum, for ``GET /usage`` and the quotas.
- ``quotas``: the callers' quotas by name (``registry-gateway quotas``): who (a key's name, a
  token's subject or a claim group), which models (a glob), per day or month, in what unit.
- ``drift_references``: each version's drift reference (registry_sync/drift/references.py),
  one row per (name, number) holding the identity it was computed for: ready (with its profile
  as JSON), failed (with the reason) or none (no source: a baseline window fills it).
- ``drift_windows``: each serving process's sliding window of sampled inputs and outputs per
  version identity, binned on the version's drift reference (counts per bin, never rows), as it
  last published it (every GATEWAY_DRIFT_INTERVAL_SECONDS), stamped with the database's clock:
  the fleet's drift figures are the sum over processes that published recently.
- ``jobs``: the asynchronous prediction and batch scoring jobs (registry_sync/jobs/store.py):
  the version pinned at submission, the request or the file spec, state, counts, timings, an
  inline job's result, until ``expires_at``.
- ``job_chunks``: the queue itself: each job's chunks, claimed by one serving process at a time
  under a lease (``holder``, ``lease_until`` on the database's clock), done once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, LargeBinary, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ModelVersionRow(Base):
    __tablename__ = "model_versions"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The registry's creation time: with name, number and source, the version's identity
    (MLflow reuses numbers after a model is deleted and registered again)."""
    status: Mapped[str] = mapped_column(String(32))
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The first sha256 manifest digest seen for this version: pinned forever."""
    refused_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Set when the version must never serve (digest mismatch with the pin or the tag)."""
    artifact_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Where the artifacts really are (MLflow's download URI), once looked up."""
    listing: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """sha256 of the store's object listing (keys, sizes, ETags) at the last check: a cheap
    way to see bytes changed in S3 without downloading them."""
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RouteRow(Base):
    __tablename__ = "routes"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    alias: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    """Where MLflow points the alias now."""
    active_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """What gateways serve for a warm alias: moved only after the new version loaded and warmed."""
    generation: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_name_id", "name", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    alias: Mapped[str | None] = mapped_column(String(256), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="")


class SyncStateRow(Base):
    __tablename__ = "sync_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    registry_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The registry this state belongs to: pins from one registry mean nothing in another."""
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    keys_generation: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Goes up whenever an API key is created or revoked (the sync's ``generation`` does not)."""
    deployment_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """A random id, set once: what the processes sharing this database share elsewhere (the
    rate limits in Redis) is kept under it."""


class WebhookDeliveryRow(Base):
    __tablename__ = "webhook_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """``host:pid:random`` of the holder; NULL once released."""
    token: Mapped[int] = mapped_column(BigInteger, default=0)
    """Fencing token: goes up by one each time a different holder takes the lease."""
    expires_at: Mapped[float] = mapped_column(Float)
    """The database's clock, seconds since the epoch: past it, anyone may take the lease."""
    renewed_at: Mapped[float] = mapped_column(Float)
    """The database's clock at the last acquire or renewal."""


class SyncRequestRow(Base):
    __tablename__ = "sync_requests"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """The models to sync; NULL for the whole registry."""
    reason: Mapped[str] = mapped_column(String(256), default="")
    verify: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Also re-check the bytes of every served version against its pin."""
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """The leader's sync report, once done."""


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    """sha256 (hex) of the secret; the secret itself is never stored."""
    prefix: Mapped[str] = mapped_column(String(16))
    """The secret's first characters, so that ``keys list`` can tell keys apart."""
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Requests a second (a token bucket with a burst of this many, at least 1); NULL: no limit."""
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Requests in flight at once; NULL: no limit."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TrafficRow(Base):
    __tablename__ = "traffic"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    weight: Mapped[float] = mapped_column(Float, default=0.0)
    """Percent of the model's default-route requests (``gateway.traffic.weight``)."""
    shadow: Mapped[float] = mapped_column(Float, default=0.0)
    """Percent of them also sent here after the primary answered (``gateway.traffic.shadow``)."""
    weight_tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The weight tag's text: a rolled-back canary stays off until the tag changes."""
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rolled_back_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Set by a gateway's guard: the threshold crossed and the numbers; the weight counts as 0."""
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class TrafficCountRow(Base):
    __tablename__ = "traffic_counts"
    __table_args__ = (Index("ix_traffic_counts_name", "name"),)

    replica: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The serving process: ``host:pid:random``, new at every start."""
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    arm: Mapped[str] = mapped_column(String(16), primary_key=True)
    """``default``, ``canary`` or ``shadow``."""
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    """Answers (a shadow's: copies that ran), since the replica started."""
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    agreed: Mapped[int] = mapped_column(BigInteger, default=0)
    """Shadows only: answers equal to the primary's (and ``differed``: not)."""
    differed: Mapped[int] = mapped_column(BigInteger, default=0)
    dropped: Mapped[int] = mapped_column(BigInteger, default=0)
    """Shadows only: copies that never ran (a full queue)."""
    seen_at: Mapped[float] = mapped_column(Float)
    """The database's clock at the replica's last publication, seconds since the epoch."""


class FleetMemberRow(Base):
    __tablename__ = "fleet_members"
    __table_args__ = (Index("ix_fleet_members_replica", "replica"),)

    member: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The process: ``host:pid:random``, new at every start (its sync lease holder id)."""
    replica: Mapped[str] = mapped_column(String(256))
    """The replica it serves as (``GATEWAY_REPLICA_ID``): stable across restarts, shared by the
    workers of one ``serve --workers N``."""
    role: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    """``starting``, ``ready``, ``draining`` or ``stopped``."""
    warm_rule: Mapped[str] = mapped_column(Text, default="")
    """What it warmed at start and which alias moves it follows, in words."""
    started_at: Mapped[float] = mapped_column(Float)
    """The database's clock when the process first reported, seconds since the epoch."""
    seen_at: Mapped[float] = mapped_column(Float)
    """The database's clock at its last report (its heartbeat)."""
    max_models: Mapped[int] = mapped_column(Integer, default=0)
    budget_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    loaded_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    holdings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """The versions it holds: name, version, bytes, last_served (its clock, or null), in_use."""


class ReplicaHistoryRow(Base):
    __tablename__ = "replica_history"

    replica: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """With name, number and source, the version's identity: a number the registry re-created
    is another version, which the replica never served."""
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    """Its measured size when last held: what warming it again will take."""
    last_served: Mapped[float] = mapped_column(Float)
    """When the replica last answered a request with it (the replica's clock, seconds since the epoch)."""


class FeedbackPredictionRow(Base):
    __tablename__ = "feedback_predictions"
    __table_args__ = (Index("ix_feedback_predictions_expires_at", "expires_at"),)

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """With name, number and source, the version's identity (a re-created number is another version)."""
    arm: Mapped[str] = mapped_column(String(16))
    """The route that chose the version: ``default``, ``canary``, ``named``..."""
    task: Mapped[str] = mapped_column(String(16))
    """``classification`` or ``regression``: from the version's signature, else the answer's type."""
    prediction: Mapped[str] = mapped_column(Text)
    """The answer's one output row (its ``prediction`` field where it also carries probabilities),
    as JSON text: copied into its label's row as it is, never parsed and dumped again (a JSON
    column's round trip cost more than the rest of ``POST /feedback`` on PostgreSQL)."""
    probabilities: Mapped[str | None] = mapped_column(Text, nullable=True)
    rows: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """The answer's rows: past 1, ``prediction`` and ``probabilities`` are JSON arrays of one
    element per row, and each row takes a label of its own."""
    answered_at: Mapped[float] = mapped_column(Float)
    """When the request arrived (the serving process's clock, seconds since the epoch)."""
    expires_at: Mapped[float] = mapped_column(Float)
    """Past it a label is answered ``expired``; the row is deleted a retention later."""


class FeedbackLabelRow(Base):
    __tablename__ = "feedback_labels"
    __table_args__ = (
        Index("ix_feedback_labels_version", "name", "version", "received_at"),
        Index("ix_feedback_labels_received_at", "received_at"),
    )

    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True, default=0, server_default="0")
    """Which row of the answer the label is for (0 for a one-row answer)."""
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    arm: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(16))
    prediction: Mapped[str] = mapped_column(Text)
    """The labelled row's prediction (of an answer of several rows, its element), as JSON text."""
    probabilities: Mapped[str | None] = mapped_column(Text, nullable=True)
    label: Mapped[str] = mapped_column(Text)
    """The label as JSON text (prediction and probabilities likewise)."""
    received_at: Mapped[float] = mapped_column(Float)
    """When the label was accepted (the receiving process's clock, seconds since the epoch)."""


class FeedbackArmRow(Base):
    """A (version identity, arm) that has labels: what live quality reads each interval instead
    of a DISTINCT over every label (a scan that grew with the backlog: 0.25 s a replica per
    interval at a million labels on PostgreSQL). Written with the labels, at most once a
    minute per pair and process (``last_label_at`` lags by up to that)."""

    __tablename__ = "feedback_arms"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    """The version's creation time; -1 where the registry gave none (a key column is never null)."""
    arm: Mapped[str] = mapped_column(String(16), primary_key=True)
    last_label_at: Mapped[float] = mapped_column(Float)


class VersionFiguresRow(Base):
    __tablename__ = "version_figures"
    __table_args__ = (Index("ix_version_figures_name_version", "name", "version"),)

    replica: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The serving process: ``host:pid:random``, new at every start (so its counts never go down)."""
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    """Prediction requests it answered with this version since it started, any status."""
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    """... of which answered 5xx."""
    latency: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    """Its latency histogram: each bucket's upper bound in seconds (``le`` as Prometheus writes
    it, ``+Inf`` last) -> the requests in that bucket (not cumulative): summed bucket by bucket
    over replicas, a fleet's quantiles come from the sum."""
    latency_sum: Mapped[float] = mapped_column(Float, default=0.0)
    """Seconds, over those requests."""
    seen_at: Mapped[float] = mapped_column(Float)
    """The database's clock at the process's last publication, seconds since the epoch."""


class WritebackMarkRow(Base):
    """What the sync leader has written back to MLflow for one version: the processes' totals
    its logged windows reach, and the window being written (``registry_sync/writeback_marks.py``).
    In the database, not the leader's memory: a new leader goes on from here."""

    __tablename__ = "writeback_marks"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    """The step of the last window begun (MLflow's metric step): the next one's is higher."""
    logged: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Per serving process, its totals up to which MLflow has the windows."""
    pending_step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """A window begun and not known to be in MLflow: its step (null: none)."""
    pending_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """... one of its metrics, looked up at that step to learn whether MLflow has it."""
    pending_covers: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """... and the totals it reaches, ``logged`` once it is known to be in MLflow."""


class DriftReferenceRow(Base):
    __tablename__ = "drift_references"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """With name, number and source, the version identity the reference is of: a version
    re-created under the number replaces the row."""
    status: Mapped[str] = mapped_column(String(16))
    """``ready``, ``failed`` or ``none``."""
    source_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """Where the reference came from: ``dataset``, ``tag``, ``artifact`` or ``baseline``."""
    source_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why it failed, or why there is none."""
    outputs_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why a ready reference has no profile of the version's outputs."""
    profile: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    sampled_from: Mapped[int] = mapped_column(BigInteger, default=0)
    tags_digest: Mapped[str] = mapped_column(String(64), default="")
    """sha256 of the version's ``gateway.drift.*`` tags when it was computed: a change retries it."""
    computed_at: Mapped[float] = mapped_column(Float)
    """Seconds since the epoch (the leader's clock)."""


class DriftWindowRow(Base):
    __tablename__ = "drift_windows"
    __table_args__ = (Index("ix_drift_windows_seen_at", "seen_at"),)

    replica: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The serving process that sampled these rows (``host:pid:random``, new at every start)."""
    uid: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The version identity's fingerprint (``VersionId.uid``); its parts are the columns below."""
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Its sliding window now (``registry_sync.drift.windows.WindowCounts.to_json``): per
    input and output column, the rows per reference bin, missing and outliers; bins, not rows."""
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    """Rows in that window."""
    seen_at: Mapped[float] = mapped_column(Float)
    """The database's clock at the process's last publication, seconds since the epoch."""


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_model_state", "model", "state"),
        Index("ix_jobs_expires_at", "expires_at"),
        Index("ix_jobs_callback_after", "callback_after"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``inline`` (one predict body) or ``files`` (input files to an output location)."""
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """With model, version and source: the version identity pinned at submission."""
    alias: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """The alias the caller named, resolved to ``version`` at submission."""
    owner: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """The API key (its name) that submitted it; None when keys are off."""
    state: Mapped[str] = mapped_column(String(16))
    """``planning``, ``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``."""
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The submission: an inline job's request (as text) and media type, a file job's input,
    output, format, id column, params and callback."""
    fail_fast: Mapped[bool] = mapped_column(Boolean, default=False)
    rows_total: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    chunks_failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why the job failed (or was cancelled), in one line."""
    result: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """An inline job's answer (the predict response's JSON), at most GATEWAY_JOBS_MAX_RESULT_BYTES."""
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    """finished_at + GATEWAY_JOBS_RETENTION_HOURS: the row and its chunks are deleted after."""
    notified: Mapped[bool] = mapped_column(Boolean, default=False)
    """Its callback was taken by the receiver (a 2xx)."""
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Deliveries of its callback claimed so far (each: a POST and its quick retries)."""
    callback_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    """When its callback's next delivery may be claimed, once the job ended; None: there is
    nothing to send (no callback, delivered, or given up after GATEWAY_JOBS_CALLBACK_ATTEMPTS)."""


class JobChunkRow(Base):
    __tablename__ = "job_chunks"
    __table_args__ = (Index("ix_job_chunks_state", "state", "lease_until"),)

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    """The job's, copied: a process prefers the chunks of the versions it holds."""
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The chunk's input (gateway.jobs.files.chunks.ChunkSpec.to_json); empty for an inline job."""
    state: Mapped[str] = mapped_column(String(16))
    """``queued``, ``running``, ``done``, ``failed`` or ``cancelled``."""
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The database's clock: past it, a running chunk is taken again by any process."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why it failed, with its input range."""
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class UsageRow(Base):
    __tablename__ = "usage"
    __table_args__ = (Index("ix_usage_day", "day"),)

    caller: Mapped[str] = mapped_column(String(320), primary_key=True)
    """A key's name, or ``oidc:<sub>`` for a token (``-``: no keys, anyone)."""
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    """The UTC day, ``YYYY-MM-DD``: sorts and compares as text."""
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    """Input rows, where the request decoded to a frame or an array (0 where unknown)."""
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    """Requests answered 4xx or 5xx after a version was chosen."""
    predict_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    """``usage.total_tokens`` of the OpenAI routes' answers, where the model reports them."""


class QuotaRow(Base):
    __tablename__ = "quotas"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    caller: Mapped[str] = mapped_column(String(320))
    """A key's name, ``oidc:<sub>`` for a token's subject, or ``group:<name>`` for every token
    whose groups claim names it (each such caller has the quota)."""
    models: Mapped[str] = mapped_column(String(256))
    """A shell glob over model names (``*``: every model, summed together)."""
    period: Mapped[str] = mapped_column(String(8))
    """``day`` or ``month`` (UTC)."""
    unit: Mapped[str] = mapped_column(String(8))
    """``requests``, ``rows`` or ``tokens``."""
    amount: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128), default="")
