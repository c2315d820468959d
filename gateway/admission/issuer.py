"""The identity provider's signing keys, as a gateway holds them: fetched off the request path,
refetched when the provider rotates them, kept while it is down.

Trust boundary: the issuer's discovery document and JWKS are trusted for what they say (they
are the provider's), fetched over https from the configured issuer only (``http`` on loopback
for tests), each answer read up to :data:`MAX_DOCUMENT_BYTES` with a timeout. The discovery
document must name the configured issuer (OpenID Connect Discovery, 4.3). Of the JWKS, only
signature keys of the accepted algorithms (RS256, ES256, EdDSA) are kept: an ``oct`` (HMAC)
key, an encryption key or one PyJWT cannot read is skipped, so no token is ever verified with
HMAC, whatever its header says.

The order of events: :meth:`IssuerKeys.start` fetches once at once, then every
``GATEWAY_OIDC_JWKS_REFRESH_SECONDS`` (a :class:`Periodic`). A token naming a ``kid`` not
held calls :meth:`IssuerKeys.refetch`: one fetch at most every ``GATEWAY_OIDC_KID_REFETCH_SECONDS``,
and requests arriving while it runs wait for that one fetch (no stampede on the provider).
A fetch that fails keeps the keys held (tokens they signed keep verifying); a fetch that
works replaces them, so a key the provider dropped stops verifying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import jwt
import orjson

from registry_sync.periodic import Outage, Periodic

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256", "EdDSA")
MAX_DOCUMENT_BYTES = 1 << 20  # a JWKS of a few keys is a few KB
_FETCH_TIMEOUT_SECONDS = 5.0


class FetchFailed(Exception):
    """The discovery document or the JWKS could not be fetched or read; says which and why."""


class IssuerKeys:
    def __init__(
        self,
        issuer: str,
        *,
        refresh_seconds: float,
        refetch_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.issuer = issuer
        self.discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self._refetch_seconds = refetch_seconds
        self._clock = clock
        self._transport = transport
        self._keys: dict[str | None, jwt.PyJWK] = {}  # kid -> key; None: the one key without a kid
        self._jwks_uri: str | None = None
        self._fetching: asyncio.Future[None] | None = None
        self._last_refetch: float | None = None
        self._first: asyncio.Task[None] | None = None
        self.fetched = False  # a fetch has worked once: tokens can be verified
        self.fetches = 0  # fetches of the JWKS tried (for tests and the status)
        self.on_change: Callable[[], None] = lambda: None  # keys dropped: what they verified is not kept
        self._outage = Outage(
            log,
            "cannot fetch the identity provider's keys (keeping those held)",
            "fetching the identity provider's keys again",
        )
        self._loop = Periodic("fetching the identity provider's keys", refresh_seconds, self.fetch, log=log)

    def key(self, kid: str | None, algorithm: str) -> jwt.PyJWK | None:
        """The key a token's header names, if held: by its ``kid``; a token without one may use
        the only key of its algorithm."""
        if kid is not None:
            return self._keys.get(kid)
        found = [key for key in self._keys.values() if key.algorithm_name == algorithm]
        return found[0] if len(found) == 1 else None

    def start(self) -> None:
        self._first = asyncio.get_running_loop().create_task(self.fetch(), name="identity provider keys, first fetch")
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._first is not None:
            self._first.cancel()
            await asyncio.gather(self._first, return_exceptions=True)
        if self._fetching is not None:
            self._fetching.cancel()

    async def refetch(self) -> None:
        """For a ``kid`` not held: join the fetch under way, or start one unless one was started
        within the refetch interval (then nothing: the caller is refused)."""
        if self._fetching is None:
            now = self._clock()
            if self._last_refetch is not None and now - self._last_refetch < self._refetch_seconds:
                return
            self._last_refetch = now
        await self.fetch()

    async def fetch(self) -> None:
        """Fetch the JWKS (one fetch at a time: a second caller waits for the first's)."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        await asyncio.shield(self._fetching)

    def _fetched(self, done: asyncio.Future[None]) -> None:
        self._fetching = None
        if not done.cancelled():
            done.exception()  # _fetch raises nothing: this only marks it retrieved

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=_FETCH_TIMEOUT_SECONDS, follow_redirects=False
            ) as client:
                if self._jwks_uri is None:
                    self._jwks_uri = self._jwks_uri_of(await _document(client, self.discovery_url))
                keys = _signing_keys(await _document(client, self._jwks_uri))
        except FetchFailed as exc:
            self._jwks_uri = None  # discover again next time: the provider may have moved it
            self._outage.failed(exc)
            return
        except Exception as exc:  # whatever the network or a library raises: never the caller's
            self._jwks_uri = None
            self._outage.failed(f"{type(exc).__name__}: {exc}")
            return
        self._outage.passed()
        dropped = self._keys.keys() - keys.keys()
        if keys.keys() != self._keys.keys():
            log.info("identity provider keys: %s", ", ".join(sorted(str(kid) for kid in keys)) or "none")
        self._keys = keys
        self.fetched = True
        if dropped:
            self.on_change()

    def _jwks_uri_of(self, document: object) -> str:
        if not isinstance(document, dict):
            raise FetchFailed(f"{self.discovery_url}: not a JSON object")
        if document.get("issuer") != self.issuer:
            raise FetchFailed(f"{self.discovery_url}: names another issuer than GATEWAY_OIDC_ISSUER")
        uri = document.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise FetchFailed(f"{self.discovery_url}: no jwks_uri")
        if uri.startswith("http://") and not self.issuer.startswith("http://"):
            raise FetchFailed(f"{self.discovery_url}: the jwks_uri is not https")
        return uri


async def _document(client: httpx.AsyncClient, url: str) -> object:
    try:
        async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise FetchFailed(f"{url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise FetchFailed(f"{url}: larger than {MAX_DOCUMENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise FetchFailed(f"{url}: {type(exc).__name__}: {exc}") from exc
    try:
        return orjson.loads(bytes(body))
    except orjson.JSONDecodeError as exc:
        raise FetchFailed(f"{url}: not JSON") from exc


def _signing_keys(document: object) -> dict[str | None, jwt.PyJWK]:
    """The JWKS's signature keys of the accepted algorithms, by kid; an unreadable key is skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchFailed("the JWKS is not an object with a list of keys")
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        if key.algorithm_name in ALGORITHMS and kid not in keys:
            keys[kid] = key
    if None in keys and len(keys) > 1:
        del keys[None]  # a key without a kid is used only when it is the only one
    if not keys:
        raise FetchFailed(f"the JWKS holds no signature key of {', '.join(ALGORITHMS)}")
    return keys
