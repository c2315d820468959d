"""What the OpenAPI page shows as examples: request bodies that run as they are on the demo
registry (``make demo``), and for each error status the bodies the gateway really answers.

The error examples are real errors turned into bodies by :mod:`gateway.http.errors`, the one
place errors become HTTP, and grouped by the status it gives them: an example cannot sit under
a status its error does not get, nor show a code it does not answer with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from mlflow.models import Model

from gateway import errors
from gateway.http import errors as http_errors
from gateway.wire.api_schemas import ErrorBody
from gateway.wire.mlflow_scoring import JSON, decode
from gateway.wire.selectors import parse_selector
from registry_sync.errors import RegistryUnavailable

IRIS = "iris"
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]

# --- request bodies --------------------------------------------------------------------------
# All for the demo's iris classifier, the model the name parameter's example names: a body
# offered beside name=iris must work for iris. The tensor form of the demo's torch model is
# described in words instead (it answers 400 on iris, which has named columns).


def _rows(*values: list[float]) -> list[dict[str, float]]:
    return [dict(zip(IRIS_COLUMNS, row, strict=True)) for row in values]


PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "MLflow's scoring protocol, exactly as `mlflow models serve` takes it. The examples are "
            "for the demo's `iris` classifier. A model with a tensor signature takes "
            '`{"inputs": [[...], ...]}`: for the demo\'s `tiny-torch`, `{"inputs": [[0.1, 0.2, 0.3, 0.4]]}`.'
        ),
        "content": {
            JSON: {
                "schema": {"type": "object"},
                "examples": {
                    "dataframe_split": {
                        "summary": "Columns and rows",
                        "value": {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}},
                    },
                    "dataframe_records": {
                        "summary": "One object per row",
                        "value": {"dataframe_records": _rows([6.7, 3.0, 5.2, 2.3])},
                    },
                    "instances": {
                        "summary": "TF-serving style rows",
                        "value": {"instances": _rows([5.9, 3.0, 4.2, 1.5])},
                    },
                    "inputs": {
                        "summary": "TF-serving style columns",
                        "value": {
                            "inputs": {
                                column: [value]
                                for column, value in zip(IRIS_COLUMNS, [6.3, 2.9, 5.6, 1.8], strict=True)
                            }
                        },
                    },
                },
            },
            "text/csv": {
                "schema": {"type": "string"},
                "example": ",".join(IRIS_COLUMNS) + "\n5.1,3.5,1.4,0.2\n",
            },
        },
    }
}

# The Open Inference Protocol's infer body for iris: a tensor a column, named as its signature.
OIP_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The Open Inference Protocol's (KServe v2) JSON: a model with named columns takes one "
            "tensor per column, named as in its signature; a tensor model its tensor (GET the model's "
            "metadata, `/v2/models/{name}`, for names, shapes and datatypes). Binary tensors: the "
            "Inference-Header-Content-Length header."
        ),
        "content": {
            JSON: {
                "schema": {"type": "object"},
                "examples": {
                    "columns": {
                        "summary": "The demo's iris: a tensor a column, two rows",
                        "value": {
                            "inputs": [
                                {"name": column, "shape": [2], "datatype": "FP64", "data": [first, second]}
                                for column, first, second in zip(
                                    IRIS_COLUMNS, [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], strict=True
                                )
                            ]
                        },
                    },
                },
            }
        },
    }
}

CHAT_MODEL = "echo-chat"  # the demo's ChatModel (gateway.demo)
RESPONSES_AGENT = "echo-agent"  # the demo's ResponsesAgent


def _openai_body(examples: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": "OpenAI's body; `model` is `name`, `name@alias` or `name/version`. "
            "The examples are for the demo's models.",
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["model"],
                        "properties": {
                            "model": {"type": "string", "description": "`name`, `name@alias` or `name/version`"},
                            "stream": {"type": "boolean", "description": "Server-sent events instead of one answer"},
                        },
                        "additionalProperties": True,
                    },
                    "examples": examples,
                }
            },
        }
    }


_HELLO = [{"role": "user", "content": "hello there"}]
CHAT_BODY = _openai_body(
    {
        "chat": {"summary": "A chat completion", "value": {"model": CHAT_MODEL, "messages": _HELLO}},
        "stream": {
            "summary": "Streamed, as server-sent events",
            "value": {"model": f"{CHAT_MODEL}@champion", "messages": _HELLO, "stream": True},
        },
    }
)
RESPONSES_BODY = _openai_body(
    {
        "text": {"summary": "A string input", "value": {"model": RESPONSES_AGENT, "input": "hello there"}},
        "messages": {
            "summary": "Messages, streamed",
            "value": {"model": f"{RESPONSES_AGENT}@champion", "input": _HELLO, "stream": True},
        },
    }
)

NAME_DESCRIPTION = "Registered model name"
VERSION_DESCRIPTION = "A version number, an alias such as `champion`, or `latest`"
NAME_EXAMPLES = {IRIS: {"summary": "The demo's iris classifier", "value": IRIS}}
# Keys are words: a browser lists integer-like keys ("2") first, which would make the number
# the example Swagger UI fills in.
VERSION_EXAMPLES = {
    "alias": {"summary": "An alias", "value": "champion"},
    "number": {"summary": "A version number", "value": "2"},
    "latest": {"summary": "The highest READY version", "value": "latest"},
}


def documented_parameter(
    name: str, where: str, description: str, examples: dict[str, dict[str, str]] | None = None
) -> dict[str, Any]:
    """An OpenAPI parameter entry for a parameter the route reads itself."""
    entry: dict[str, Any] = {"name": name, "in": where, "required": where == "path", "schema": {"type": "string"}}
    if examples is not None:
        entry["examples"] = examples
    return entry | {"description": description}


NAME_PARAMETER = documented_parameter("name", "path", NAME_DESCRIPTION, NAME_EXAMPLES)
VERSION_PARAMETER = documented_parameter("version", "path", VERSION_DESCRIPTION, VERSION_EXAMPLES)

# --- errors ----------------------------------------------------------------------------------


def _raised(call: Callable[[], object]) -> Exception:
    """What ``call`` raises: the gateway's own words for a bad body, not a copy of them."""
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("expected an error")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_DEFAULT_BODY_LIMIT = 10 * 1024 * 1024  # GATEWAY_MAX_BODY_BYTES' default

