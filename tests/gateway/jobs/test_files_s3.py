"""A job's files on S3, against a real S3 endpoint (moto_server): prefixes, globs, ranged
reads, parts uploaded whole."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.jobs.files.chunks import plan_chunks
from gateway.jobs.files.errors import InputNotFound, InputUnreadable, JobFileError
from gateway.jobs.files.locations import find_inputs
from gateway.jobs.files.readers import read_chunk
from gateway.jobs.files.writers import OutputLocation
from tests.gateway.jobs.files_data import read_plan, rows, write
from tests.support.s3 import S3, moto_s3

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with moto_s3(tmp_path_factory.mktemp("moto"), bucket="jobs") as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3: S3, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in s3.client_env.items():
        monkeypatch.setenv(key, value)  # the gateway takes S3 as MLflow's clients do
    return f"s3://{s3.bucket}"


def _upload(s3: S3, tmp_path: Path, key: str, table: pa.Table, **kwargs: int) -> None:
    path = write(table, tmp_path / Path(key).name, **kwargs)
    s3.client().upload_file(str(path), s3.bucket, key)


def test_a_prefix_of_every_format_reads_back_whole_chunk_by_chunk(s3: S3, bucket: str, tmp_path: Path) -> None:
    _upload(s3, tmp_path, "in/a/1.parquet", rows(700), row_group_size=50)
    _upload(s3, tmp_path, "in/a/2.csv", rows(300, first=700))
    _upload(s3, tmp_path, "in/b/3.jsonl", rows(400, first=1000))
    _upload(s3, tmp_path, "in/b/_SUCCESS", rows(1))
    chunks, back = read_plan(f"{bucket}/in", target_rows=120, target_bytes=3000)
    assert back.equals(rows(1400))
    assert {c.file.uri for c in chunks} == {
        f"{bucket}/in/a/1.parquet",
        f"{bucket}/in/a/2.csv",
        f"{bucket}/in/b/3.jsonl",
    }
    assert len(chunks) > 10
    globbed = find_inputs([f"{bucket}/in/*/*.csv", f"{bucket}/in/**/3.*", f"{bucket}/in/a/2.csv"], max_files=10)
    assert [f.uri for f in globbed] == [f"{bucket}/in/a/2.csv", f"{bucket}/in/b/3.jsonl"]


def test_missing_objects_and_prefixes_are_input_not_found(s3: S3, bucket: str, tmp_path: Path) -> None:
    for spec in (
        f"{bucket}/nothing/here.parquet",
        f"{bucket}/nothing/",
        f"{bucket}/nothing/*.csv",
        "s3://no-bucket/x.csv",
    ):
        with pytest.raises(InputNotFound):
            find_inputs(spec, max_files=10)
    _upload(s3, tmp_path, "gone/1.csv", rows(20))
    [chunk] = plan_chunks(find_inputs(f"{bucket}/gone/1.csv", max_files=1), target_rows=1, target_bytes=1 << 20)
    s3.client().delete_object(Bucket=s3.bucket, Key="gone/1.csv")
    with pytest.raises(InputNotFound, match="gone/1.csv"):
        read_chunk(chunk)


def test_a_truncated_object_is_unreadable(s3: S3, bucket: str) -> None:
    whole = io.BytesIO()
    pq.write_table(rows(100), whole)
    s3.client().put_object(Bucket=s3.bucket, Key="bad/cut.parquet", Body=whole.getvalue()[:-100])
    with pytest.raises(InputUnreadable, match="cut.parquet"):
        plan_chunks(find_inputs(f"{bucket}/bad/cut.parquet", max_files=1), target_rows=10, target_bytes=1 << 20)


@pytest.mark.parametrize("format", ["parquet", "csv", "jsonl"])
def test_parts_upload_whole_and_a_redo_replaces_its_part(s3: S3, bucket: str, format: str) -> None:
    out = OutputLocation.parse(f"{bucket}/out/{format}/", format)
    assert out.uri == f"{bucket}/out/{format}"
    out.check_writable()
    out.commit(1, rows(4, first=4))
    out.commit(0, rows(4))
    out.commit(1, rows(4, first=4))
    assert out.committed() == [out.part_uri(0), out.part_uri(1)]
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"out/{format}/")["Contents"]
    assert sorted(item["Key"] for item in listed) == [f"out/{format}/part-00000{i}.{format}" for i in (0, 1)]
    assert read_plan(out.uri, target_rows=3, target_bytes=40)[1].equals(rows(8))


def test_a_part_past_the_multipart_threshold_arrives_whole(s3: S3, bucket: str) -> None:
    big = pa.table({"x": np.random.default_rng(0).random(1_500_000)})  # 12 MB: boto3 uploads it in parts
    out = OutputLocation.parse(f"{bucket}/big", "parquet")
    uri = out.commit(0, big)
    [chunk] = plan_chunks(find_inputs(uri, max_files=1), target_rows=1 << 30, target_bytes=1 << 40)
    assert read_chunk(chunk).equals(big)


def test_a_bucket_that_does_not_exist_is_unwritable_for_good(bucket: str) -> None:
    out = OutputLocation.parse("s3://no-such-bucket/out", "csv")
    for attempt in (out.check_writable, lambda: out.commit(0, rows(2))):
        with pytest.raises(JobFileError, match="cannot be written") as raised:
            attempt()
        assert raised.value.transient is False


def test_an_endpoint_that_does_not_answer_is_transient(
    bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.support.servers import free_port

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(JobFileError) as raised:
        OutputLocation.parse(f"{bucket}/out", "csv").commit(0, rows(2))
    assert raised.value.transient is True


@pytest.mark.parametrize("name", ["planned.parquet", "planned.csv"])
def test_an_endpoint_gone_between_listing_and_planning_is_unavailable_not_unreadable(
    s3: S3, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    """Planning reads a Parquet footer (through pyarrow) or a CSV header: the endpoint not
    answering then is the store's fault (503 at submission), never the file's (400)."""
    from gateway.jobs.files.errors import InputUnavailable
    from tests.support.servers import free_port

    _upload(s3, tmp_path, f"planned/{name}", rows(200), row_group_size=50)
    found = find_inputs(f"{bucket}/planned/{name}", max_files=1)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InputUnavailable, match="not reachable now"):
        plan_chunks(found, target_rows=50, target_bytes=1024)


@pytest.mark.parametrize("name", ["big.parquet", "big.csv", "big.jsonl"])
def test_a_chunk_reads_its_own_bytes_of_the_object_only(
    s3: S3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from gateway.jobs.files import readers, storage

    _upload(s3, tmp_path, f"ranged/{name}", rows(40_000), row_group_size=2000)
    size = (tmp_path / name).stat().st_size
    chunks = plan_chunks(find_inputs(f"{bucket}/ranged/{name}", max_files=1), target_rows=2000, target_bytes=size // 20)
    assert len(chunks) >= 19
    fetched: list[int] = []
    real = storage.read_range

    def counted(where: storage.Located, start: int, stop: int, client: object = None) -> bytes:
        data = real(where, start, stop, client)  # the real ranged GET, counted
        fetched.append(len(data))
        return data

    monkeypatch.setattr(storage, "read_range", counted)
    monkeypatch.setattr(readers, "read_range", counted)
    middle = chunks[len(chunks) // 2]
    assert read_chunk(middle).num_rows > 0
    if name.endswith("parquet"):
        metadata = pq.ParquetFile(tmp_path / name).metadata
        groups = [metadata.row_group(g) for g in range(middle.start, middle.stop)]
        own = sum(g.column(c).total_compressed_size for g in groups for c in range(g.num_columns))
    else:
        own = middle.stop - middle.start
    # Its bytes, and one read of at most 64 KiB that locates them: a Parquet file's tail, where
    # pyarrow looks for the footer, or the window where the CSV header's line ends.
    assert own <= sum(fetched) <= own + 64 * 1024 < size // 2
