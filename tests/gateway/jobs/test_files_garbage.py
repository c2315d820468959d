"""Files that are not what they claim: each fails with InputUnreadable naming the file and the
range, and the rest of the file's chunks still read."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gateway.jobs.files.chunks import ChunkSpec, plan_chunks
from gateway.jobs.files.errors import InputUnreadable
from gateway.jobs.files.locations import find_inputs
from gateway.jobs.files.readers import read_chunk
from tests.gateway.jobs.files_data import rows, write


def _plan(path: Path, *, target_bytes: int = 1 << 20, target_rows: int = 1 << 20) -> list[ChunkSpec]:
    return plan_chunks(find_inputs(str(path), max_files=1), target_rows=target_rows, target_bytes=target_bytes)


def _failing(chunks: list[ChunkSpec]) -> dict[int, InputUnreadable]:
    """The chunks that fail, by index, reading each (the others must read)."""
    failed: dict[int, InputUnreadable] = {}
    for index, chunk in enumerate(chunks):
        try:
            read_chunk(chunk)
        except InputUnreadable as exc:
            failed[index] = exc
    return failed


def test_a_truncated_parquet_file_fails_its_plan_at_the_footer(tmp_path: Path) -> None:
    path = write(rows(500), tmp_path / "in.parquet")
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(InputUnreadable) as raised:
        _plan(path)
    assert raised.value.range == "footer" and str(path) in raised.value.reason


def test_a_parquet_row_group_overwritten_fails_its_chunk_only(tmp_path: Path) -> None:
    path = write(rows(1000), tmp_path / "in.parquet", row_group_size=250)
    chunks = _plan(path, target_rows=250)
    column = pq.ParquetFile(path).metadata.row_group(2).column(1)  # a float column of group 2
    data = bytearray(path.read_bytes())
    start = column.data_page_offset
    data[start : start + column.total_compressed_size] = b"\xff" * column.total_compressed_size
    path.write_bytes(bytes(data))
    failed = _failing(chunks)
    assert list(failed) == [2]
    assert failed[2].range == "row groups 2-2"


def test_a_ragged_csv_row_fails_the_chunk_that_holds_it(tmp_path: Path) -> None:
    path = write(rows(400), tmp_path / "in.csv")
    lines = path.read_bytes().split(b"\n")
    lines[300] = b"1,2,3"  # three fields where the header names six
    path.write_bytes(b"\n".join(lines))
    chunks = _plan(path, target_bytes=2000)
    failed = _failing(chunks)
    ragged = path.read_bytes().index(b"\n1,2,3\n") + 1
    [(index, error)] = failed.items()
    assert chunks[index].start <= ragged < chunks[index].stop
    assert error.range == f"bytes {chunks[index].start}-{chunks[index].stop - 1}"
    assert "Expected 6 columns, got 3" in error.reason


def test_a_quoted_csv_value_across_lines_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b'id,text\n1,"one line"\n2,"two\nlines"\n3,"""quoted"""\n' + b"4,x\n" * 50)
    failed = _failing(_plan(path, target_bytes=25))  # a cut inside the quotes, and beside them
    assert failed and all("quoted value across a line break" in e.reason for e in failed.values())
    whole = _failing(_plan(path))
    assert list(whole) == [0] and "the line at byte 21" in whole[0].reason


def test_a_csv_header_that_does_not_name_its_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b,a\n1,2,3\n")
    with pytest.raises(InputUnreadable, match="name every column once"):
        _plan(path)


@pytest.mark.parametrize(("line", "why"), [(b'{"row_id": 1, "x": ', "unexpected"), (b"[1, 2]", "not an object")])
def test_a_bad_json_line_is_named_by_its_byte(tmp_path: Path, line: bytes, why: str) -> None:
    path = write(rows(300), tmp_path / "in.jsonl")
    lines = path.read_bytes().split(b"\n")
    lines[200] = line
    path.write_bytes(b"\n".join(lines))
    chunks = _plan(path, target_bytes=3000)
    failed = _failing(chunks)
    at = sum(len(previous) + 1 for previous in lines[:200])
    [(index, error)] = failed.items()
    assert chunks[index].start <= at < chunks[index].stop
    assert f"the line at byte {at}:" in error.reason and why in error.reason.lower()


def test_a_column_the_file_does_not_have_is_unreadable(tmp_path: Path) -> None:
    for name in ("in.parquet", "in.csv", "in.jsonl"):
        [chunk] = _plan(write(rows(10), tmp_path / name))
        with pytest.raises(InputUnreadable, match="no column 'petals'"):
            read_chunk(chunk, columns=["row_id", "petals"])
        assert read_chunk(chunk, columns=["petal_width", "row_id"]).column_names == ["petal_width", "row_id"]


def test_a_parquet_file_rewritten_with_fewer_row_groups_since_the_plan_is_unreadable(tmp_path: Path) -> None:
    path = write(rows(400), tmp_path / "in.parquet", row_group_size=100)
    chunks = _plan(path, target_rows=100)
    write(rows(50), path, row_group_size=100)
    with pytest.raises(InputUnreadable):
        read_chunk(chunks[-1])