# key -> (summary, the error). The key says what a request did wrong; tests send those they can.
PREDICT_ERRORS: dict[str, tuple[str, BaseException]] = {
    "not_json": ("The body is not JSON", _raised(lambda: decode(b"{rows: 1}", JSON, Model()))),
    "no_input_key": (
        "No input key, or more than one",
        _raised(lambda: decode(b'{"rows": [[5.1, 3.5, 1.4, 0.2]]}', JSON, Model())),
    ),
    "missing_column": (
        "A column the model needs is missing",
        errors.InvalidInput(
            "Failed to enforce schema of data '   sepal length (cm)  sepal width (cm)  petal length (cm)\n"
            "0                5.1               3.5                1.4' with schema "
            "'['sepal length (cm)': double (required), 'sepal width (cm)': double (required), "
            "'petal length (cm)': double (required), 'petal width (cm)': double (required)]'. "
            "Error: Model is missing inputs ['petal width (cm)']."
        ),
    ),
    "bad_selector": ("Not a version number, alias or 'latest'", _raised(lambda: parse_selector("best!"))),
    "negative_version": (
        "A negative version number (no alias of that name)",
        errors.InvalidSelector("-1", f"version numbers start at 1, and model '{IRIS}' has no alias '-1'"),
    ),
    "selector_conflict": (
        "The path and X-Model-Version name different versions",
        errors.SelectorConflict(name=IRIS, path="champion", header="2", path_version=1, header_version=2),
    ),
    "unknown_model": ("No such model", errors.ModelNotFound("no-such-model")),
    "unknown_version": ("No such version", errors.VersionNotFound(IRIS, 99)),
    "unknown_alias": ("No such alias", errors.AliasNotFound(IRIS, "gold")),
    "not_ready": ("The version is still registering", errors.VersionNotReady(IRIS, 3, "PENDING_REGISTRATION")),
    "refused": (
        "The version's bytes no longer match its pinned sha256",
        errors.VersionRefused(
            IRIS, 2, f"artifacts changed: sha256 is now {_digest('changed')}, pinned {_digest('pinned')}"
        ),
    ),
    "too_large_body": ("Body over GATEWAY_MAX_BODY_BYTES", errors.PayloadTooLarge(_DEFAULT_BODY_LIMIT)),
    "unsupported_type": ("Neither JSON, CSV nor Parquet", errors.UnsupportedMediaType("application/xml")),
    "model_raised": (
        "The model raised while predicting on this input (as in MLflow: 400, not worth retrying)",
        errors.ModelRaised(IRIS, 1, "ValueError: Input X contains NaN."),
    ),
    "predict_failed": (
        "The process failed while predicting (out of memory; worth retrying elsewhere)",
        errors.PredictFailed(IRIS, 1, "MemoryError: "),
    ),
    "load_failed": (
        "The version could not be loaded (tried again after GATEWAY_LOAD_RETRY_SECONDS)",
        errors.ModelLoadFailed(IRIS, 2, "ModuleNotFoundError: No module named 'xgboost'"),
    ),
    "model_too_large": (
        "The version needs more than the whole GATEWAY_MAX_MEMORY_MB",
        errors.ModelTooLarge(IRIS, 2, size_bytes=3 * 2**30, budget_bytes=2 * 2**30),
    ),
    "queue_full": ("GATEWAY_MAX_QUEUE requests already wait (Retry-After: 1)", errors.Overloaded(IRIS, 1, 256)),
    "starting": (
        "The process is still starting (Retry-After: 1)",
        errors.NotReady("warming iris/champion"),
    ),
    "registry_down": (
        "A model never seen here, and MLflow is unreachable (Retry-After: 1)",
        RegistryUnavailable("TEMPORARILY_UNAVAILABLE: connection refused"),
    ),
    "timeout": ("Slower than GATEWAY_PREDICT_TIMEOUT_SECONDS", errors.PredictTimeout(IRIS, 1, 30.0)),
}

