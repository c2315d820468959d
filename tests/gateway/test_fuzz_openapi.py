"""Every operation of the app's own OpenAPI schema, fuzzed with schemathesis (issue 12, Inputs).

The in-process app runs its lifespan on the session's sqlite registry, once with
``GATEWAY_AUTH=off`` and once with keys on and a valid key (every scope) sent. Whatever is
generated, the answer is never a 5xx, every error body is JSON in the documented shape
(``{"error_code", "message"}``, or the Open Inference Protocol's ``{"error"}`` under ``/v2``,
or OpenAI's ``{"error": {...}}`` on its routes)
with no traceback in it, and no case outlives its timeout.

Bounded for CI: derandomized (a fixed seed) with a few examples per operation. A longer run
(docs/development.md, "Fuzzing"): ``GATEWAY_FUZZ_EXAMPLES=500 pytest tests/gateway/test_fuzz_openapi.py -s``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.python import asgi

from gateway.app import create_app
from registry_sync.registry import RegistryReader
from tests.conftest import Registry, settings_under
from tests.support.keys import add_key

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "8"))
SCOPES = "predict:*,read,admin"
WEBHOOK_SECRET = "fuzz-webhook-secret-4f1c"
ERROR_FIELDS = {"limit", "policy"}  # what an error may add for scripts (http_errors.error_answer)

# Cases run, per configuration and operation: printed by the test (`-s` shows it).
CASES: Counter[str] = Counter()


@pytest.fixture(scope="module", params=["auth-off", "auth-keys"])
def fuzzed(
    request: pytest.FixtureRequest, sqlite_registry: Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Any, dict[str, str]]]:
    """(configuration, schema, headers every case sends)."""
    workdir = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    if request.param == "auth-keys":
        settings_ = settings_under(workdir, webhook_secret=WEBHOOK_SECRET, auth="keys")
        headers = {"Authorization": f"Bearer {add_key(settings_, 'fuzzer', SCOPES)}"}
    else:
        settings_, headers = settings_under(workdir, webhook_secret=WEBHOOK_SECRET), {}
    app = create_app(settings_, reader=RegistryReader(tracking_uri=sqlite_registry.tracking_uri))
    # schemathesis runs the app's lifespan (on its own event loop thread) from the first request
    try:
        yield request.param, schemathesis.openapi.from_asgi("/openapi.json", app), headers
    finally:
        asgi.shutdown_lifespans()


def assert_error_shape(path: str, status: int, body: Any) -> None:
    assert isinstance(body, dict), body
    if path == "/v2" or path.startswith("/v2/"):
        assert "error" in body and isinstance(body["error"], str), body
        message = body["error"]
        extra = set(body) - {"error"}
    elif path in ("/v1/responses", "/v1/chat/completions"):  # OpenAI's shape (gateway.protocols.openai_serving)
        error = body.get("error")
        assert isinstance(error, dict) and set(error) == {"message", "type", "code", "param"}, body
        assert isinstance(error["message"], str) and isinstance(error["code"], str), body
        message = error["message"]
        extra = set(body) - {"error"}
    else:
        assert {"error_code", "message"} <= set(body), body
        assert isinstance(body["error_code"], str) and isinstance(body["message"], str), body
        message = body["message"]
        extra = set(body) - {"error_code", "message"}
    assert extra <= ERROR_FIELDS, f"{status} {path}: undocumented fields {extra}"
    assert "Traceback" not in message, message


def _fuzz(operation: Any, config: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # a fixed seed: the same cases on every run
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call(headers=dict(headers), timeout=30)  # call() adds to the dict it gets
        CASES[(config, operation.label)] += 1
        where = f"{case.method} {case.formatted_path}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
        for secret in (WEBHOOK_SECRET, *(value.removeprefix("Bearer ") for value in headers.values())):
            assert secret not in response.text, f"{where}: the answer repeats a secret"
        if response.status_code >= 400:
            assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
                f"{where}: {response.text}"
            )
            assert_error_shape(case.path, response.status_code, response.json())
        if config == "auth-keys" and not case.path.startswith("/webhooks/"):  # webhooks keep their HMAC
            assert response.status_code != 401, f"{where}: a valid key was refused: {response.text}"

    run()


@pytest.mark.timeout(120 * max(1, EXAMPLES // 8))  # a hang fails here, not at the suite limit
def test_no_operation_fails_or_answers_out_of_shape(fuzzed: tuple[str, Any, dict[str, str]]) -> None:
    config, api, headers = fuzzed
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 20  # every route of the schema, not an empty one
    failures = []
    for operation in operations:
        try:
            _fuzz(operation, config, headers)
        except Exception as exc:  # every operation runs; all failures are reported together
            failures.append(f"{operation.label}: {exc}")
    print(f"\nschemathesis {config}: {sum(n for (c, _), n in CASES.items() if c == config)} cases")
    assert not failures, "\n\n".join(failures)
