"""API keys as a gateway holds them: in memory, by the sha256 of their secret, following the
state database.

The keys are read once when the process starts and again whenever the database's keys
generation moves (looked at every ``GATEWAY_FOLLOW_INTERVAL_SECONDS``), so a key created or
revoked with ``registry-gateway keys`` counts in every replica within that interval. The
database being unreachable keeps the keys last read (as it keeps serving the models).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

import anyio.to_thread

from registry_sync.errors import RegistryError
from registry_sync.keys import ApiKey, KeyStore, Scopes, digest_of

log = logging.getLogger(__name__)

_REMEMBERED = 1_000
_REMEMBERED_BYTES = 512  # the two headers of a remembered key, at most (a secret is 47 characters)

ADMIN_TOKEN_KEY = "admin-token"
"""The name ``GATEWAY_ADMIN_TOKEN`` goes by when keys are on: a key with the admin scope alone."""


def _sent(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """The first ``Authorization`` and the first ``X-API-Key`` header, as sent (the first of
    each, as Starlette's ``Headers.get``)."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value
        elif name == b"x-api-key" and api_key is None:
            api_key = value
    return authorization, api_key


def _secret(authorization: bytes | None, api_key: bytes | None) -> str | None:
    """The key a request sends: ``Authorization: Bearer <key>``, else ``X-API-Key: <key>``."""
    if authorization is not None:
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key is not None:
        return api_key.decode("latin-1").strip() or None
    return None


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The bearer token of the first ``Authorization`` header, if it sends one."""
    authorization, _ = _sent(headers)
    return _secret(authorization, None)


def admin_token_key(token: str) -> ApiKey:
    return ApiKey(
        name=ADMIN_TOKEN_KEY,
        digest=digest_of(token),
        prefix="",
        scopes=Scopes(admin=True),
        rate=None,
        concurrency=None,
        created_at=datetime.now(UTC),
        created_by="GATEWAY_ADMIN_TOKEN",
        revoked_at=None,
    )


class KeyRing:
    def __init__(self, store: KeyStore | None, *, follow_interval_seconds: float, fixed: Iterable[ApiKey] = ()) -> None:
        self._store = store
        self.follows = store is not None
        """False: only the fixed keys (GATEWAY_ADMIN_TOKEN with GATEWAY_AUTH=oidc), none from the database."""
        self._interval = follow_interval_seconds
        self._fixed = {key.digest: key for key in fixed}
        # The headers that carried a key found before -> that key: a request sends the same
        # bytes every time, and parsing them and taking their sha256 was most of what a key
        # cost a request. Replaced with the keys (``load``), so a revoked key is not found
        # here either; a request that read the old pair writes into the old dict. Like the
        # request itself, it holds the secret in this process's memory; its lookup hashes
        # with Python's per-process random key, which a caller cannot steer. The keys by
        # their digest and this dict are one pair, replaced in one assignment.
        self._remembered: tuple[dict[str, ApiKey], dict[tuple[bytes | None, bytes | None], ApiKey]] = (
            dict(self._fixed),
            {},
        )
        self._generation: int | None = None
        self._task: asyncio.Task[None] | None = None

    def identify(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[ApiKey | None, bool]:
        """The active key a request's headers carry (see :func:`_secret`), or None; and
        whether they carry a key at all (a missing key and an unknown one are told apart)."""
        by_digest, remembered = self._remembered
        sent = _sent(headers)
        key = remembered.get(sent)
        if key is not None:
            return key, True
        secret = _secret(*sent)
        if secret is None:
            return None, False
        key = self._find(by_digest, secret)
        # Only keys found (an unknown key's headers are the sender's to vary), and only headers
        # of a key's size: a key's holder may vary or pad the headers it sends, and what is
        # kept stays under _REMEMBERED pairs of _REMEMBERED_BYTES.
        if key is not None and len(sent[0] or b"") + len(sent[1] or b"") <= _REMEMBERED_BYTES:
            if len(remembered) >= _REMEMBERED:
                remembered.clear()
            remembered[sent] = key
        return key, True

    @staticmethod
    def _find(by_digest: dict[str, ApiKey], secret: str) -> ApiKey | None:
        """The active key whose secret this is, or None."""
        digest = digest_of(secret)
        key = by_digest.get(digest)
        # The lookup is by a hash the caller cannot steer; the comparison is constant-time anyway.
        if key is None or not hmac.compare_digest(key.digest, digest):
            return None
        return key

    def names(self) -> list[str]:
        return sorted(key.name for key in self._remembered[0].values())

    def load(self) -> bool:
        """Read the keys if their generation moved; True if it did. Blocks (a thread's work)."""
        if self._store is None:
            return False
        generation = self._store.generation()
        if generation == self._generation:
            return False
        generation, keys = self._store.active()
        self._remembered = ({**{key.digest: key for key in keys}, **self._fixed}, {})
        self._generation = generation
        log.info("API keys: %d active (generation %d)", len(keys), generation)
        return True

    async def refresh(self) -> bool:
        return await anyio.to_thread.run_sync(self.load)

    def start(self) -> None:
        if self._task is None and self._store is not None:
            self._task = asyncio.create_task(self._follow(), name="keys")

    async def _follow(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
                if failing:
                    log.info("API keys followed again")
                failing = False
            except RegistryError as exc:
                if not failing:  # once per outage: the follower tries again every interval
                    log.warning("cannot read the API keys (keeping the %d known): %s", len(self._remembered[0]), exc)
                failing = True
            except Exception:  # the follower must outlive any one bad pass
                log.exception("following the API keys failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