# What a route that needs a key answers (GATEWAY_AUTH=keys), from the gate's own errors.
AUTH_ERRORS: dict[str, tuple[str, BaseException]] = {
    "no_key": ("No API key sent", errors.Unauthenticated(sent=False)),
    "unknown_key": ("An unknown or revoked API key", errors.Unauthenticated(sent=True)),
    "invalid_token": (
        "A token that does not verify (GATEWAY_AUTH=oidc), saying why",
        errors.InvalidToken("expired", "it has expired (exp)"),
    ),
    "missing_scope": ("The key lacks the scope the route needs", errors.Forbidden("reporting", "predict:iris")),
    "key_rate": (
        "The key's rate limit is used up (Retry-After)",
        errors.RateLimited(
            "key_rate", subject="key 'reporting'", detail="the rate limit (5 requests/s, bursts of 5)", retry_after=1
        ),
    ),
}
# Security schemes for the OpenAPI description: either header carries the same key.
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`, or an identity provider's JWT with GATEWAY_AUTH=oidc",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "`X-API-Key: <key>`"},
}

_DESCRIPTIONS = {
    401: "GATEWAY_AUTH on and no API key or token, an unknown or revoked key, or a token that does not verify "
    "(WWW-Authenticate: Bearer)",
    403: "The API key or token lacks the scope this route needs",
    429: "A rate or concurrency limit of the key or the model is used up; Retry-After says when to come back",
    400: "Malformed body, wrong columns or types, a model that raised on the input, or a bad version selector",
    404: "Unknown model, version or alias",
    409: "The version exists but does not serve: not READY, or refused",
    413: "Body larger than GATEWAY_MAX_BODY_BYTES",
    415: "Content type other than JSON, CSV or Parquet",
    500: "The process failed while predicting (out of memory)",
    503: "Cannot serve now: see the message; Retry-After says when to try again, where it is worth it",
    504: "Predict slower than GATEWAY_PREDICT_TIMEOUT_SECONDS",
}


def error_responses(examples: dict[str, tuple[str, BaseException]], *keys: str) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for these errors: one entry per status they get, each with its
    own examples (all of ``examples`` when no ``keys`` are named)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for key in keys or tuple(examples):
        summary, error = examples[key]
        status, body = http_errors.documented(error)
        entry = responses.setdefault(
            status,
            {"model": ErrorBody, "description": _DESCRIPTIONS[status], "content": {JSON: {"examples": {}}}},
        )
        entry["content"][JSON]["examples"][key] = {"summary": summary, "value": body}
    return dict(sorted(responses.items()))
