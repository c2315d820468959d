"""The admission room: the gate every request passes before either lane sees it.

The API keys (GATEWAY_AUTH=keys: read from the state database when built, so that a process
with none says so at start, then followed once started), the identity provider's keys for
its tokens (GATEWAY_AUTH=oidc or keys+oidc: fetched from the start, off the request path)
the limits, in this process or in Redis (GATEWAY_RATE_LIMIT_REDIS), and the callers' quotas
(read at each usage flush: ``gateway.rooms.usage``; counted in Redis too where it is set). The keys stop being
followed first when the process stops; the limiter's Redis connection is closed once the
models are unloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.admission.auth import KeyRing, admin_token_key
from gateway.admission.gate import Gate
from gateway.admission.issuer import IssuerKeys
from gateway.admission.limits import Limiter, RedisLimits
from gateway.admission.quotas import QuotaGuard
from gateway.admission.tokens import TokenVerifier
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from registry_sync.keys import KeyStore
from registry_sync.quotas import QuotaStore
from registry_sync.usage import UsageStore

log = logging.getLogger("gateway.process")  # the process's start-up lines, under the name they always had


@dataclass(eq=False)
class AdmissionRoom:
    gate: Gate

    @classmethod
    def build(
        cls, settings: GatewaySettings, engine: Engine, metrics: GatewayMetrics, *, known_model: Callable[[str], bool]
    ) -> AdmissionRoom:
        return cls(gate=_gate(settings, engine, metrics, known_model=known_model))

    def start(self) -> None:
        if self.gate.keys is not None:
            self.gate.keys.start()  # keys were read at build; from now on, followed
        if self.gate.tokens is not None:
            self.gate.tokens.keys.start()  # the first fetch, at once, then every refresh interval

    async def stop(self) -> None:
        if self.gate.keys is not None:
            await self.gate.keys.stop()
        if self.gate.tokens is not None:
            await self.gate.tokens.keys.stop()

    async def close(self) -> None:
        if self.gate.quotas is not None:
            await self.gate.quotas.close()  # the rows and tokens still being added in Redis
        await self.gate.limiter.close()


def _gate(
    settings: GatewaySettings, engine: Engine, metrics: GatewayMetrics, *, known_model: Callable[[str], bool]
) -> Gate:
    """The check before every request: the keys (read now, followed once started) and limits."""
    store = KeyStore(engine)
    keys = None
    fixed = [admin_token_key(settings.admin_token.get_secret_value())] if settings.admin_token else []
    if settings.auth == "oidc" and fixed:  # tokens only, but the admin token still opens /admin/*
        keys = KeyRing(None, follow_interval_seconds=settings.follow_interval_seconds, fixed=fixed)
    if settings.auth in ("keys", "keys+oidc"):
        keys = KeyRing(store, follow_interval_seconds=settings.follow_interval_seconds, fixed=fixed)
        keys.load()
        if not keys.names() and settings.auth == "keys":
            log.warning(
                "GATEWAY_AUTH=keys and no API key exists: every request but health and metrics answers 401; "
                "create one with 'registry-gateway keys create NAME --scopes ...'"
            )
    shared = None
    if settings.rate_limit_redis is not None:
        # Long enough for any request (a cold load, a slow predict): an entry outlives its
        # request only if its process died before giving it back.
        lease_seconds = 60 + settings.registry_timeout_seconds + settings.predict_timeout_seconds
        shared = RedisLimits(settings.rate_limit_redis, namespace=store.deployment_id(), lease_seconds=lease_seconds)
    quotas = None
    if settings.usage_flush_seconds > 0 and settings.auth != "off":  # a quota bounds a caller: none without keys
        quotas = QuotaGuard(QuotaStore(engine), UsageStore(engine), metrics, shared=shared)
    return Gate(
        keys=keys,
        tokens=_tokens(settings) if "oidc" in settings.auth else None,
        limiter=Limiter(metrics, shared=shared),
        metrics=metrics,
        probes_need_keys=settings.metrics_auth == "on",
        model_rate=settings.model_rate,
        model_concurrency=settings.model_concurrency,
        known_model=known_model,
        quotas=quotas,
    )


def _tokens(settings: GatewaySettings) -> TokenVerifier:
    assert settings.oidc_issuer is not None and settings.oidc_audience is not None  # the settings require them
    issuer = IssuerKeys(
        settings.oidc_issuer,
        refresh_seconds=settings.oidc_jwks_refresh_seconds,
        refetch_seconds=settings.oidc_kid_refetch_seconds,
    )
    return TokenVerifier(
        issuer,
        audience=settings.oidc_audience,
        scopes_claim=settings.oidc_scopes_claim,
        groups_claim=settings.oidc_groups_claim,
        scope_map=settings.oidc_scope_map,
        skew_seconds=settings.oidc_clock_skew_seconds,
    )
