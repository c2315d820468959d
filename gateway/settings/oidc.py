"""Tokens from the organisation's identity provider (``GATEWAY_AUTH=oidc`` or ``keys+oidc``)."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from gateway.settings.section import SettingsSection

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class OidcSettings(SettingsSection):
    """Tokens from the organisation's identity provider (``GATEWAY_AUTH=oidc`` or ``keys+oidc``)."""

    oidc_issuer: str | None = Field(default=None, validate_default=True)
    """The identity provider's issuer URL, exactly as its tokens' ``iss`` claim says it
    (Keycloak: ``https://sso.example.com/realms/<realm>``; Okta:
    ``https://<org>.okta.com/oauth2/default``; Auth0 ends with ``/``). Its discovery document is
    ``<issuer>/.well-known/openid-configuration``, whose ``jwks_uri`` gives the signing keys.
    ``https://`` (``http://`` only on a loopback host). Required with ``GATEWAY_AUTH=oidc`` or
    ``keys+oidc``."""

    oidc_audience: str | None = Field(default=None, validate_default=True)
    """The ``aud`` a token must name (one of its values): this gateway's client id or API
    identifier at the identity provider. Required with ``GATEWAY_AUTH=oidc`` or ``keys+oidc``."""

    oidc_scopes_claim: str = "scope"
    """The claim holding the gateway's scopes (``predict:<glob>``, ``read``, ``admin``,
    ``feedback``, as a key's): a space-separated string (``scope``) or a list (Okta's ``scp``).
    Other values in it (``openid``, ``profile``) are ignored. A dotted name reaches into an
    object (``realm_access.roles``) unless the token has a claim of that very name."""

    oidc_groups_claim: str = "groups"
    """The claim whose names ``GATEWAY_OIDC_SCOPE_MAP`` maps to scopes: a list (or a
    space-separated string) of group or role names (Keycloak's ``groups`` or
    ``realm_access.roles``, Entra ID's ``roles``, Okta's ``groups``). Dotted as the scopes claim."""

    oidc_scope_map: Annotated[dict[str, list[str]], NoDecode] = {}
    """JSON: group or role names (in ``GATEWAY_OIDC_GROUPS_CLAIM``) -> the scopes they give,
    e.g. ``{"ml-readers": ["read"], "fraud-app": ["predict:fraud*"]}``. A token's scopes are
    those of its scopes claim plus those of every group it names here; names not in the map
    give nothing."""

    oidc_clock_skew_seconds: float = Field(default=30.0, ge=0, le=300)
    """How far the identity provider's clock may be from this host's: ``exp``, ``nbf`` and
    ``iat`` are checked this much leniently."""

    oidc_jwks_refresh_seconds: float = Field(default=600.0, gt=0)
    """How often the issuer's signing keys (its JWKS) are fetched again in the background, off
    the request path. The JWKS endpoint down: the keys fetched before keep verifying tokens."""

    oidc_kid_refetch_seconds: float = Field(default=60.0, gt=0)
    """A token signed with a key (``kid``) not among those fetched makes the gateway fetch the
    JWKS again at once (the provider rotated its keys), at most once in this many seconds;
    requests arriving meanwhile wait for the fetch under way rather than start their own."""

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            value = value.strip() or None
        if value is None:
            _required_with_oidc(info, "the issuer's URL, as its tokens' 'iss' claim says it")
            return None
        url = urlsplit(value)
        if url.scheme == "https" or (url.scheme == "http" and url.hostname in _LOOPBACK):
            if url.hostname and not url.query and not url.fragment:
                return value  # kept as written: a token's 'iss' must equal it exactly
        raise ValueError(
            "must be an https:// URL without query or fragment (http:// only on a loopback host), "
            "as the tokens' 'iss' claim says it"
        )

    @field_validator("oidc_audience")
    @classmethod
    def _audience(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            value = value.strip() or None
        if value is None:
            _required_with_oidc(info, "the 'aud' this gateway's tokens name (its client id at the provider)")
        return value

    @field_validator("oidc_scopes_claim", "oidc_groups_claim")
    @classmethod
    def _claim(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a claim")
        return value

    @field_validator("oidc_scope_map", mode="before")
    @classmethod
    def _scope_map(cls, value: Any) -> Any:
        from registry_sync.keys import InvalidKeySpec, Scopes

        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object of names to lists of scopes: {"ml-readers": ["read"]}')
        mapped: dict[str, list[str]] = {}
        for name, scopes in value.items():
            items = [scopes] if isinstance(scopes, str) else scopes
            if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
                raise ValueError(f"'{name}' must map to a list of scopes, e.g. [\"read\"]")
            try:
                mapped[str(name)] = Scopes.parse(items).as_list()
            except InvalidKeySpec as exc:
                raise ValueError(f"'{name}': {exc}") from None
        return mapped


def _required_with_oidc(info: ValidationInfo, what: str) -> None:
    auth = info.data.get("auth")
    if isinstance(auth, str) and "oidc" in auth:
        raise ValueError(f"required with GATEWAY_AUTH={auth}: {what}")
