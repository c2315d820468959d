"""Bearer tokens from the identity provider (``GATEWAY_AUTH=oidc`` or ``keys+oidc``): a JWT
verified with PyJWT against the issuer's keys (:mod:`gateway.admission.issuer`), and the
caller it names, with the same scopes a key has.

Trust boundary: a token is the caller's bytes until verified. What is read before the
signature is checked: at most :data:`MAX_TOKEN_BYTES`, its header's ``alg`` (RS256, ES256 or
EdDSA, else refused before any key is looked at: ``none`` and HMAC never verify) and ``kid``
(which key; an unknown one costs the sender a refusal, and the provider at most one refetch an
interval). Then PyJWT checks the signature with the key's own algorithm, ``iss`` (exactly
GATEWAY_OIDC_ISSUER), ``aud`` (GATEWAY_OIDC_AUDIENCE), ``exp`` (required), ``nbf`` and
``iat`` within GATEWAY_OIDC_CLOCK_SKEW_SECONDS. ``sub`` must be a printable string of at most
255 characters: it names the caller (``oidc:<sub>``) in the request context, the inference
records' ``key_id`` and the access log. Every refusal is :class:`InvalidToken` with a reason
of its own, and never repeats the token.

A verified token is kept, by its sha256, until it expires (at most
:data:`MAX_VERIFIED` of them, the oldest dropped first): the next request with it costs a hash
and a lookup, not a signature. A refused one is not kept.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.admission.issuer import ALGORITHMS, IssuerKeys
from gateway.errors import InvalidToken, IssuerUnavailable
from registry_sync.keys import Scopes

MAX_TOKEN_BYTES = 16_384  # Entra ID's tokens with ~200 groups are under 8 KiB
MAX_VERIFIED = 10_000
MAX_SUBJECT = 255
CALLER_PREFIX = "oidc:"  # a key's name holds no ':', so a token's caller never reads as a key


@dataclass(frozen=True, slots=True)
class TokenCaller:
    """Who a verified token says is asking, in the terms the gate checks a key in."""

    subject: str
    digest: str  # the token's sha256: what the gate remembers scope decisions by
    scopes: Scopes
    expires: float  # its ``exp`` (epoch seconds)
    rate: float | None = None
    concurrency: int | None = None
    groups: tuple[str, ...] = ()  # what its groups claim names (quotas may be per group)

    @property
    def name(self) -> str:
        return CALLER_PREFIX + self.subject


class VerifiedTokens:
    """Tokens verified already, by their sha256, each until its ``exp`` plus the skew."""

    def __init__(self, size: int = MAX_VERIFIED) -> None:
        self._size = size
        self._found: OrderedDict[bytes, tuple[TokenCaller, float]] = OrderedDict()

    def get(self, digest: bytes, now: float) -> TokenCaller | None:
        entry = self._found.get(digest)
        if entry is None:
            return None
        if now >= entry[1]:
            self._found.pop(digest, None)
            return None
        return entry[0]

    def put(self, digest: bytes, caller: TokenCaller, until: float) -> None:
        if len(self._found) >= self._size:
            self._found.popitem(last=False)
        self._found[digest] = (caller, until)

    def clear(self) -> None:
        self._found.clear()

    def __len__(self) -> int:
        return len(self._found)


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into objects (``realm_access.roles``) unless the
    token has a claim of that very name (Auth0's are URLs)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _names(value: Any) -> list[str]:
    """A claim of names: a space-separated string or a list of strings (others ignored)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class TokenVerifier:
    def __init__(
        self,
        keys: IssuerKeys,
        *,
        audience: str,
        scopes_claim: str,
        groups_claim: str,
        scope_map: Mapping[str, list[str]],
        skew_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self._audience = audience
        self._scopes_claim = scopes_claim
        self._groups_claim = groups_claim
        self._scope_map = dict(scope_map)
        self._skew = skew_seconds
        self._clock = clock
        self.verified = VerifiedTokens()
        # The same tokens again, by the Authorization header's bytes as sent: a dict lookup
        # before any decode or hash (the gate's first look). Bounded as ``verified``, emptied
        # when full (an entry is a verified token: only its holder can add one).
        self._by_header: dict[bytes, tuple[TokenCaller, float]] = {}
        keys.on_change = self.forget  # a key dropped by the provider verifies nothing kept

    def forget(self) -> None:
        self.verified.clear()
        self._by_header.clear()

    def known(self, authorization: bytes) -> TokenCaller | None:
        """The caller of an ``Authorization`` header whose token was verified already and has
        not expired, or None (then :meth:`verify` it)."""
        entry = self._by_header.get(authorization)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._by_header.pop(authorization, None)
            return None
        return entry[0]

    def remember(self, authorization: bytes, caller: TokenCaller) -> None:
        """``authorization`` carried ``caller``'s verified token: :meth:`known` from now on."""
        if len(authorization) > MAX_TOKEN_BYTES + 16:
            return
        if len(self._by_header) >= MAX_VERIFIED:
            self._by_header.clear()
        self._by_header[authorization] = (caller, caller.expires + self._skew)

    async def verify(self, token: str) -> TokenCaller:
        """The caller a token names, or :class:`InvalidToken` saying why (or
        :class:`IssuerUnavailable` while no key of the provider is known)."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("too_large", f"it is larger than {MAX_TOKEN_BYTES} bytes")
        raw = token.encode("latin-1", "replace")  # as the header was decoded
        digest = hashlib.sha256(raw).digest()
        found = self.verified.get(digest, self._clock())
        if found is not None:
            return found
        claims = await self._claims(token)
        caller = self._caller(claims, digest.hex())
        self.verified.put(digest, caller, caller.expires + self._skew)
        return caller

    async def _claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except Exception:  # PyJWT's errors, and what json raises on a header nested past the recursion limit
            raise InvalidToken("malformed", "it is not a JWT (three base64url segments, a JSON header)") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken("algorithm", f"its signature algorithm is not accepted (only {', '.join(ALGORITHMS)})")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("malformed", "its header's kid is not a string")
        key = self.keys.key(kid, algorithm)
        if key is None:
            await self.keys.refetch()  # the provider may have rotated its keys
            if not self.keys.fetched:
                raise IssuerUnavailable()
            key = self.keys.key(kid, algorithm)
            if key is None:
                raise InvalidToken("kid", "it is signed with a key (kid) the identity provider does not publish")
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self.keys.issuer,
                leeway=self._skew,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_iat": True},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired", "it has expired (exp)") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("not_yet_valid", "it is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("audience", "it is not for this gateway (aud)") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("issuer", "it is from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken("claims", f"it lacks the '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("signature", "its signature does not verify") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("algorithm", "its algorithm is not its key's") from None
        except Exception:  # PyJWT's other errors, a payload that is no JSON object, too deep a nesting
            raise InvalidToken("malformed", "it could not be read as a signed JWT") from None

    def _caller(self, claims: dict[str, Any], digest: str) -> TokenCaller:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT or not subject.isprintable():
            raise InvalidToken("subject", f"its sub is not a printable string of 1 to {MAX_SUBJECT} characters")
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise InvalidToken("claims", "its exp is not a number")
        groups = tuple(_names(claim(claims, self._groups_claim)))
        return TokenCaller(subject, digest, self.scopes_of(claims), float(expires), groups=groups)

    def scopes_of(self, claims: Mapping[str, Any]) -> Scopes:
        """The gateway's scopes in the scopes claim (other values ignored), and those the scope
        map gives the groups the groups claim names."""
        items = [item for item in _names(claim(claims, self._scopes_claim)) if _is_scope(item)]
        for group in _names(claim(claims, self._groups_claim)):
            items.extend(self._scope_map.get(group, ()))
        if not items:
            return Scopes()
        return Scopes.parse(items)


def _is_scope(item: str) -> bool:
    return item in ("read", "admin", "feedback") or (item.startswith("predict:") and bool(item[8:].strip()))
