"""Every input row is read exactly once across the chunks of a plan, in order, whatever the
target sizes and the file's layout."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.jobs.files_data import read_plan, rows, write

_LABELS = st.text(alphabet=st.sampled_from('ab ,"é1'), max_size=8)  # commas and quotes, no newline


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(0, 300),
    labels=st.lists(_LABELS, min_size=300, max_size=300),
    extension=st.sampled_from([".parquet", ".csv", ".jsonl"]),
    row_group_size=st.integers(1, 120),
    target_rows=st.integers(1, 400),
    target_bytes=st.integers(1, 6000),
    files=st.integers(1, 3),
)
def test_concatenated_chunks_equal_the_files_read_whole(
    count: int,
    labels: list[str],
    extension: str,
    row_group_size: int,
    target_rows: int,
    target_bytes: int,
    files: int,
) -> None:
    tables = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(files):
            table = rows(count, first=index * count)
            table = table.set_column(5, "label", pa.array(labels[:count], pa.string()))
            write(table, Path(folder) / f"{index}{extension}", row_group_size=row_group_size)
            tables.append(table)
        _, back = read_plan(folder, target_rows=target_rows, target_bytes=target_bytes)
    assert back.equals(pa.concat_tables(tables))


def test_crlf_lines_and_a_last_line_without_newline_read_once(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a,b\r\n" + b"".join(f"{i},{i * 2}\r\n".encode() for i in range(99)) + b"99,198")
    from gateway.jobs.files.chunks import plan_chunks
    from gateway.jobs.files.locations import find_inputs
    from gateway.jobs.files.readers import read_chunk

    for target in (1, 7, 64, 1000):
        chunks = plan_chunks(find_inputs(str(path), max_files=1), target_rows=1, target_bytes=target)
        got = [row for chunk in chunks for row in read_chunk(chunk).to_pylist()]
        assert got == [{"a": i, "b": i * 2} for i in range(100)]
