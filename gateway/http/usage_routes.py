"""HTTP for usage: ``GET /usage``, the fleet's use per caller, model, version and UTC day, and
the quotas that bound it (``registry_sync/usage.py``, ``registry_sync/quotas.py``)."""

from __future__ import annotations

import time
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from gateway.admission.access import Access, requires
from gateway.admission.tokens import TokenCaller
from gateway.errors import InvalidInput
from gateway.process import Services
from gateway.wire.api_schemas import ErrorBody, QuotaBody, UsageLineBody, UsageReport, utc_iso
from registry_sync.quotas import GROUP_PREFIX, Quota, QuotaStore
from registry_sync.usage import UsageStore, matching, parse_day

router = APIRouter()


@router.get(
    "/usage",
    response_model=UsageReport,
    tags=["control"],
    summary="Usage per caller, model, version and UTC day, summed over the fleet; the quotas",
    responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody}},
)
@requires(Access.CALLER)
async def usage(
    request: Request,
    caller: Annotated[str | None, Query(max_length=320, description="Only this caller")] = None,
    model: Annotated[str | None, Query(max_length=256, description="Only this model")] = None,
    since: Annotated[str | None, Query(max_length=40, description="From this UTC day on (YYYY-MM-DD)")] = None,
    until: Annotated[str | None, Query(max_length=40, description="Up to this UTC day, included")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> UsageReport:
    """A caller with the ``read`` or ``admin`` scope (or anyone, without keys) sees every
    caller's; any other sees its own. Usage counts reach the database at each replica's
    ``GATEWAY_USAGE_FLUSH_SECONDS``: the last interval's are not here yet."""
    services: Services = request.app.state.services
    try:
        first = parse_day(since) if since is not None else None
        last = parse_day(until) if until is not None else None
    except ValueError as exc:
        raise InvalidInput(f"since/until: {exc}") from None
    who = await services.gate.caller(request.scope["headers"])
    sees_all = who is None or who.scopes.read or who.scopes.admin
    groups = who.groups if isinstance(who, TokenCaller) else ()
    callers = None if sees_all else [who.name] if who is not None else []
    if caller is not None:
        callers = [caller] if callers is None or caller in callers else []
    engine = services.rooms.state.engine
    lines = await anyio.to_thread.run_sync(
        lambda: UsageStore(engine).lines(callers=callers, model=model, since=first, until=last, limit=limit)
    )
    quotas = await anyio.to_thread.run_sync(QuotaStore(engine).quotas)
    name = who.name if who is not None else None
    if not sees_all:
        quotas = [q for q in quotas if q.bounds(name or "", groups)]
    if caller is not None:
        quotas = [q for q in quotas if q.caller == caller or q.caller.startswith(GROUP_PREFIX)]
    shown = await anyio.to_thread.run_sync(lambda: _quotas(UsageStore(engine), quotas, name, groups))
    return UsageReport(usage=[UsageLineBody(**line.as_dict()) for line in lines], quotas=shown)  # type: ignore[arg-type]


def _quotas(store: UsageStore, quotas: list[Quota], asking: str | None, groups: tuple[str, ...]) -> list[QuotaBody]:
    """The quotas with this period's use: their caller's, or for a group's the asker's own when
    a member (a group has no one figure: each member has the quota)."""
    now = time.time()
    shown = []
    for q in quotas:
        start, end = q.window(now)
        since = start.strftime("%Y-%m-%d")
        if not q.caller.startswith(GROUP_PREFIX):
            subject: str | None = q.caller
        else:
            subject = asking if asking is not None and q.bounds(asking, groups) else None
        used = None
        if subject is not None:
            used = matching(store.sums([subject], since=since), subject, q.models, since).amount(q.unit)
        shown.append(
            QuotaBody(
                name=q.name,
                caller=q.caller,
                models=q.models,
                period=q.period,
                unit=q.unit,
                amount=q.amount,
                used=used,
                resets_at=utc_iso(end),
            )
        )
    return shown
