"""The data plane's errors, named by condition.

Each carries typed fields and builds its own message. They become HTTP in exactly one
place: :mod:`gateway.http.errors`.
"""

from __future__ import annotations

import math
from datetime import datetime


class GatewayError(Exception):
    """Base of everything the gateway raises on purpose."""

    # Logged at WARNING already (a load's failure, by the cache or the warm-up that asked for
    # it): whoever meets it again (an answer, a swap) logs it at INFO, so one failure is one
    # WARNING.
    told: bool = False


# --- the model or version asked for --------------------------------------------------


class ModelNotFound(GatewayError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Model '{name}' not found in the registry")


class VersionNotFound(GatewayError):
    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        super().__init__(f"Model '{name}' has no version {version}")


class NoDefaultModel(GatewayError):
    """``/invocations`` (``mlflow models serve``'s route) names no model: it serves
    GATEWAY_DEFAULT_MODEL, which is unset."""

    def __init__(self) -> None:
        super().__init__(
            "POST /invocations serves the model GATEWAY_DEFAULT_MODEL names (name, name@alias or name/version), "
            "and it is unset; use /models/{name}/invocations, or set it"
        )


class AliasNotFound(GatewayError):
    def __init__(self, name: str, alias: str) -> None:
        self.name = name
        self.alias = alias
        super().__init__(f"Model '{name}' has no alias '{alias}'")


class NoReadyVersion(GatewayError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"Model '{name}' has no version in status READY")


class VersionNotReady(GatewayError):
    def __init__(self, name: str, version: int, status: str) -> None:
        self.name = name
        self.version = version
        self.status = status
        super().__init__(f"Model '{name}' version {version} is {status}, not READY")


class VersionRefused(GatewayError):
    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name = name
        self.version = version
        self.reason = reason
        super().__init__(f"Model '{name}' version {version} is refused and will not serve: {reason}")


class PolicyRefused(VersionRefused):
    """Refused by this process's loading policy, which ``policy`` names (a setting); the bytes
    are not at fault, so the state database keeps no refusal: another policy may load them."""

    def __init__(self, name: str, version: int, *, policy: str, reason: str) -> None:
        self.policy = policy
        self.fields = {"policy": policy}
        super().__init__(name, version, f"{reason} ({policy})")


class InvalidSelector(GatewayError):
    """A version selector (path or ``X-Model-Version``) that can name nothing; ``problem``
    says why (README: Choosing a version)."""

    def __init__(self, selector: str, problem: str | None = None) -> None:
        self.selector = selector
        self.problem = problem
        why = f"{problem}; " if problem else ""
        super().__init__(
            f"Invalid version selector '{selector}': {why}use a version number (1 or more), an alias "
            "(letters, digits, '_' or '-') or 'latest'"
        )


class SelectorConflict(GatewayError):
    def __init__(self, *, name: str, path: str, header: str, path_version: int, header_version: int) -> None:
        self.name = name
        self.path = path
        self.header = header
        super().__init__(
            f"The path asks for '{name}' version '{path}' (= {path_version}) but the "
            f"X-Model-Version header asks for '{header}' (= {header_version}); send one or make them agree"
        )


# --- who is asking, and how often ----------------------------------------------------


class Unauthenticated(GatewayError):
    """No API key, or one no key in the state database has (unknown or revoked). The
    message never repeats what was sent."""

    def __init__(self, *, sent: bool, keys: bool = True, tokens: bool = False) -> None:
        self.sent = sent
        if sent:
            message = "The API key is not valid (unknown or revoked)"
        elif keys and tokens:
            message = (
                "An API key or a token is required: send 'Authorization: Bearer <key or token>' or 'X-API-Key: <key>'"
            )
        elif tokens:
            message = "A token from the identity provider is required: send 'Authorization: Bearer <token>'"
        else:
            message = "An API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        super().__init__(message)


class InvalidToken(Unauthenticated):
    """A bearer token (GATEWAY_AUTH=oidc or keys+oidc) that does not verify; ``reason`` says why
    in one line and for metrics (``expired``, ``audience``...), never repeating the token."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.sent = True
        GatewayError.__init__(self, f"The bearer token is not valid: {message}")


class IssuerUnavailable(GatewayError):
    """No signing key of the identity provider is known yet (its JWKS could not be fetched
    since the process started): a token cannot be verified either way, so: try again."""

    retry_after = 5

    def __init__(self) -> None:
        super().__init__("The identity provider's signing keys could not be fetched yet; try again shortly")


class Forbidden(GatewayError):
    def __init__(self, key: str, scope: str) -> None:
        self.key = key
        self.scope = scope
        super().__init__(f"The API key '{key}' lacks the scope {scope}")


class InsufficientScope(Forbidden):
    """A verified token whose claims give no scope the route needs."""

    def __init__(self, subject: str, scope: str) -> None:
        self.key = subject
        self.scope = scope
        GatewayError.__init__(
            self,
            f"The token of subject '{subject}' lacks the scope {scope} "
            "(from its scopes claim or GATEWAY_OIDC_SCOPE_MAP)",
        )


class RateLimited(GatewayError):
    """A rate or concurrency limit is used up; ``limit`` names it for scripts (``key_rate``,
    ``key_concurrency``, ``model_rate``, ``model_concurrency``)."""

    def __init__(self, limit: str, *, subject: str, detail: str, retry_after: int) -> None:
        self.limit = limit
        self.subject = subject
        self.retry_after = retry_after
        self.fields = {"limit": limit}
        super().__init__(f"Too many requests: {detail} of {subject} is used up; retry in {retry_after} s")


class QuotaExceeded(RateLimited):
    """A caller's quota is used up until its period ends: 429 with ``Retry-After`` and the
    ``X-RateLimit-*`` headers (``Reset``: seconds until the period ends)."""

    def __init__(
        self, quota: str, *, description: str, amount: int, used: int, resets_at: datetime, now: float
    ) -> None:
        self.limit = "quota"
        self.subject = f"quota '{quota}'"
        self.retry_after = max(1, math.ceil(resets_at.timestamp() - now))
        self.quota = quota
        self.resets_at = resets_at
        resets = resets_at.isoformat().replace("+00:00", "Z")
        self.fields = {"limit": "quota", "quota": quota, "resets_at": resets}
        self.headers = {
            "X-RateLimit-Limit": str(amount),
            "X-RateLimit-Remaining": str(max(0, amount - used)),
            "X-RateLimit-Reset": str(self.retry_after),
        }
        GatewayError.__init__(
            self,
            f"Too many requests: quota '{quota}' ({description}) is used up ({used:,} counted); "
            f"it resets at {resets}, in {self.retry_after} s",
        )


class LoadsThrottled(GatewayError):
    def __init__(self, name: str, version: int, *, per_minute: int, retry_after: int) -> None:
        self.name = name
        self.version = version
        self.retry_after = retry_after
        super().__init__(
            f"Model '{name}' version {version} is not loaded, and this process has started its "
            f"{per_minute} cold loads of the minute (GATEWAY_MAX_LOADS_PER_MINUTE); retry in {retry_after} s"
        )


# --- the request body --------------------------------------------------------------


class PayloadTooLarge(GatewayError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"Request body is larger than the limit of {limit} bytes (GATEWAY_MAX_BODY_BYTES)")


class DecodedTooLarge(GatewayError):
    """A CSV or Parquet body past a decoding limit (``setting`` names it), found before or
    while decoding, never after the whole of it is in memory."""

    def __init__(self, what: str, *, found: str, limit: str, setting: str) -> None:
        self.setting = setting
        self.fields = {"limit": setting}
        super().__init__(f"The {what} body holds {found}, past the limit of {limit} ({setting})")


class TooManyLabels(GatewayError):
    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        self.fields = {"limit": "GATEWAY_FEEDBACK_MAX_ITEMS"}
        super().__init__(
            f"The feedback batch holds {count} labels, past the limit of {limit} (GATEWAY_FEEDBACK_MAX_ITEMS): "
            "send it in smaller batches"
        )


class UnsupportedMediaType(GatewayError):
    def __init__(self, content_type: str | None) -> None:
        self.content_type = content_type
        # a body without the header said "Content type 'none'", as if a client had sent "none"
        what = f"Content type '{content_type}' is not supported" if content_type else "No Content-Type header was sent"
        super().__init__(
            f"{what}; send 'application/json' or 'text/csv' (or 'application/vnd.apache.parquet'), in UTF-8"
        )


class UnsupportedEncoding(GatewayError):
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        super().__init__(f"Content-Encoding '{encoding}' is not supported; send gzip, deflate or identity")


class MalformedRequest(GatewayError):
    """The body could not be read as the scoring protocol at all (MLflow: BAD_REQUEST)."""


class InvalidInput(GatewayError):
    """The body was readable but does not fit the model (MLflow: INVALID_PARAMETER_VALUE)."""


# --- jobs (gateway.jobs) -------------------------------------------------------------------


class InvalidJob(GatewayError):
    """A job's submission that cannot be run as sent (its body names the problem)."""


class JobNotFound(GatewayError):
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"No job '{job_id}' (never submitted, or deleted after its retention)")


