"""The one check every request passes before either lane of the app sees it: who is asking
(the key), whether the route lets them (its declared access), and whether their limits and
the model's leave room. Knows nothing of HTTP beyond raw headers; raises the data plane's
errors, which gateway.http.errors puts into words (401, 403, 429).

The order matters: the scope is checked before anything looks at the registry or loads a
model, so a key cannot learn which models exist outside its scopes, nor make the gateway
load them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.admission.access import Access, Requirement
from gateway.admission.auth import KeyRing
from gateway.admission.limits import NO_PERMIT, Limit, Limiter, Permit
from gateway.errors import Forbidden, RateLimited, Unauthenticated
from gateway.metrics import GatewayMetrics
from registry_sync.keys import ApiKey

_MAX_REMEMBERED = 10_000


class Gate:
    def __init__(
        self,
        *,
        keys: KeyRing | None,
        limiter: Limiter,
        metrics: GatewayMetrics,
        probes_need_keys: bool,
        model_rate: float | None,
        model_concurrency: int | None,
        known_model: Callable[[str], bool],
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self._metrics = metrics
        self._open = {Access.PUBLIC, Access.WEBHOOK} | (set() if probes_need_keys else {Access.PROBE})
        self._model_limits = model_rate is not None or model_concurrency is not None
        self._model_rate = model_rate
        self._model_concurrency = model_concurrency
        self._known_model = known_model
        # (key digest, model) -> may predict: fnmatch per request costs more than the rest of
        # the check. A digest's scopes never change (a re-created key has a new secret).
        self._predicts: dict[tuple[str, str], bool] = {}
        self.active = keys is not None or self._model_limits
        """False: every request passes untouched (no keys, no model limits): nothing to check."""

    async def admit(self, requirement: Requirement, headers: Iterable[tuple[bytes, bytes]]) -> Permit:
        """The request's permit (give it back when the answer is sent), or the error to answer."""
        key, limits = self.check(requirement.access, requirement.model, headers)
        return await self.acquire(key, limits) if limits else NO_PERMIT

    def check(
        self, access: Access, model: str | None, headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[ApiKey | None, list[Limit]]:
        """Who asks and whether they may (raises what to answer if not), and the limits their
        permit must be acquired from; none (most requests): nothing to wait for, no permit.
        A :class:`Requirement`'s two fields, passed apart: the predict lane makes none."""
        key = None
        if self.keys is not None and access not in self._open:
            key = self._authenticate(headers)
            self._authorize(key, access, model)
        limits = self._limits(key, access, model)
        if not limits and key is not None:
            self._metrics.key_used(key.name, "allowed")
        return key, limits

    async def acquire(self, key: ApiKey | None, limits: list[Limit]) -> Permit:
        """A permit from ``limits`` (what :meth:`check` gave), or RateLimited."""
        try:
            permit = await self.limiter.acquire(limits)
        except RateLimited as exc:
            self._metrics.limited(exc.limit)
            if key is not None:
                self._metrics.key_used(key.name, "limited")
            raise
        if key is not None:
            self._metrics.key_used(key.name, "allowed")
        return permit

    def _authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> ApiKey:
        assert self.keys is not None
        key, sent = self.keys.identify(headers)
        if key is None:
            self._metrics.auth_failed("unknown" if sent else "missing")
            raise Unauthenticated(sent=sent)
        return key

    def _authorize(self, key: ApiKey, access: Access, model: str | None) -> None:
        scopes = key.scopes
        if access is Access.PREDICT:
            model = model or ""
            allowed = self._predicts.get((key.digest, model))
            if allowed is None:
                if len(self._predicts) >= _MAX_REMEMBERED:  # names are the callers' to choose
                    self._predicts.clear()
                allowed = self._predicts[(key.digest, model)] = scopes.can_predict(model)
            if allowed:
                return
            missing = f"predict:<a pattern matching '{model}'>"
        elif access is Access.READ or access is Access.PROBE:
            if scopes.read:
                return
            missing = "read"
        elif access is Access.ADMIN:
            if scopes.admin:
                return
            missing = "admin"
        elif access is Access.FEEDBACK:
            if scopes.feedback:
                return
            missing = "feedback"
        elif access is Access.LIST:
            if scopes.read or scopes.predict:
                return
            missing = "read or predict:<glob>"
        else:  # KEY: a path no route answers; any key may hear that it is not there
            return
        self._metrics.key_used(key.name, "forbidden")
        raise Forbidden(key.name, missing)

    def listed(self, headers: Iterable[tuple[bytes, bytes]]) -> Callable[[str], bool]:
        """Which models a listing shows the caller (admitted already): every one without keys or
        with the ``read`` scope, else those its ``predict:`` scopes match."""
        if self.keys is None:
            return lambda model: True
        key, _ = self.keys.identify(headers)
        if key is None or key.scopes.read:
            return lambda model: key is not None
        return key.scopes.can_predict

    def _limits(self, key: ApiKey | None, access: Access, model: str | None) -> list[Limit]:
        limits = []
        if key is not None and (key.rate is not None or key.concurrency is not None):
            limits.append(Limit("key", key.name, key.rate, key.concurrency))
        # Only models the catalog knows: a name nobody registered must not grow the counters
        # (its request is a 404, or one look at the registry, limited per model already).
        if self._model_limits and model and access is Access.PREDICT and self._known_model(model):
            limits.append(Limit("model", model, self._model_rate, self._model_concurrency))
        return limits
