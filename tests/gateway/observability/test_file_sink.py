"""The file sink: JSON lines in records.jsonl, rotated, safe for several writers on one directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from gateway.observability.records.events import event_for
from gateway.observability.records.sinks import FILE_NAME, FileSink, InvalidSinkUrl, sink_for
from gateway.settings import GatewaySettings
from tests.gateway.observability.records_support import a_record

SOURCE = "/registry-gateway/test-host"


def events(n: int, **changes: object) -> list[CloudEvent]:
    return [event_for(a_record(request_id=f"req-{i}", **changes), source=SOURCE, redact=()) for i in range(n)]


def ids_in(path: Path) -> list[str]:
    return [JSONFormat().read(None, line).get_extension("requestid") for line in path.read_bytes().splitlines()]


def test_events_land_one_line_each_in_a_directory_it_creates(tmp_path: Path) -> None:
    directory = tmp_path / "not" / "yet"
    sink = sink_for(f"file://{directory}", GatewaySettings())
    assert sink.kind == "file"
    written = events(3)
    sink.write(written[:2])
    sink.write(written[2:])
    sink.close()
    lines = (directory / FILE_NAME).read_bytes().splitlines()
    read = [JSONFormat().read(None, line) for line in lines]  # each line one structured event
    assert [event.get_id() for event in read] == [event.get_id() for event in written]
    assert read[0].get_data() == written[0].get_data()


@pytest.mark.parametrize("backups", [2, 0])
def test_the_file_rotates_before_passing_its_size_keeping_n_backups(tmp_path: Path, backups: int) -> None:
    settings = GatewaySettings(records_file_max_mb=4096 / 2**20, records_file_backups=backups)
    sink = sink_for(f"file://{tmp_path}", settings)
    written = events(40)
    for event in written:
        sink.write([event])
    sink.close()
    names = sorted(path.name for path in tmp_path.glob(f"{FILE_NAME}*"))
    assert names == [FILE_NAME] + [f"{FILE_NAME}.{n}" for n in range(1, backups + 1)]
    kept: list[str] = []
    for name in [f"{FILE_NAME}.{n}" for n in range(backups, 0, -1)] + [FILE_NAME]:
        assert 0 < (tmp_path / name).stat().st_size <= 4096
        kept += ids_in(tmp_path / name)
    # the newest events, in order, with nothing missing between files
    assert kept == [event.get_extension("requestid") for event in written[-len(kept) :]]


def test_two_writers_on_one_directory_lose_nothing_and_follow_each_others_rotation(tmp_path: Path) -> None:
    # Two sinks on one directory are what two worker processes of one host have.
    first, second = (FileSink(tmp_path, max_bytes=4096, backups=100) for _ in range(2))
    written = events(60)
    for i, event in enumerate(written):
        (first if i % 2 else second).write([event])
    first.close()
    second.close()
    found: list[str] = []
    for path in tmp_path.glob(f"{FILE_NAME}*"):
        assert path.stat().st_size <= 4096  # no writer kept appending to a file rotated away
        found += ids_in(path)
    assert sorted(found) == sorted(event.get_extension("requestid") for event in written)


@pytest.mark.parametrize("url", ["file://relative/dir", "file://otherhost/dir", "ftp://host/dir"])
def test_a_sink_url_that_names_no_sink_is_refused(url: str) -> None:
    with pytest.raises(InvalidSinkUrl, match="GATEWAY_RECORDS_SINK"):
        sink_for(url, GatewaySettings())


def test_a_directory_that_cannot_be_made_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidSinkUrl, match="cannot write in"):
        sink_for(f"file://{tmp_path / 'file' / 'records'}", GatewaySettings())