class JobsFull(GatewayError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"{limit} jobs are queued or running already (GATEWAY_JOBS_MAX_OPEN): submit again later")


class ChunkRejected(GatewayError):
    """A job's chunk that cannot be scored as it is (its input, its columns, its rows):
    ``reason`` says where (file, range, rows) and why. The chunk fails; never an HTTP answer."""

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(reason.split())
        super().__init__(self.reason)


class VersionReplaced(GatewayError):
    """A job's pinned version was deleted and registered again under its number: the job fails."""

    def __init__(self, pinned: object) -> None:
        super().__init__(f"{pinned} was deleted and registered again since the job was submitted")


class JobResultMissing(GatewayError):
    """``GET /jobs/<id>/result`` of a job with no result (yet, or ever: a file job, a failure)."""

    def __init__(self, job_id: str, state: str, kind: str) -> None:
        self.job_id = job_id
        self.state = state
        what = "writes its output to files" if kind == "files" else f"has no result: it is {state}"
        super().__init__(f"Job '{job_id}' {what}")


# --- loading and predicting --------------------------------------------------------


class ModelLoadFailed(GatewayError):
    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name = name
        self.version = version
        self.reason = reason
        super().__init__(f"Model '{name}' version {version} failed to load: {reason}")


class ModelTooLarge(GatewayError):
    def __init__(self, name: str, version: int, *, size_bytes: int, budget_bytes: int) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"Model '{name}' version {version} needs {size_bytes / 2**20:.1f} MiB, more than the "
            f"whole memory budget of {budget_bytes / 2**20:.1f} MiB (GATEWAY_MAX_MEMORY_MB)"
        )


