"""The gateway answers as ``mlflow models serve`` does (issue 16), alone and batched, on the
fast path and through pyfunc: status class, error_code and predictions, body for body.

Every difference that stays is on purpose: it is listed in ``INTENDED`` with the test below
that pins it, and in docs/user-guide.md under "Differences from `mlflow models serve`".
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conformance import harness
from tests.conformance import models as kinds
from tests.conformance.conftest import ConformanceRegistry, Run
from tests.conformance.corpus import Case
from tests.support.numeric import assert_far_from_ties, mlp_error_bound
from tests.support.servers import BIN, Process, free_port

README = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"

# (kind, case) -> the test that pins the gateway's answer there, and MLflow's.
INTENDED: dict[tuple[str, str], str] = {
    ("iris", "media type upper"): "test_media_type_and_charset_are_read_as_rfc_9110_reads_them",
    ("iris", "charset quoted"): "test_media_type_and_charset_are_read_as_rfc_9110_reads_them",
    ("iris", "charset name upper"): "test_media_type_and_charset_are_read_as_rfc_9110_reads_them",
    ("iris", "x-parquet"): "test_x_parquet_is_read_as_parquet",
    ("iris", "no content type"): "test_a_body_without_a_content_type_is_415_not_500",
    ("iris", "params not an object"): "test_params_that_are_not_an_object_are_refused_not_ignored",
    ("params", "out of memory"): "test_a_model_out_of_memory_is_500_not_400",
    ("unusual-outputs", "output float32"): "test_float32_outputs_are_written_as_float32",
    ("unusual-outputs", "output non-finite"): "test_non_finite_outputs_are_null_not_invalid_json",
}


def _bound(kind: kinds.Kind, registry: ConformanceRegistry) -> Any:
    """How far a batched answer may be from one request's: zero, except for torch, whose
    batch of rows runs other kernels than one row (float32 sums in other orders). There it
    is twice the rounding bound of the network's sums for the case's rows (each answer is
    within one bound of the exact result; tests/support/numeric.py derives it from eps)."""
    if kind is not kinds.TORCH:
        return None
    network = registry.pyfunc(kind.name).get_raw_model()

    def bound(case: Case) -> Any:
        if case.rows is None:
            return None
        return 2 * mlp_error_bound(network, np.asarray(case.rows, dtype=np.float32))

    return bound


@pytest.mark.parametrize("kind", kinds.KINDS, ids=[k.name for k in kinds.KINDS])
def test_gateway_answers_as_mlflow_models_serve(
    conformance_run: Run, conformance_registry: ConformanceRegistry, kind: kinds.Kind
) -> None:
    if kind is kinds.IRIS:  # labels of a batch compare exactly only away from ties between classes
        rows = [row for case in conformance_run.cases[kind.name] if case.rows for row in case.rows]
        assert_far_from_ties(conformance_registry.pyfunc(kind.name).get_raw_model(), rows)
    comparison = harness.Comparison(kind, _bound(kind, conformance_registry))
    reference = conformance_run.reference[kind.name]
    for (name, variant, mode), answers in conformance_run.gateway.items():
        if name != kind.name:
            continue
        for case in conformance_run.cases[name]:
            if (name, case.name) in INTENDED:
                continue
            for n, answer in enumerate(answers[case.name]):
                where = f"{variant}, {mode} #{n}"
                comparison.check(case, where, reference[case.name], answer, batched=mode == harness.BATCHED)
    assert comparison.compared > 0
    assert not comparison.discrepancies, (
        f"{len(comparison.discrepancies)} of {comparison.compared} answers differ from MLflow's:\n"
        + "\n".join(comparison.discrepancies)
    )


@pytest.mark.parametrize("kind", [k for k in kinds.KINDS if k.batches], ids=lambda k: k.name)
def test_the_batched_runs_really_shared_batches(conformance_run: Run, kind: kinds.Kind) -> None:
    """Else the batched comparison would prove nothing about batching."""
    for (name, variant), shared in conformance_run.shared_calls.items():
        if name == kind.name:
            assert shared > 0, f"{name} ({variant}): every request of the burst ran alone"


def test_bodies_the_gateway_refuses_alone_are_refused_in_a_batch(conformance_run: Run) -> None:
    """Issue 16's first finding, on its own: batching never changes which requests succeed."""
    for (name, variant, _), answers in conformance_run.gateway.items():
        alone = conformance_run.gateway[(name, variant, harness.ALONE)]
        for case, got in answers.items():
            assert {a.status for a in got} == {alone[case][0].status}, f"{name} / {case} ({variant})"


# --- the reference is `mlflow models serve` ------------------------------------------------------


