"""Failed requests are rows of the inference tables on every protocol (issue 50): a request that
fails once its version is chosen, over OIP gRPC (tritonclient), OpenAI's chat route (the
``openai`` SDK), and a stream that fails before its first chunk, each lands as a row with its
protocol, status and error code, read back with DuckDB as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import Registry, settings_under
from tests.gateway.protocols.conftest import served
from tests.support.servers import free_port
from tests.support.waiting import wait_until

MESSAGES = [{"role": "user", "content": "the quick brown fox"}]


def rows(root: Path) -> dict[str, dict[str, object]]:
    """The predictions table's rows by request id; empty while no file is published.

    The query is executed once (a connection's ``execute``): a lazy ``duckdb.sql`` relation binds
    its columns when asked for them and globs the files again when fetched, so a file published
    in between (another model's, with other columns) gave rows longer than their names."""
    files = f"'{root}/predictions/**/*.parquet'"
    try:
        cursor = duckdb.connect().execute(
            f"SELECT * FROM read_parquet({files}, hive_partitioning = true, union_by_name = true)"
        )
    except duckdb.IOException:
        return {}
    names = [column[0] for column in cursor.description]
    return {row["request_id"]: row for row in (dict(zip(names, r, strict=True)) for r in cursor.fetchall())}


def test_failed_requests_on_grpc_openai_and_streams_are_rows(agents_registry: Registry, tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    port = free_port()
    settings = settings_under(
        tmp_path / "gateway",
        grpc_port=port,
        records_sink=f"parquet+{tables.as_uri()}",
        records_table_roll_seconds=0.2,
    )
    with served(settings, agents_registry) as address:
        grpc_client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        try:
            uneven = []  # two columns of a frame, two rows and one: no table to predict on
            for name, length in (("a", 2), ("b", 1)):
                column = triton.InferInput(name, [length], "FP64")
                column.set_data_from_numpy(np.zeros(length))
                uneven.append(column)
            with pytest.raises(InferenceServerException) as refused:
                grpc_client.infer("plain", uneven, model_version="1", headers={"x-request-id": "grpc-bad-input"})
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
        finally:
            grpc_client.close()

        sdk = openai.OpenAI(base_url=f"http://{address}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="is a ResponsesAgent"):  # /v1/responses serves it
            sdk.chat.completions.create(
                model="agent",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_headers={"X-Request-ID": "openai-fails"},
            )

        body = {"prompt": "the quick brown fox", "options": {"fail_at": 0}, "stream": True}
        stream = httpx.post(
            f"http://{address}/models/words/invocations", json=body, headers={"X-Request-ID": "stream-fails"}
        )
        assert stream.status_code == 400, stream.text  # before the first chunk: an HTTP error
        stream_code = stream.json()["error_code"]

        wanted = {"grpc-bad-input", "openai-fails", "stream-fails"}
        wait_until(lambda: wanted <= rows(tables).keys(), timeout=30, what="the failed requests' rows")
    found = rows(tables)
    grpc_row, openai_row, stream_row = (found[r] for r in ("grpc-bad-input", "openai-fails", "stream-fails"))
    assert (grpc_row["model"], grpc_row["protocol"], grpc_row["status"]) == ("plain", "oip-grpc", 400)
    assert grpc_row["error_code"] == "INVALID_PARAMETER_VALUE" and grpc_row["outputs"] is None
    assert (openai_row["model"], openai_row["protocol"], openai_row["status"]) == ("agent", "openai", 400)
    assert openai_row["error_code"] == "INVALID_PARAMETER_VALUE" and openai_row["outputs"] is None
    assert json.loads(str(openai_row["inputs"]))["messages"] == MESSAGES  # the body, as sent
    assert (stream_row["model"], stream_row["protocol"], stream_row["status"]) == ("words", "mlflow", 400)
    assert stream_row["error_code"] == stream_code and stream_row["outputs"] is None
