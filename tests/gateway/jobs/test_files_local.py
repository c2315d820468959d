"""A job's files on a local folder: finding, planning, reading and committing (gateway/jobs/files)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.jobs.files.chunks import ChunkSpec, plan_chunks
from gateway.jobs.files.errors import InputNotFound, InputUnreadable, InvalidLocation, JobFileError, TooManyInputs
from gateway.jobs.files.locations import InputFile, find_inputs
from gateway.jobs.files.readers import read_chunk
from gateway.jobs.files.writers import OutputLocation
from tests.gateway.jobs.files_data import read_plan, rows, write


@pytest.mark.parametrize("name", ["in.parquet", "in.csv", "in.jsonl"])
def test_a_file_in_every_format_reads_back_whole_across_its_chunks(tmp_path: Path, name: str) -> None:
    table = rows(1000)
    path = write(table, tmp_path / name, row_group_size=64)
    chunks, back = read_plan(str(path), target_rows=200, target_bytes=4096)
    assert len(chunks) > 3
    assert back.equals(table)


def test_parquet_chunks_are_whole_row_groups_from_the_footer(tmp_path: Path) -> None:
    path = write(rows(1000), tmp_path / "in.parquet", row_group_size=64)  # 16 groups, the last of 40 rows
    [file] = find_inputs(path.as_uri(), max_files=10)
    chunks = plan_chunks([file], target_rows=150, target_bytes=1 << 30)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 16)]
    assert [c.rows for c in chunks] == [192, 192, 192, 192, 192, 40]
    assert [c.first_row for c in chunks] == [0, 192, 384, 576, 768, 960]
    assert read_chunk(chunks[1], columns=["row_id"])["row_id"].to_pylist() == list(range(192, 384))


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
def test_text_chunks_start_at_line_starts_and_cover_the_file(tmp_path: Path, name: str) -> None:
    path = write(rows(500), tmp_path / name)
    data = path.read_bytes()
    [file] = find_inputs(str(path), max_files=10)
    chunks = plan_chunks([file], target_rows=1, target_bytes=777)  # cuts fall inside lines
    first = data.index(b"\n") + 1 if name.endswith(".csv") else 0  # the header is no chunk's
    assert chunks[0].start == first and chunks[-1].stop == len(data)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.stop == after.start
        assert data[after.start - 1 : after.start] == b"\n"


def test_a_chunk_round_trips_through_json(tmp_path: Path) -> None:
    path = write(rows(300), tmp_path / "in.parquet", row_group_size=100)
    chunks = plan_chunks(find_inputs(str(path), max_files=1), target_rows=100, target_bytes=1 << 30)
    assert [ChunkSpec.from_json(c.to_json()) for c in chunks] == chunks
    with pytest.raises(ValueError):
        ChunkSpec.from_json({"file": {"uri": "file:///x", "size": 1, "format": "xls"}, "start": 0, "stop": 1})
    with pytest.raises(ValueError):
        ChunkSpec.from_json({"start": 0})


def test_folders_globs_and_lists_find_files_of_known_formats_sorted_once(tmp_path: Path) -> None:
    for name in ("a/1.parquet", "a/2.csv", "a/deep/3.jsonl", "a/notes.txt", "a/_SUCCESS", "a/.hidden.csv", "b/4.pq"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = lambda found: [f.uri.removeprefix(tmp_path.as_uri() + "/") for f in found]  # noqa: E731
    assert names(find_inputs(str(tmp_path / "a"), max_files=10)) == ["a/1.parquet", "a/2.csv", "a/deep/3.jsonl"]
    assert names(find_inputs(f"{tmp_path}/a/*", max_files=10)) == ["a/1.parquet", "a/2.csv"]
    assert names(find_inputs(f"{tmp_path}/**/*.csv", max_files=10)) == ["a/2.csv"]
    assert names(find_inputs(f"{tmp_path}/a/**", max_files=10)) == ["a/1.parquet", "a/2.csv", "a/deep/3.jsonl"]
    assert names(find_inputs(f"{tmp_path}/?/[1-4].*", max_files=10)) == ["a/1.parquet", "a/2.csv", "b/4.pq"]
    both = [str(tmp_path / "b"), (tmp_path / "a" / "1.parquet").as_uri(), str(tmp_path / "b" / "4.pq")]
    assert names(find_inputs(both, max_files=10)) == ["a/1.parquet", "b/4.pq"]
    found = find_inputs(str(tmp_path / "a" / "notes.txt"), format="csv", max_files=10)
    assert [(f.format, f.size) for f in found] == [("csv", 1)]
    with pytest.raises(TooManyInputs):
        find_inputs(str(tmp_path), max_files=3)


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("relative/in.csv", InvalidLocation),
        ("http://example.com/in.csv", InvalidLocation),
        ("file://host/in.csv", InvalidLocation),
        ("{tmp}/missing.csv", InputNotFound),
        ("{tmp}/*.parquet", InputNotFound),
        ("{tmp}/empty", InputNotFound),
        ("{tmp}/empty/notes.txt", InvalidLocation),
    ],
)
def test_inputs_that_name_nothing_readable_are_refused_with_a_reason(
    tmp_path: Path, spec: str, error: type[JobFileError]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(error) as raised:
        find_inputs(spec.format(tmp=tmp_path), max_files=10)
    assert raised.value.reason and "\n" not in raised.value.reason
    with pytest.raises(InvalidLocation):
        find_inputs(str(tmp_path), format="xlsx", max_files=10)


def test_a_file_gone_since_the_plan_is_input_not_found(tmp_path: Path) -> None:
    path = write(rows(10), tmp_path / "in.csv")
    [chunk] = plan_chunks(find_inputs(str(path), max_files=1), target_rows=10, target_bytes=1 << 20)
    path.unlink()
    with pytest.raises(InputNotFound, match="in.csv"):
        read_chunk(chunk)


@pytest.mark.parametrize("format", ["parquet", "csv", "jsonl"])
def test_committed_parts_read_back_in_order_and_a_redo_replaces_its_part(tmp_path: Path, format: str) -> None:
    out = OutputLocation.parse(str(tmp_path / "out") + "/", format)
    assert out.uri == (tmp_path / "out").as_uri()
    out.check_writable()
    assert out.committed() == []
    assert out.commit(1, rows(5, first=5)) == out.part_uri(1)
    out.commit(0, rows(5))
    out.commit(1, rows(5, first=5))  # the same chunk again, after a replica died past its commit
    assert out.committed() == [out.part_uri(0), out.part_uri(1)]
    assert out.part_uri(1).endswith(f"/part-000001.{format}")
    assert sorted(os.listdir(tmp_path / "out")) == [f"part-000000.{format}", f"part-000001.{format}"]
    back = read_plan(str(tmp_path / "out"), target_rows=3, target_bytes=50)[1]
    assert back.equals(rows(10))


def test_nested_predictions_are_json_text_in_csv(tmp_path: Path) -> None:
    out = OutputLocation.parse(str(tmp_path), "csv")
    out.commit(0, pa.table({"row_id": [1, 2], "probabilities": [[0.25, 0.75], None]}))
    lines = (tmp_path / "part-000000.csv").read_text().splitlines()
    assert lines == ['"row_id","probabilities"', '1,"[0.25,0.75]"', "2,"]


def test_an_output_that_cannot_be_written_is_refused_early_and_not_retried(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    blocked = OutputLocation.parse(str(tmp_path / "file" / "out"), "parquet")  # under a file
    with pytest.raises(JobFileError) as raised:
        blocked.check_writable()
    assert raised.value.transient is False and "cannot be written" in raised.value.reason
    with pytest.raises(JobFileError) as raised:
        blocked.commit(0, rows(3))
    assert raised.value.transient is False
    with pytest.raises(InvalidLocation):
        OutputLocation.parse(str(tmp_path), "xlsx")
    with pytest.raises(InvalidLocation):
        OutputLocation.parse("out/", "csv")


def test_a_full_disk_is_transient_and_leaves_no_half_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = OutputLocation.parse(str(tmp_path), "parquet")
    out.commit(0, rows(3))

    # A full disk cannot be made here for real: the write's last step fails as one would.
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(JobFileError, match="No space left") as raised:
        out.commit(0, rows(6))
    assert raised.value.transient is True
    assert sorted(os.listdir(tmp_path)) == ["part-000000.parquet"]
    assert pq.read_table(tmp_path / "part-000000.parquet").equals(rows(3))


def test_input_file_is_what_find_inputs_returns(tmp_path: Path) -> None:
    path = write(rows(3), tmp_path / "in.ndjson")
    assert find_inputs(str(path), max_files=1) == [InputFile(path.as_uri(), path.stat().st_size, "jsonl")]


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl", "in.parquet"])
def test_types_given_are_kept_and_a_value_not_of_its_type_fails_the_chunk(tmp_path: Path, name: str) -> None:
    table = pa.table({"zip": ["007", "12"], "x": ["1.5", "oops"]})
    [chunk] = plan_chunks(find_inputs(str(write(table, tmp_path / name)), max_files=1), target_rows=9, target_bytes=99)
    assert read_chunk(chunk, columns=["zip"], types={"zip": pa.string()})["zip"].to_pylist() == ["007", "12"]
    with pytest.raises(InputUnreadable, match=r"oops|Column\(/x\)"):
        read_chunk(chunk, types={"x": pa.float64()})


def test_roots_bound_where_inputs_are_read_and_outputs_written(tmp_path: Path) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    write(rows(3), allowed / "in" / "a.csv")
    write(rows(3), other / "secret.csv")
    (allowed / "in" / "link.csv").symlink_to(other / "secret.csv")  # a link out of the root
    roots = [str(allowed), "s3://bucket/jobs/"]
    found = find_inputs(f"{allowed}/in/a.csv", max_files=10, roots=roots)
    assert [f.uri for f in found] == [(allowed / "in" / "a.csv").as_uri()]
    for spec in (str(other / "secret.csv"), f"{tmp_path}/*/secret.csv", f"{allowed}/../other", f"{allowed}/in"):
        with pytest.raises(InvalidLocation, match="outside the folders and S3 prefixes"):
            find_inputs(spec, max_files=10, roots=roots)
    with pytest.raises(InvalidLocation, match="outside"):
        find_inputs("s3://bucket/jobsecret/x.csv", max_files=10, roots=roots)
    assert OutputLocation.parse(f"{allowed}/out", "csv", roots=roots).uri == (allowed / "out").as_uri()
    assert OutputLocation.parse("s3://bucket/jobs/out", "csv", roots=roots).uri == "s3://bucket/jobs/out"
    for uri in (str(other), f"{allowed}/../other", "s3://bucket/job", "s3://other/jobs/out"):
        with pytest.raises(InvalidLocation, match="outside"):
            OutputLocation.parse(uri, "csv", roots=roots)