@pytest.mark.server
def test_the_in_process_reference_answers_as_a_real_mlflow_models_serve(
    conformance_run: Run, conformance_registry: ConformanceRegistry, tmp_path: Path
) -> None:
    """The suite compares with MLflow's scoring app in process; here one kind's corpus goes to
    a real ``mlflow models serve --env-manager local`` too, and every answer must be the same."""
    kind = kinds.PIPELINE
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # it runs `uvicorn`
    model = conformance_registry.local_path(kind.name)
    args = [str(BIN / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local"]
    server = Process(
        [*args, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        log=tmp_path / "models-serve.log",
        health_url=f"http://127.0.0.1:{port}/ping",
        name="mlflow models serve",
    )
    server.start(timeout=120)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            real = {}
            for case in conformance_run.cases[kind.name]:
                headers = {"content-type": case.content_type} if case.content_type is not None else {}
                real[case.name] = harness.read_answer(client.post("/invocations", content=case.body, headers=headers))
    finally:
        server.stop()
    reference = conformance_run.reference[kind.name]
    # Status, error_code and the whole answer of a success; not error messages, which print
    # Python sets in each process's own hash order.
    differ = [
        f"{name}: real {real[name].short()} | in process {reference[name].short()}"
        for name in real
        if _essence(real[name]) != _essence(reference[name])
    ]
    assert len(real) == len(conformance_run.cases[kind.name]) and not differ, "\n".join(differ)


def _essence(answer: harness.Answer) -> tuple[int, str | None, Any]:
    return answer.status, answer.error_code, answer.document if answer.status < 300 else None


# --- the differences on purpose ---------------------------------------------------------------


def _mlflow(run: Run, kind: str, case: str) -> harness.Answer:
    return run.reference[kind][case]


def _gateway(run: Run, kind: str, case: str) -> list[harness.Answer]:
    return [answer for (name, _, _), answers in run.gateway.items() if name == kind for answer in answers[case]]


def test_media_type_and_charset_are_read_as_rfc_9110_reads_them(conformance_run: Run) -> None:
    """Media types and parameter names are case-insensitive, and a parameter value may be
    quoted (RFC 9110, 8.3.1); MLflow compares them as exact strings (415). Whitespace around
    '=' is not allowed by the RFC: refused by both (in the differential corpus)."""
    good = _mlflow(conformance_run, "iris", "split")
    for case in ("media type upper", "charset quoted", "charset name upper"):
        assert _mlflow(conformance_run, "iris", case).status == 415
        assert all(a == good for a in _gateway(conformance_run, "iris", case)), case


def test_x_parquet_is_read_as_parquet(conformance_run: Run) -> None:
    """``application/x-parquet``, the name many clients still send, is Parquet here; MLflow 3
    knows only ``application/vnd.apache.parquet`` (415)."""
    assert _mlflow(conformance_run, "iris", "x-parquet").status == 415
    parquet = _mlflow(conformance_run, "iris", "parquet")
    assert parquet.status == 200
    assert all(a == parquet for a in _gateway(conformance_run, "iris", "x-parquet"))


def test_a_body_without_a_content_type_is_415_not_500(conformance_run: Run) -> None:
    assert _mlflow(conformance_run, "iris", "no content type").status == 500  # an AttributeError in MLflow
    for answer in _gateway(conformance_run, "iris", "no content type"):
        assert (answer.status, answer.error_code) == (415, "BAD_REQUEST")


def test_params_that_are_not_an_object_are_refused_not_ignored(conformance_run: Run) -> None:
    """MLflow drops a non-object ``params`` for a model without a params schema and answers as if
    none were sent; the gateway says the request is wrong (for a model with a params schema
    both refuse it: the differential corpus of ``params``)."""
    assert _mlflow(conformance_run, "iris", "params not an object").status == 200
    for answer in _gateway(conformance_run, "iris", "params not an object"):
        assert (answer.status, answer.error_code) == (400, "INVALID_PARAMETER_VALUE")
        assert "'params' must be a JSON object" in answer.document["message"]


def test_a_model_out_of_memory_is_500_not_400(conformance_run: Run) -> None:
    """Whatever a model raises is 400 BAD_REQUEST in both (the differential corpus: ZeroDivisionError,
    RuntimeError, AssertionError), but MemoryError says the process is in trouble, not the
    body: 500, worth retrying on another replica. MLflow answers it 400."""
    mlflow = _mlflow(conformance_run, "params", "out of memory")
    assert (mlflow.status, mlflow.error_code) == (400, "BAD_REQUEST")
    for answer in _gateway(conformance_run, "params", "out of memory"):
        assert (answer.status, answer.error_code) == (500, "INTERNAL_ERROR")
    for case in ("divide by zero", "runtime error", "assertion error"):
        for answer in _gateway(conformance_run, "params", case):
            assert (answer.status, answer.error_code) == (400, "BAD_REQUEST"), case


def test_float32_outputs_are_written_as_float32(conformance_run: Run) -> None:
    """MLflow widens float32 to float64 and writes that (0.10000000149011612); the gateway
    writes each float32 in its shortest form (0.1), which reads back as the very same float32
    (the differential comparison of the torch kind reads both in float32)."""
    expected = _mlflow(conformance_run, "unusual-outputs", "output float32").document["predictions"]
    for answer in _gateway(conformance_run, "unusual-outputs", "output float32"):
        written = answer.document["predictions"]
        assert written == [float(np.format_float_positional(np.float32(v), unique=True)) for v in expected]
        assert np.array_equal(np.asarray(written, dtype=np.float32), np.asarray(expected, dtype=np.float32))


def test_non_finite_outputs_are_null_not_invalid_json(conformance_run: Run) -> None:
    """MLflow writes NaN and Infinity literals, which are not JSON (RFC 8259): strict parsers
    refuse the whole answer. The gateway writes null there."""
    raw = conformance_run.reference["unusual-outputs"]["output non-finite"]
    assert raw.status == 200 and np.isnan(raw.document["predictions"][0])
    for answer in _gateway(conformance_run, "unusual-outputs", "output non-finite"):
        assert answer.document == {"predictions": [None, None, None, 1.5]}


def test_every_intended_difference_is_pinned_and_documented() -> None:
    readme = README.read_text()
    section = readme.split("## Differences from `mlflow models serve`", 1)
    assert len(section) == 2, "the README has no section 'Differences from `mlflow models serve`'"
    listed = section[1].split("\n## ", 1)[0]
    for test in set(INTENDED.values()) | {"test_bodies_the_gateway_refuses_alone_are_refused_in_a_batch"}:
        assert callable(globals().get(test)), f"no test {test}"
        assert re.search(rf"\b{test}\b", listed), f"the README's differences section does not name {test}"
