"""The usage room: what each caller used of each model version (``gateway.admission.usage``),
and the quotas' counts after each predict (the gate checked them before).

Every predict's end is counted by :meth:`UsageRoom.finished`, whatever its protocol; the
meter adds this process's counts to the state database at ``GATEWAY_USAGE_FLUSH_SECONDS``
and reads the quotas back. Started when the process takes traffic (the quotas read first, so
none is missed by the first requests); stopped once the data plane has answered its last
request, with a last flush.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admission.quotas import QuotaGuard
from gateway.admission.usage import UsageMeter
from gateway.metrics import GatewayMetrics
from gateway.observability.context import RequestContext
from gateway.routing.catalog import Resolved
from gateway.settings import GatewaySettings
from registry_sync.usage import ANONYMOUS, UsageStore


@dataclass(eq=False)
class UsageRoom:
    meter: UsageMeter | None  # None: GATEWAY_USAGE_FLUSH_SECONDS=0
    store: UsageStore

    @classmethod
    def build(
        cls, settings: GatewaySettings, store: UsageStore, metrics: GatewayMetrics, *, quotas: QuotaGuard | None
    ) -> UsageRoom:
        if settings.usage_flush_seconds <= 0:
            return cls(None, store)
        metrics.track_usage(by_caller=settings.usage_metrics_by_caller)
        meter = UsageMeter(store, metrics, interval_seconds=settings.usage_flush_seconds, quotas=quotas)
        return cls(meter, store)

    def finished(self, served: Resolved, status: int, request: RequestContext | None) -> None:
        """A predict answered with ``served`` (on the event loop): counted in memory."""
        meter = self.meter
        if meter is None:
            return
        if request is None:
            meter.count(ANONYMOUS, served.name, served.version, status >= 400, 0, 0.0, 0)
            return
        meter.count(
            request.key_id or ANONYMOUS,
            served.name,
            served.version,
            status >= 400,
            request.rows,
            request.predict_seconds or 0.0,
            request.tokens,
            request.time,
        )
        if request.quotas and meter.quotas is not None:
            meter.quotas.counted(request.quotas, rows=request.rows, tokens=request.tokens)

    async def start(self) -> None:
        if self.meter is not None:
            if self.meter.quotas is not None:
                await self.meter.quotas.refresh()
            self.meter.start()

    async def stop(self) -> None:
        if self.meter is not None:
            await self.meter.stop()
