"""The admission room: the gate every request passes before either lane sees it.

The API keys (GATEWAY_AUTH=keys: read from the state database when built, so that a process
with none says so at start, then followed once started) and the limits, in this process or in
Redis (GATEWAY_RATE_LIMIT_REDIS). The keys stop being followed first when the process stops;
the limiter's Redis connection is closed once the models are unloaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.admission.auth import KeyRing, admin_token_key
from gateway.admission.gate import Gate
from gateway.admission.limits import Limiter, RedisLimits
from gateway.metrics import GatewayMetrics
from gateway.settings import GatewaySettings
from registry_sync.keys import KeyStore

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

    async def stop(self) -> None:
        if self.gate.keys is not None:
            await self.gate.keys.stop()

    async def close(self) -> None:
        await self.gate.limiter.close()


def _gate(
    settings: GatewaySettings, engine: Engine, metrics: GatewayMetrics, *, known_model: Callable[[str], bool]
) -> Gate:
    """The check before every request: the keys (read now, followed once started) and limits."""
    store = KeyStore(engine)
    keys = None
    if settings.auth == "keys":
        fixed = [admin_token_key(settings.admin_token.get_secret_value())] if settings.admin_token else []
        keys = KeyRing(store, follow_interval_seconds=settings.follow_interval_seconds, fixed=fixed)
        keys.load()
        if not keys.names():
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
    return Gate(
        keys=keys,
        limiter=Limiter(metrics, shared=shared),
        metrics=metrics,
        probes_need_keys=settings.metrics_auth == "on",
        model_rate=settings.model_rate,
        model_concurrency=settings.model_concurrency,
        known_model=known_model,
    )
