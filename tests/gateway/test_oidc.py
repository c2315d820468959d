"""GATEWAY_AUTH=oidc and keys+oidc (issue 53): tokens from a real identity provider stand-in
(tests/support/issuer.py, an HTTP server on loopback serving discovery and a JWKS), verified
through the same gate as the keys, over a real MLflow registry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.utils import base64url_decode

from gateway.admission.access import Access
from gateway.admission.issuer import IssuerKeys
from gateway.admission.tokens import MAX_TOKEN_BYTES, TokenCaller, TokenVerifier, VerifiedTokens
from gateway.errors import InsufficientScope, InvalidToken, Unauthenticated
from gateway.observability import context
from gateway.observability.logs import AccessLog
from gateway.settings import GatewaySettings, SettingsError, load_settings
from registry_sync.keys import Scopes
from tests.conftest import Gateway, Registry
from tests.support.clock import ManualClock
from tests.support.issuer import AUDIENCE, TestIssuer
from tests.support.keys import add_key, bearer, keyed_gateway
from tests.support.waiting import until

pytestmark = pytest.mark.anyio

X = {"dataframe_records": [{"x": 1.5}]}


@pytest.fixture(scope="session")
def registry(sqlite_registry: Registry) -> Registry:
    return sqlite_registry


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    provider = TestIssuer()
    provider.add("k1", "RS256")
    try:
        yield provider
    finally:
        provider.stop()


def oidc_settings(make_settings: Callable[..., GatewaySettings], issuer: TestIssuer, **more: Any) -> GatewaySettings:
    values: dict[str, Any] = {
        "auth": "oidc",
        "oidc_issuer": issuer.url,
        "oidc_audience": AUDIENCE,
        "oidc_kid_refetch_seconds": 3600,  # one refetch in a test, whatever its pace
    }
    return make_settings(**{**values, **more})


@asynccontextmanager
async def token_gateway(settings: GatewaySettings, registry: Registry) -> AsyncIterator[Gateway]:
    async with keyed_gateway(settings, registry) as (gateway, _):
        tokens = gateway.services.gate.tokens
        assert tokens is not None
        await until(lambda: tokens.keys.fetched, what="the first fetch of the provider's keys")
        yield gateway


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    return gateway.services.metrics.registry.get_sample_value(name, labels) or 0.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWT put together by hand: for what PyJWT refuses to make (HMAC over a public key)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


# --- accepted --------------------------------------------------------------------------------


async def test_each_algorithm_verifies_and_the_caller_is_its_subject(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    issuer.add("k2", "ES256")
    issuer.add("k3", "EdDSA")
    async with token_gateway(oidc_settings(make_settings, issuer), registry) as gateway:
        for kid in ("k1", "k2", "k3"):
            token = issuer.token(kid, sub=f"app-{kid}")
            response = await gateway.client.post("/models/doubler/predict", json=X, headers=bearer(token))
            assert response.status_code == 200, (kid, response.text)
            assert response.json() == {"predictions": [3.0]}
        assert metric(gateway, "gateway_token_requests_total", outcome="allowed") == 3
        # the caller a token names, in the request's context (the inference records' key_id)
        request = context.begin(None)
        entered = context.enter(request)
        try:
            caller, _ = await gateway.services.gate.check(
                Access.READ, None, [(b"authorization", f"Bearer {token}".encode())]
            )
        finally:
            context.leave(entered)
        assert isinstance(caller, TokenCaller) and request.key_id == "oidc:app-k3"
        # a token verified once is kept by its hash: the second request verifies nothing
        assert len(gateway.services.gate.tokens.verified) == 3  # type: ignore[union-attr]
        metrics = (await gateway.client.get("/metrics")).text
        assert "app-k1" not in metrics  # no label per subject


async def test_bad_tokens_are_401_saying_why_and_never_echoed(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    now = int(time.time())
    issuer.add("rogue", "RS256", publish=False)
    public_key = issuer.keys["k1"].private.public_key()
    public_pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    good = issuer.token("k1")
    head, body, signature = good.split(".")
    admin_claims = {**issuer.claims(), "scope": "admin read predict:*"}
    cases = {
        "expired": (issuer.token(exp=now - 3600), "expired", "expired"),
        "not yet valid": (issuer.token(nbf=now + 3600), "not_yet_valid", "not valid yet"),
        "issued in the future": (issuer.token(iat=now + 3600), "not_yet_valid", "not valid yet"),
        "wrong audience": (issuer.token(aud="another-api"), "audience", "(aud)"),
        "wrong issuer": (issuer.token(iss="https://evil.example/realms/test"), "issuer", "(iss)"),
        "tampered": (f"{head}.{_b64(json.dumps(admin_claims).encode())}.{signature}", "signature", "signature"),
        "alg none": (
            jwt.encode(issuer.claims(), None, algorithm="none", headers={"kid": "k1"}),  # type: ignore[arg-type]
            "algorithm",
            "algorithm",
        ),
        "HS256 over the public key": (
            hand_made(
                {"alg": "HS256", "typ": "JWT", "kid": "k1"},
                issuer.claims(),
                lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
            ),
            "algorithm",
            "algorithm",
        ),
        "unknown kid": (issuer.token("rogue"), "kid", "(kid)"),
        "no exp": (issuer.token(exp=None), "claims", "'exp'"),
        "no sub": (issuer.token(sub=None), "claims", "'sub'"),
        "unprintable sub": (issuer.token(sub="app\nINFO forged log line"), "subject", "sub"),
        "oversized": (issuer.token(pad="x" * MAX_TOKEN_BYTES), "too_large", "larger than"),
        "garbage": ("not-a-jwt-at-all", "malformed", "not a JWT"),
        "truncated": (f"{head}.{body}", "malformed", "not a JWT"),
    }
    async with token_gateway(oidc_settings(make_settings, issuer), registry) as gateway:
        fetched = issuer.fetches
        for what, (token, reason, said) in cases.items():
            for method, path in (
                ("POST", "/models/doubler/predict"),
                ("GET", "/models"),
                ("POST", "/v2/models/doubler/infer"),
            ):
                response = await gateway.client.request(method, path, json=X, headers=bearer(token))
                assert response.status_code == 401, (what, path, response.text)
                assert response.headers["www-authenticate"] == 'Bearer realm="registry-gateway", error="invalid_token"'
                message = response.json()["error" if path.startswith("/v2") else "message"]
                assert said in message and "\n" not in message, (what, message)
                for segment in filter(None, token.split(".")):  # nothing of the token comes back
                    assert segment[:12] not in response.text, (what, segment)
            assert metric(gateway, "gateway_auth_failures_total", reason=f"token_{reason}") >= 3, what
        assert issuer.fetches == fetched + 1  # the unknown kid: one refetch, then none within the interval
        assert gateway.services.cache.keys() == []  # nothing loaded for a refused token
        assert len(gateway.services.gate.tokens.verified) == 0  # type: ignore[union-attr]
        # within the skew: a token that expired 10 s ago still passes (30 s by default)
        late = await gateway.client.post("/models/doubler/predict", json=X, headers=bearer(issuer.token(exp=now - 10)))
        assert late.status_code == 200
        # no scope the route needs: 403, with RFC 6750's insufficient_scope
        reader = issuer.token(scope="openid read")
        forbidden = await gateway.client.post("/models/doubler/predict", json=X, headers=bearer(reader))
        assert forbidden.status_code == 403 and forbidden.json()["error_code"] == "PERMISSION_DENIED"
        assert "'app-1'" in forbidden.json()["message"]
        assert forbidden.headers["www-authenticate"] == 'Bearer realm="registry-gateway", error="insufficient_scope"'
        missing = await gateway.client.get("/models")
        assert missing.status_code == 401 and "Authorization: Bearer <token>" in missing.json()["message"]


def _fuzzed(issuer: TestIssuer) -> st.SearchStrategy[bytes]:
    good = issuer.token("k1").encode()
    head, body, signature = good.split(b".")
    segment = st.binary(max_size=64).map(lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="))
    return st.one_of(
        st.binary(max_size=600),
        st.integers(0, len(good)).map(lambda cut: good[:cut]),  # truncated anywhere
        st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)).map(  # one byte changed
            lambda change: good[: change[0]] + bytes([change[1]]) + good[change[0] + 1 :]
        ),
        st.tuples(segment, segment, segment).map(lambda parts: b".".join(parts)),
        st.tuples(
            st.dictionaries(st.text(max_size=8), st.text(max_size=8) | st.integers(), max_size=4), st.booleans()
        ).map(
            lambda made: (
                _b64(json.dumps(made[0]).encode()).encode() + b"." + (body if made[1] else b"") + b"." + signature
            )
        ),
        st.integers(1, 5000).map(lambda depth: _b64(b"[" * depth).encode() + b"." + body + b"." + signature),
        st.integers(MAX_TOKEN_BYTES - 8, MAX_TOKEN_BYTES + 8).map(lambda size: b"e" * size),  # around the bound
    )


def test_a_fuzzed_token_set_is_always_refused_and_never_raises_anything_else(issuer: TestIssuer) -> None:
    keys = IssuerKeys(issuer.url, refresh_seconds=3600, refetch_seconds=3600)
    verifier = TokenVerifier(
        keys, audience=AUDIENCE, scopes_claim="scope", groups_claim="groups", scope_map={}, skew_seconds=30
    )
    anyio.run(keys.fetch)
    assert keys.fetched
    good = issuer.token("k1")
    assert anyio.run(verifier.verify, good).subject == "app-1"

    def decoded(token: str) -> list[bytes] | None:
        try:
            return [base64url_decode(part) for part in token.split(".")]
        except Exception:
            return None

    same = decoded(good)

    @settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(_fuzzed(issuer))
    def refused(raw: bytes) -> None:
        token = raw.decode("latin-1")
        if decoded(token) == same:  # the good token, or a spare bit of its base64 changed: the same bytes
            return
        with pytest.raises(InvalidToken) as caught:
            anyio.run(verifier.verify, token.strip() or "x")
        assert "\n" not in str(caught.value)

    refused()
    assert issuer.fetches <= 2  # unknown kids in the set: at most one refetch in the interval


# --- scopes ------------------------------------------------------------------------------------


def test_scopes_from_the_claim_and_from_the_map() -> None:
    verifier = TokenVerifier(
        IssuerKeys("https://sso.example/realms/r", refresh_seconds=60, refetch_seconds=60),
        audience=AUDIENCE,
        scopes_claim="scope",
        groups_claim="realm_access.roles",
        scope_map={"ml-readers": ["read"], "fraud-app": ["predict:fraud*"]},
        skew_seconds=0,
    )
    assert verifier.scopes_of({"scope": "openid profile read predict:iris*"}) == Scopes(("iris*",), read=True)
    assert verifier.scopes_of({"scope": ["admin", "email", "predict"]}) == Scopes(admin=True)
    roles = {"scope": "openid", "realm_access": {"roles": ["fraud-app", "offline_access", "ml-readers"]}}
    assert verifier.scopes_of(roles) == Scopes(("fraud*",), read=True)
    assert verifier.scopes_of({"scope": 7, "realm_access": "nope"}) == Scopes()
    # a claim named with dots (Auth0's are URLs) is read whole before it is read as a path
    named = TokenVerifier(
        verifier.keys,
        audience=AUDIENCE,
        scopes_claim="https://gw.example/scopes",
        groups_claim="groups",
        scope_map={},
        skew_seconds=0,
    )
    assert named.scopes_of({"https://gw.example/scopes": ["feedback"]}) == Scopes(feedback=True)


async def test_scopes_and_groups_decide_each_route(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    settings = oidc_settings(
        make_settings,
        issuer,
        oidc_scopes_claim="scp",
        oidc_groups_claim="realm_access.roles",
        oidc_scope_map={"ml-readers": ["read"], "doubling-app": ["predict:doub*"]},
        admin_token="admin-t0ken",
    )
    async with token_gateway(settings, registry) as gateway:
        client = gateway.client
        app = bearer(issuer.token(scope=None, scp=[], realm_access={"roles": ["doubling-app"]}))
        readers = bearer(issuer.token(sub="analyst", scope=None, realm_access={"roles": ["ml-readers"]}))
        scp = bearer(issuer.token(sub="svc", scope="predict:*", scp=["predict:doubler", "openid"]))
        assert (await client.post("/models/doubler/predict", json=X, headers=app)).status_code == 200
        assert (await client.get("/models", headers=app)).status_code == 403
        assert (await client.get("/models", headers=readers)).status_code == 200
        assert (await client.post("/models/doubler/predict", json=X, headers=readers)).status_code == 403
        assert (await client.post("/models/doubler/predict", json=X, headers=scp)).status_code == 200
        assert (await client.post("/models/other/predict", json=X, headers=scp)).status_code == 403  # not 'scope'
        assert (await client.get("/v1/models", headers=app)).status_code == 200  # OpenAI's listing
        may_call = await gateway.services.gate.listed([(b"authorization", app["Authorization"].encode())])
        assert may_call("doubler") and not may_call("other")  # what it lists: what the token may call
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "other", "messages": [{"role": "user", "content": "hi"}]},
            headers=app,
        )
        assert chat.status_code == 403
        # tokens only, but GATEWAY_ADMIN_TOKEN still opens /admin/* (and nothing else)
        assert (await client.post("/admin/sync", headers=bearer("admin-t0ken"))).status_code == 200
        assert (await client.get("/models", headers=bearer("admin-t0ken"))).status_code == 403
        assert (await client.post("/admin/sync", headers=readers)).status_code == 403


async def test_keys_and_tokens_together(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    settings = oidc_settings(make_settings, issuer, auth="keys+oidc")
    secret = add_key(settings, "ci", "predict:doubler")
    async with token_gateway(settings, registry) as gateway:
        client = gateway.client
        for headers in (bearer(secret), {"X-API-Key": secret}, bearer(issuer.token())):
            assert (await client.post("/models/doubler/predict", json=X, headers=headers)).status_code == 200
        wrong_key = await client.post("/models/doubler/predict", json=X, headers=bearer("rgw_wrong"))
        assert wrong_key.status_code == 401 and "API key is not valid" in wrong_key.json()["message"]
        expired = await client.post("/models/doubler/predict", json=X, headers=bearer(issuer.token(exp=1)))
        assert expired.status_code == 401 and "expired" in expired.json()["message"]
        missing = await client.post("/models/doubler/predict", json=X)
        assert "API key or a token" in missing.json()["message"]
        assert metric(gateway, "gateway_key_requests_total", key="ci", outcome="allowed") == 2
        assert metric(gateway, "gateway_token_requests_total", outcome="allowed") == 1


# --- the provider's keys -----------------------------------------------------------------------


async def test_a_rotation_costs_one_refetch_shared_by_every_request_waiting(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    async with token_gateway(oidc_settings(make_settings, issuer), registry) as gateway:
        old = issuer.token("k1", sub="before")
        assert (await gateway.client.get("/models", headers=bearer(old))).status_code == 200
        fetched = issuer.fetches
        issuer.add("k2", "ES256", publish=False)
        issuer.publish("k2")  # the provider rotates: k2 signs, k1 is withdrawn

        async def call(n: int) -> int:
            token = issuer.token("k2", sub=f"after-{n}")
            return (await gateway.client.get("/models", headers=bearer(token))).status_code

        assert await asyncio.gather(*(call(n) for n in range(20))) == [200] * 20
        assert issuer.fetches == fetched + 1  # twenty unknown kids, one fetch
        # the withdrawn key verifies nothing any more, not even a token verified before
        refused = await gateway.client.get("/models", headers=bearer(old))
        assert refused.status_code == 401 and "(kid)" in refused.json()["message"]
        issuer.add("k3", "EdDSA")  # a second rotation within the interval: no refetch yet
        assert (await gateway.client.get("/models", headers=bearer(issuer.token("k3")))).status_code == 401
        assert issuer.fetches == fetched + 1


async def test_an_unknown_kid_refetches_at_most_once_an_interval(issuer: TestIssuer) -> None:
    clock = ManualClock()
    keys = IssuerKeys(issuer.url, refresh_seconds=3600, refetch_seconds=60, clock=clock)
    await keys.fetch()
    assert keys.fetches == 1 and keys.key("k1", "RS256") is not None
    await keys.refetch()
    await keys.refetch()
    assert keys.fetches == 2
    clock.now += 59
    await keys.refetch()
    assert keys.fetches == 2
    clock.now += 1
    await keys.refetch()
    assert keys.fetches == 3 == issuer.fetches


async def test_with_the_provider_down_the_keys_held_keep_verifying(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    async with token_gateway(oidc_settings(make_settings, issuer), registry) as gateway:
        tokens = gateway.services.gate.tokens
        assert tokens is not None
        issuer.add("k2", publish=False)
        fresh = issuer.token("k1", sub="fresh")  # never verified before the outage
        issuer.stop()
        await tokens.keys.fetch()  # the background refresh, failing
        assert issuer.fetches == tokens.keys.fetches - 1
        assert (await gateway.client.get("/models", headers=bearer(fresh))).status_code == 200
        unknown = await gateway.client.get("/models", headers=bearer(issuer.token("k2")))
        assert unknown.status_code == 401 and "(kid)" in unknown.json()["message"]


async def test_before_any_key_is_fetched_a_token_is_503_not_401(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    token = issuer.token()
    issuer.stop()  # down from the start
    async with keyed_gateway(oidc_settings(make_settings, issuer), registry) as (gateway, _):
        response = await gateway.client.get("/models", headers=bearer(token))
        assert response.status_code == 503 and response.headers["retry-after"] == "5"
        assert "signing keys" in response.json()["message"]


# --- every replica, every protocol ---------------------------------------------------------------


async def test_two_replicas_refuse_the_same_tokens_and_accept_the_same(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    settings = oidc_settings(make_settings, issuer)
    bad = [issuer.token(exp=1), issuer.token(aud="x"), issuer.token()[:-4] + "AAAA"]
    async with token_gateway(settings, registry) as first, token_gateway(settings, registry) as second:
        for gateway in (first, second):
            for token in bad:
                response = await gateway.client.get("/models", headers=bearer(token))
                assert response.status_code == 401, response.text
            assert (await gateway.client.get("/models", headers=bearer(issuer.token()))).status_code == 200


def test_grpc_checks_a_token_as_http_does(
    sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer
) -> None:
    from gateway.demo import IRIS
    from gateway.protocols.proto import grpc_service_pb2 as pb
    from gateway.protocols.proto import grpc_service_pb2_grpc as pb_grpc
    from tests.conftest import settings_under
    from tests.gateway.protocols.conftest import served
    from tests.support.servers import free_port

    port = free_port()
    settings = settings_under(
        tmp_path_factory.mktemp("grpc-oidc"),
        grpc_port=port,
        auth="oidc",
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
    )
    with served(settings, sqlite_registry), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelMetadataRequest(name=IRIS)
        for token, code in (
            (issuer.token(exp=1), grpc.StatusCode.UNAUTHENTICATED),
            ("garbage", grpc.StatusCode.UNAUTHENTICATED),
            (issuer.token(scope="read"), grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelMetadata(request, metadata=[("authorization", f"Bearer {token}")])
            assert caught.value.code() == code
        expired = issuer.token(exp=1)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelMetadata(request, metadata=[("authorization", f"Bearer {expired}")])
        assert "expired" in (caught.value.details() or "")
        answer = stub.ModelMetadata(request, metadata=[("authorization", f"Bearer {issuer.token()}")])
        assert answer.name == IRIS


# --- the cache, the settings ---------------------------------------------------------------------


def test_a_verified_token_is_kept_until_it_expires_and_the_kept_are_bounded() -> None:
    kept = VerifiedTokens(size=3)
    caller = TokenCaller("app", "d", Scopes(read=True), expires=100.0)
    kept.put(b"a", caller, until=130.0)
    assert kept.get(b"a", 129.9) is caller
    assert kept.get(b"a", 130.0) is None and len(kept) == 0  # gone once expired
    for name in (b"1", b"2", b"3", b"4"):
        kept.put(name, caller, until=1e12)
    assert len(kept) == 3 and kept.get(b"1", 0) is None and kept.get(b"4", 0) is caller


@pytest.mark.parametrize(
    ("environ", "lines"),
    [
        ({"GATEWAY_AUTH": "oidc"}, ["GATEWAY_OIDC_ISSUER: required", "GATEWAY_OIDC_AUDIENCE: required"]),
        (
            {
                "GATEWAY_AUTH": "keys+oidc",
                "GATEWAY_OIDC_ISSUER": "http://sso.example.com",
                "GATEWAY_OIDC_AUDIENCE": "gw",
            },
            ["GATEWAY_OIDC_ISSUER: must be an https:// URL"],
        ),
        (
            {"GATEWAY_OIDC_SCOPE_MAP": "{ml-readers: read}", "GATEWAY_OIDC_CLOCK_SKEW_SECONDS": "-1"},
            ["GATEWAY_OIDC_SCOPE_MAP: is not JSON", "GATEWAY_OIDC_CLOCK_SKEW_SECONDS:"],
        ),
        ({"GATEWAY_OIDC_SCOPE_MAP": '{"a": ["write"]}'}, ["GATEWAY_OIDC_SCOPE_MAP: 'a': unknown scope 'write'"]),
        ({"GATEWAY_AUTH": "tokens"}, ["GATEWAY_AUTH:"]),
    ],
)
def test_bad_oidc_settings_say_which_variable_and_why(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], lines: list[str]
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    found = str(caught.value).splitlines()
    assert len(found) == len(lines), found
    for line, start in zip(found, lines, strict=True):
        assert line.startswith(start), found


def test_good_oidc_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH", "OIDC")
    monkeypatch.setenv("GATEWAY_OIDC_ISSUER", "https://sso.example.com/realms/ml")
    monkeypatch.setenv("GATEWAY_OIDC_AUDIENCE", "registry-gateway")
    monkeypatch.setenv("GATEWAY_OIDC_SCOPE_MAP", '{"ml-readers": ["read"], "fraud-app": "predict:fraud*"}')
    loaded = load_settings()
    assert loaded.auth == "oidc" and loaded.oidc_issuer == "https://sso.example.com/realms/ml"
    assert loaded.oidc_scope_map == {"ml-readers": ["read"], "fraud-app": ["predict:fraud*"]}


def test_a_refusal_is_an_unauthenticated_error_and_a_missing_scope_a_forbidden_one() -> None:
    assert isinstance(InvalidToken("expired", "it has expired"), Unauthenticated)
    assert "'sub-1'" in str(InsufficientScope("sub-1", "read"))


def test_the_access_log_names_the_caller() -> None:
    request = context.begin(None)
    request.key_id = "oidc:app-1"
    log = AccessLog()
    text = log.format_line("text", "GET", "/models", 200, 0.001, time.time(), request, "127.0.0.1:5000")
    assert text.rstrip().endswith(f"request_id={request.request_id} key_id=oidc:app-1")
    fields = json.loads(log.format_line("json", "GET", "/models", 200, 0.001, time.time(), request, None))
    assert fields["key_id"] == "oidc:app-1"
    request.key_id = None  # GATEWAY_AUTH=off: the line as it was
    assert "key_id" not in log.format_line("text", "GET", "/models", 200, 0.001, time.time(), request, None)


async def test_the_api_description_shows_a_refused_token_as_it_is_answered(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    async with token_gateway(oidc_settings(make_settings, issuer), registry) as gateway:
        schema = (await gateway.client.get("/openapi.json")).json()
        examples = schema["paths"]["/models"]["get"]["responses"]["401"]["content"]["application/json"]["examples"]
        expired = await gateway.client.get("/models", headers=bearer(issuer.token(exp=1)))
        assert expired.json() == examples["invalid_token"]["value"]


async def test_a_verified_token_is_found_again_by_its_header_bytes_until_it_expires(issuer: TestIssuer) -> None:
    """Issue 53's cost: a token seen before is one dict lookup by the Authorization header's
    bytes, before any decode or hash; only until it expires (plus the skew)."""
    clock = ManualClock()
    clock.now = time.time()
    keys = IssuerKeys(issuer.url, refresh_seconds=3600, refetch_seconds=60)
    await keys.fetch()
    verifier = TokenVerifier(
        keys, audience=AUDIENCE, scopes_claim="scope", groups_claim="groups", scope_map={}, skew_seconds=30, clock=clock
    )
    token = issuer.token("k1", sub="app", exp=int(clock.now) + 60)
    header = f"Bearer {token}".encode()
    assert verifier.known(header) is None
    caller = await verifier.verify(token)
    verifier.remember(header, caller)
    assert verifier.known(header) is caller
    assert verifier.known(header + b" ") is None  # other bytes: verified again, never guessed
    clock.now = caller.expires + 30
    assert verifier.known(header) is None


async def test_the_gate_remembers_a_verified_tokens_header(
    make_settings: Callable[..., GatewaySettings], registry: Registry, issuer: TestIssuer
) -> None:
    async with token_gateway(oidc_settings(make_settings, issuer), registry) as gateway:
        tokens = gateway.services.gate.tokens
        assert tokens is not None
        token = issuer.token("k1", sub="again", scope="read")
        assert (await gateway.client.get("/models", headers=bearer(token))).status_code == 200
        found = tokens.known(f"Bearer {token}".encode())
        assert found is not None and found.name == "oidc:again"
        assert (await gateway.client.get("/models", headers=bearer(token))).status_code == 200