class ModelRaised(GatewayError):
    """The model raised while predicting on this request's input. As in MLflow's scoring
    server, a client error (400): the same body fails again, so it is not one to retry."""

    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name = name
        self.version = version
        super().__init__(f"Model '{name}' version {version} raised on this input: {reason}")


class PredictTimeout(GatewayError):
    def __init__(self, name: str, version: int, seconds: float) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"Model '{name}' version {version} did not answer within {seconds:g} s (GATEWAY_PREDICT_TIMEOUT_SECONDS)"
        )


class PredictFailed(GatewayError):
    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name = name
        self.version = version
        super().__init__(f"Model '{name}' version {version} failed to predict: {reason}")


class NotStreamable(GatewayError):
    """Asked to stream (``"stream": true``, an OpenAI route's ``stream``) a version whose model
    does not implement ``predict_stream``: the client's mistake (400), naming the version."""

    def __init__(self, name: str, version: int) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"Model '{name}' version {version} does not implement predict_stream, so it cannot stream; "
            'send the request without "stream": true'
        )


class WrongInterface(GatewayError):
    """An OpenAI route asked of a version whose model speaks another interface (400)."""

    def __init__(self, name: str, version: int, *, route: str, wants: str, found: str) -> None:
        self.name = name
        self.version = version
        super().__init__(f"Model '{name}' version {version} is {found}; {route} serves {wants}")


class StreamIdle(GatewayError):
    """A stream's model yielded nothing for GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS: the stream is
    ended with this as its error event (504 when nothing was sent yet)."""

    def __init__(self, name: str, version: int, seconds: float) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"Model '{name}' version {version} yielded nothing for {seconds:g} s "
            "(GATEWAY_STREAM_IDLE_TIMEOUT_SECONDS); the stream is ended"
        )


class StreamsExhausted(GatewayError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"This gateway process has {limit} streams open already (GATEWAY_MAX_STREAMS); retry shortly "
            "or send to another replica"
        )


class WorkerUnavailable(GatewayError):
    """The worker process serving an isolated version died or is starting again: another
    replica, or this one a moment later, may answer (503, worth a retry)."""

    def __init__(self, name: str, version: int, reason: str) -> None:
        self.name = name
        self.version = version
        super().__init__(f"Model '{name}' version {version} is served by a worker that is not available: {reason}")


class WorkersExhausted(GatewayError):
    def __init__(self, name: str, version: int, limit: int) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"Model '{name}' version {version} needs workers of its own environment, and no more than {limit} "
            "worker processes may run (GATEWAY_ENV_MAX_WORKERS)"
        )


class Overloaded(GatewayError):
    def __init__(self, name: str, version: int, queued: int) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"Model '{name}' version {version} has {queued} requests waiting already (GATEWAY_MAX_QUEUE); retry shortly"
        )


class NotReady(GatewayError):
    def __init__(self, stage: str) -> None:
        self.stage = stage
        super().__init__(f"The gateway is not ready yet ({stage}); retry shortly or send to another replica")


class ShuttingDown(GatewayError):
    def __init__(self) -> None:
        super().__init__("The gateway is shutting down")
