"""A job submitted while its files' store does not answer (a real S3 endpoint, moto_server,
stopped): 503 with Retry-After and a body naming the location, since trying again later may
work; once the endpoint is back, a missing object is still the caller's 400, and an object
that is there is scored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gateway.demo import IRIS
from gateway.settings import GatewaySettings
from tests.conftest import Registry, running_gateway
from tests.gateway.jobs.test_jobs import JOB_SETTINGS, ended, iris_rows
from tests.support.s3 import S3, moto_s3

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    with moto_s3(tmp_path / "moto", bucket="jobs") as endpoint:
        for key, value in endpoint.client_env.items():
            monkeypatch.setenv(key, value)  # the gateway takes S3 as MLflow's clients do
        yield endpoint


async def test_a_submission_while_s3_is_down_is_503_and_a_missing_object_stays_400(
    s3: S3, tmp_path: Path, sqlite_registry: Registry, make_settings: Callable[..., GatewaySettings]
) -> None:
    given = iris_rows(300)
    pq.write_table(given, tmp_path / "in.parquet", row_group_size=100)
    s3.client().upload_file(str(tmp_path / "in.parquet"), s3.bucket, "in/rows.parquet")
    s3_input = {"input": f"s3://{s3.bucket}/in/rows.parquet", "output": str(tmp_path / "out"), "id_column": "row_id"}
    s3_output = {"input": str(tmp_path / "in.parquet"), "output": f"s3://{s3.bucket}/out", "id_column": "row_id"}
    assert s3.server is not None
    async with running_gateway(make_settings(**JOB_SETTINGS), sqlite_registry.tracking_uri) as gateway:
        s3.server.stop()
        for body, named in ((s3_input, s3_input["input"]), (s3_output, s3_output["output"])):
            answer = await gateway.client.post(f"/models/{IRIS}/versions/1/jobs", json=body)
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"].isdigit(), answer.headers
            assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE", answer.text
            assert named in answer.json()["message"], answer.text
        assert (await gateway.client.get("/jobs")).json() == {"jobs": []}  # nothing was queued

        s3.server.start(timeout=60)  # back, empty (moto keeps nothing): the object is missing now
        s3.client().create_bucket(Bucket=s3.bucket)
        missing = await gateway.client.post(f"/models/{IRIS}/versions/1/jobs", json=s3_input)
        assert missing.status_code == 400, missing.text
        assert "Retry-After" not in missing.headers and s3_input["input"] in missing.json()["message"]

        s3.client().upload_file(str(tmp_path / "in.parquet"), s3.bucket, "in/rows.parquet")
        submitted = await gateway.client.post(f"/models/{IRIS}/versions/1/jobs", json=s3_input)
        assert submitted.status_code == 202, submitted.text
        done = await ended(gateway, submitted.json()["id"])
    assert (done["state"], done["rows_done"]) == ("succeeded", 300), done
