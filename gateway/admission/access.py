"""What each route asks of a caller: declared beside the route, checked in one place.

Every route declares its :class:`Access` with :func:`requires` (FastAPI's and Starlette's
routes alike, mounts included). :meth:`AccessMap.of` reads the declarations of all the
app's routes and refuses to build (:class:`UndeclaredRoute`) if one has none, so a route
cannot be added that the check does not know; a path that no route answers needs a valid
key all the same. The check runs in ``GatewayApp.__call__``, before either of the app's two
lanes (the bare-ASGI predict lane and FastAPI's routing) sees the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import FastAPI
from starlette.routing import Match, Mount
from starlette.types import Scope

_ATTRIBUTE = "__gateway_access__"
T = TypeVar("T")


class Access(StrEnum):
    PUBLIC = "public"
    """The API's own description (``/docs``, ``/redoc``, ``/openapi.json``): never a key."""
    PROBE = "probe"
    """Health and metrics: open unless ``GATEWAY_METRICS_AUTH=on``, then the ``read`` scope."""
    WEBHOOK = "webhook"
    """Signed by the sender with its own HMAC secret: no key."""
    READ = "read"
    """The ``read`` scope: models, versions, events."""
    ADMIN = "admin"
    """The ``admin`` scope: ``/admin/*``."""
    FEEDBACK = "feedback"
    """The ``feedback`` scope: ``POST /feedback`` (labels for answers already given)."""
    PREDICT = "predict"
    """A ``predict:<glob>`` scope matching the model named in the path."""
    LIST = "list"
    """The ``read`` scope or any ``predict:<glob>``: a listing that shows a key only the models
    it may call (``GET /v1/models``, which OpenAI's clients call with a predict key)."""
    CALLER = "caller"
    """Any valid key or token: the answer is the caller's own (``GET /usage``: everyone's with
    the ``read`` or ``admin`` scope, else the caller's)."""
    KEY = "key"
    """Any valid key: a path no route answers (a 404 for a caller with a key, 401 otherwise)."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """What one request needs: an access, and for a predict the model it names."""

    access: Access
    model: str | None = None


NO_ROUTE = Requirement(Access.KEY)


class UndeclaredRoute(Exception):
    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        super().__init__(
            "routes without a declared access (decorate them with gateway.admission.access.requires): "
            + ", ".join(paths)
        )


def requires(access: Access) -> _Marker:
    """Declare what a route needs: ``@requires(Access.READ)`` under ``@router.get(...)``, or
    ``requires(Access.PUBLIC)(StaticFiles(...))`` for a mounted app."""
    return _Marker(access)


class _Marker:
    __slots__ = ("access",)

    def __init__(self, access: Access) -> None:
        self.access = access

    def __call__(self, target: T) -> T:
        setattr(target, _ATTRIBUTE, self.access)
        return target


def routes(app: FastAPI) -> list[Any]:
    """Every route the app answers with, in the order its router tries them: ``app.routes``
    with included routers opened up (FastAPI 0.16x keeps them as one entry each)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # an older FastAPI copies included routes into app.routes
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def declared(route: Any, *, openapi_url: str | None) -> Access | None:
    """The access a route (one of :func:`routes`) declared, or None."""
    if openapi_url is not None and getattr(route, "path", None) == openapi_url:
        return Access.PUBLIC  # FastAPI adds this route itself: the schema is as public as /docs
    original = getattr(route, "original_route", route)
    target = original.app if isinstance(original, Mount) else getattr(route, "endpoint", None)
    access = getattr(target, _ATTRIBUTE, None)
    return access if isinstance(access, Access) else None


class AccessMap:
    """Every route of an app with the access it declared, matched as Starlette matches them."""

    def __init__(self, declared: list[tuple[Any, Access]]) -> None:
        self._routes = declared

    @classmethod
    def of(cls, app: FastAPI) -> AccessMap:
        found, missing = [], []
        for route in routes(app):
            access = declared(route, openapi_url=app.openapi_url)
            if access is None:
                missing.append(str(getattr(route, "path", route)))
            else:
                found.append((route, access))
        if missing:
            raise UndeclaredRoute(missing)
        return cls(found)

    def classify(self, scope: Scope) -> Requirement:
        """What the route that will answer this request needs: the first full match, else the
        first partial one (the route exists, the method does not: 405), else NO_ROUTE."""
        partial: Requirement | None = None
        for route, access in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return _requirement(access, child)
            if match is Match.PARTIAL and partial is None:
                partial = _requirement(access, child)
        return partial if partial is not None else NO_ROUTE


def _requirement(access: Access, child: Scope) -> Requirement:
    if access is Access.PREDICT:
        return Requirement(access, str(child.get("path_params", {}).get("name", "")))
    return Requirement(access)
