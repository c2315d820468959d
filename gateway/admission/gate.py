"""The one check every request passes before either lane of the app sees it: who is asking
(the key, or the identity provider's token: :mod:`gateway.admission.tokens`), whether the
route lets them (its declared access), and whether their limits and the model's leave room.
Knows nothing of HTTP beyond raw headers; raises the data plane's errors, which
gateway.http.errors puts into words (401, 403, 429).

The order matters: the scope is checked before anything looks at the registry or loads a
model, so a key cannot learn which models exist outside its scopes, nor make the gateway
load them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.admission.access import Access, Requirement
from gateway.admission.auth import KeyRing, bearer
from gateway.admission.limits import NO_PERMIT, Limit, Limiter, Permit
from gateway.admission.quotas import QuotaGuard
from gateway.admission.tokens import TokenCaller, TokenVerifier
from gateway.errors import Forbidden, InsufficientScope, InvalidToken, RateLimited, Unauthenticated
from gateway.metrics import GatewayMetrics
from gateway.observability import context
from registry_sync.keys import ApiKey

_MAX_REMEMBERED = 10_000

Caller = ApiKey | TokenCaller
"""Who asks: a key, or a verified token (both have a ``name``, ``digest``, ``scopes``, ``rate``
and ``concurrency``; a token has no limits of its own)."""


class Gate:
    def __init__(
        self,
        *,
        keys: KeyRing | None,
        tokens: TokenVerifier | None = None,
        limiter: Limiter,
        metrics: GatewayMetrics,
        probes_need_keys: bool,
        model_rate: float | None,
        model_concurrency: int | None,
        known_model: Callable[[str], bool],
        quotas: QuotaGuard | None = None,
    ) -> None:
        self.keys = keys
        self.tokens = tokens
        self.quotas = quotas  # checked only while one is defined (read at each usage flush)
        # keys+oidc: a bearer that is no key is tried as a token only when it looks like one
        # (a JWT has two dots; a key's secret none), so a wrong key still reads "not valid".
        self._keys_first = keys is not None and keys.follows and tokens is not None
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
        self.active = keys is not None or tokens is not None or self._model_limits
        """False: every request passes untouched (no keys, no model limits): nothing to check."""

    async def admit(self, requirement: Requirement, headers: Iterable[tuple[bytes, bytes]]) -> Permit:
        """The request's permit (give it back when the answer is sent), or the error to answer."""
        key, limits = await self.check(requirement.access, requirement.model, headers)
        return await self.acquire(key, limits) if limits else NO_PERMIT

    async def check(
        self, access: Access, model: str | None, headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[Caller | None, list[Limit]]:
        """Who asks and whether they may (raises what to answer if not), and the limits their
        permit must be acquired from; none (most requests): nothing to wait for, no permit.
        A :class:`Requirement`'s two fields, passed apart: the predict lane makes none. The
        caller's name (a key's, or ``oidc:<sub>``) goes into the request's context as its
        ``key_id``, on every protocol."""
        key = None
        if (self.keys is not None or self.tokens is not None) and access not in self._open:
            key = await self._authenticate(headers)
            if (request := context.current()) is not None:
                request.key_id = key.name
            self._authorize(key, access, model)
            if self.quotas is not None and self.quotas.quotas and access is Access.PREDICT and model:
                groups = key.groups if isinstance(key, TokenCaller) else ()
                applied = await self.quotas.check(key.name, groups, model)
                if applied and request is not None:
                    request.quotas = applied  # counted once the predict is answered
        limits = self._limits(key, access, model)
        if not limits and key is not None:
            self._used(key, "allowed")
        return key, limits

    async def acquire(self, key: Caller | None, limits: list[Limit]) -> Permit:
        """A permit from ``limits`` (what :meth:`check` gave), or RateLimited."""
        try:
            permit = await self.limiter.acquire(limits)
        except RateLimited as exc:
            self._metrics.limited(exc.limit)
            if key is not None:
                self._used(key, "limited")
            raise
        if key is not None:
            self._used(key, "allowed")
        return permit

    def _used(self, caller: Caller, outcome: str) -> None:
        # tokens are counted together: a label per subject would grow without bound
        if isinstance(caller, TokenCaller):
            self._metrics.token_used(outcome)
        else:
            self._metrics.key_used(caller.name, outcome)

    async def _authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> Caller:
        sent = False
        raw = None  # the Authorization header's bytes: a token verified already is found by them
        if self.tokens is not None:
            raw = next((value for name, value in headers if name == b"authorization"), None)
            if raw is not None and (known := self.tokens.known(raw)) is not None:
                return known
        if self.keys is not None:
            key, sent = self.keys.identify(headers)
            if key is not None:
                return key
        if self.tokens is not None:
            token = bearer(headers)
            if token is not None and (not self._keys_first or token.count(".") == 2):
                try:
                    caller = await self.tokens.verify(token)
                except InvalidToken as exc:
                    self._metrics.auth_failed(f"token_{exc.reason}")
                    raise
                if raw is not None:
                    self.tokens.remember(raw, caller)
                return caller
            sent = sent or token is not None
        self._metrics.auth_failed("unknown" if sent else "missing")
        raise Unauthenticated(sent=sent, tokens=self.tokens is not None, keys=self._keys_first or self.tokens is None)

    def _authorize(self, key: Caller, access: Access, model: str | None) -> None:
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
        else:  # CALLER: the route answers with the caller's own; KEY: a path no route answers
            return
        self._used(key, "forbidden")
        if isinstance(key, TokenCaller):
            raise InsufficientScope(key.subject, missing)
        raise Forbidden(key.name, missing)

    async def caller(self, headers: Iterable[tuple[bytes, bytes]]) -> Caller | None:
        """Who sends a request admitted already (its key or token: the lookups are the cached
        ones), or None without keys or tokens. Raises Unauthenticated (401) rather than answer
        None, which means "anyone", should a token lapse between the gate and the route."""
        if self.keys is None and self.tokens is None:
            return None
        return await self._authenticate(headers)

    async def listed(self, headers: Iterable[tuple[bytes, bytes]]) -> Callable[[str], bool]:
        """Which models a listing shows the caller (admitted already): every one without keys or
        with the ``read`` scope, else those its ``predict:`` scopes match."""
        if self.keys is None and self.tokens is None:
            return lambda model: True
        try:
            key: Caller | None = await self._authenticate(headers)
        except Unauthenticated:
            key = None
        if key is None or key.scopes.read:
            return lambda model: key is not None
        return key.scopes.can_predict

    def _limits(self, key: Caller | None, access: Access, model: str | None) -> list[Limit]:
        limits = []
        if key is not None and (key.rate is not None or key.concurrency is not None):
            limits.append(Limit("key", key.name, key.rate, key.concurrency))
        # Only models the catalog knows: a name nobody registered must not grow the counters
        # (its request is a 404, or one look at the registry, limited per model already).
        if self._model_limits and model and access is Access.PREDICT and self._known_model(model):
            limits.append(Limit("model", model, self._model_rate, self._model_concurrency))
        return limits
