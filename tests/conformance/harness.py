"""Send the corpus to MLflow's scoring server and to the gateway, and compare the answers.

The reference is MLflow's own scoring app, ``mlflow.pyfunc.scoring_server.init(model)``,
the very ASGI app ``mlflow models serve`` runs under uvicorn (its ``scoring_server/app.py``
is ``init(load_model_with_mlflow_config(path))``), driven in process. One test checks it
against a real ``mlflow models serve`` subprocess, so the shortcut is itself verified.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from tests.conformance.corpus import Case
from tests.conformance.models import Kind

GATEWAY = "gateway"
REFERENCE = "mlflow"
ALONE, BATCHED = "alone", "batched"
FAST, PYFUNC = "as logged", "fast path off"  # the two versions of a sklearn or torch kind


@dataclass(frozen=True)
class Answer:
    status: int
    error_code: str | None
    document: Any  # the parsed JSON (Python's json: MLflow writes NaN literals), or the text

    @property
    def status_class(self) -> int:
        return self.status // 100

    def short(self) -> str:
        shown = self.error_code or (json.dumps(self.document, default=str)[:120] if self.status < 300 else "")
        message = self.document.get("message", "") if isinstance(self.document, dict) else str(self.document)
        return f"{self.status} {shown} {message[:160] if self.status >= 300 else ''}".rstrip()


def read_answer(response: httpx.Response) -> Answer:
    try:
        document = json.loads(response.content)
    except ValueError:
        document = response.text
    code = document.get("error_code") if isinstance(document, dict) and response.status_code >= 300 else None
    return Answer(response.status_code, code, document)


async def post(client: httpx.AsyncClient, url: str, case: Case) -> Answer:
    headers = {"content-type": case.content_type} if case.content_type is not None else {}
    return read_answer(await client.post(url, content=case.body, headers=headers))


def reference_app(pyfunc: Any) -> Any:
    """MLflow's scoring app for a loaded model. ``init`` marks the whole process as a serving
    environment (an environment variable); restored here, so the gateway under test in the
    same process behaves as it would anywhere else."""
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT
    from mlflow.pyfunc import scoring_server

    before = os.environ.get(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name)
    try:
        return scoring_server.init(pyfunc)
    finally:
        if before is None:
            os.environ.pop(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name, None)
        else:
            os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = before


async def reference_answers(pyfunc: Any, cases: list[Case]) -> dict[str, Answer]:
    # an exception the app does not handle is a 500, as uvicorn answers it
    transport = httpx.ASGITransport(app=reference_app(pyfunc), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mlflow", timeout=60) as client:
        return {case.name: await post(client, "/invocations", case) for case in cases}


async def alone(client: httpx.AsyncClient, url: str, cases: list[Case]) -> dict[str, Answer]:
    """One request at a time: each is a batch of its own."""
    return {case.name: await post(client, url, case) for case in cases}


async def batched(
    client: httpx.AsyncClient, url: str, cases: list[Case], *, rounds: int, seed: int
) -> dict[str, list[Answer]]:
    """The whole corpus at once, ``rounds`` times in shuffled orders (a fixed seed): every body
    queues with the others, so a batching version shares predict calls among them."""
    shuffler = random.Random(seed)
    answers: dict[str, list[Answer]] = {case.name: [] for case in cases}
    for _ in range(rounds):
        order = shuffler.sample(cases, len(cases))
        for case, answer in zip(order, await asyncio.gather(*(post(client, url, c) for c in order)), strict=True):
            answers[case.name].append(answer)
    return answers


# --- comparing ---------------------------------------------------------------------------------


@dataclass
class Comparison:
    """Where the gateway's answers differ from MLflow's, for one model kind."""

    kind: Kind
    # case -> how far a batched answer may be from MLflow's one-request answer (element-wise),
    # or None: exactly equal. Answers to one request alone are always compared exactly.
    bound: Any = None
    discrepancies: list[str] = field(default_factory=list)
    compared: int = 0

    def check(self, case: Case, where: str, expected: Answer, actual: Answer, *, batched: bool) -> None:
        self.compared += 1
        problem = self._difference(case, expected, actual, batched)
        if problem:
            self.discrepancies.append(
                f"{self.kind.name} / {case.name} [{where}]: {problem}\n"
                f"      mlflow:  {expected.short()}\n      gateway: {actual.short()}"
            )

    def _difference(self, case: Case, expected: Answer, actual: Answer, batched: bool) -> str | None:
        if expected.status_class != actual.status_class:
            return "status class"
        if expected.status_class != 2:
            if expected.error_code is not None and expected.error_code != actual.error_code:
                return "error_code"
            return None
        bound = self.bound(case) if batched and self.bound is not None else None
        if not same_document(expected.document, actual.document, self.kind.dtype, bound):
            return "predictions"
        return None


def same_document(expected: Any, actual: Any, dtype: str | None, bound: Any = None) -> bool:
    """Equal JSON documents, with numbers compared in the dtype the model computes in (float32
    answers are written as float64 by MLflow and in float32's shortest form by the gateway:
    the same float32) and within ``bound`` where a batch may legitimately round otherwise."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            same_document(expected[k], actual[k], dtype, bound) for k in expected
        )
    numeric = _numbers(expected, dtype)
    if numeric is not None:
        other = _numbers(actual, dtype)
        if other is None or other.shape != numeric.shape:
            return False
        if bound is None:
            return bool(np.array_equal(numeric, other, equal_nan=True))
        difference = np.abs(numeric.astype(np.float64) - other.astype(np.float64))
        return bool(np.all(difference <= np.broadcast_to(bound, difference.shape)))
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            same_document(e, a, dtype, None) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, float) and isinstance(actual, float):
        return expected == actual or (math.isnan(expected) and math.isnan(actual))
    return bool(type(expected) is type(actual) and expected == actual)


def _numbers(value: Any, dtype: str | None) -> np.ndarray | None:
    if dtype is None or not _numeric_tree(value):
        return None
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, OverflowError):  # ragged, or beyond the dtype: compared as they are
        return None


def _numeric_tree(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_numeric_tree(v) for v in value)
    return type(value) in (int, float)


def names(cases: Iterable[Case]) -> list[str]:
    return [case.name for case in cases]
