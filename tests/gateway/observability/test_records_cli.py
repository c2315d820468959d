"""``registry-gateway records``: a file sink's records read back, as a table or as the events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cloudevents.core.formats.json import JSONFormat

from gateway.cli import main
from gateway.metrics import GatewayMetrics
from gateway.observability.records.recorder import recorder_for
from gateway.observability.records.sinks import FILE_NAME
from gateway.settings import GatewaySettings
from tests.gateway.observability.records_support import a_record

CSV = b"age,ssn\n41,x\n7,y\n8,z\n"


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """Records of two models, rotated over three files, some redacted; the newest is iris req-11."""
    settings = GatewaySettings(
        records_sink=f"file://{tmp_path}",
        records_file_max_mb=3000 / 2**20,
        records_file_backups=5,
        records_redact=["ssn"],
        records_batch_size=1,
    )
    recorder = recorder_for(settings, GatewayMetrics())
    assert recorder is not None
    for i in range(12):
        model = "iris" if i % 3 else "wine"
        media_type, body = ("text/csv", CSV) if i % 2 else ("application/octet-stream", b"\x00\x01")
        recorder.offer(a_record(model=model, request_id=f"req-{i}", media_type=media_type, request=body))
    recorder.start()
    recorder.close()
    assert len(list(tmp_path.glob(f"{FILE_NAME}*"))) >= 3
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["records", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_the_table_shows_the_last_records_newest_last(records: Path) -> None:
    code, out, _ = run(str(records), "--limit", "4")
    assert code == 0, out
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["TIME", "(UTC)", "MODEL"]
    assert [row.split()[7] for row in rows] == ["req-8", "req-9", "req-10", "req-11"]
    assert "3 rows, redacted" in rows[-1]  # CSV with the ssn column redacted
    assert "omitted" in rows[-2]  # a binary body, with names to redact set
    assert rows[-1].split()[2:6] == ["iris", "3", "default", "200"]


def test_json_prints_the_events_themselves(records: Path) -> None:
    code, out, _ = run(str(records), "--json", "--limit", "3")
    assert code == 0
    events = [JSONFormat().read(None, line) for line in out.splitlines()]
    assert [event.get_extension("requestid") for event in events] == ["req-9", "req-10", "req-11"]


def test_model_filters_before_the_limit(records: Path) -> None:
    code, out, _ = run(str(records), "--json", "--model", "wine")
    assert code == 0
    assert [json.loads(line)["requestid"] for line in out.splitlines()] == ["req-0", "req-3", "req-6", "req-9"]
    code, out, _ = run(str(records), "--model", "nope")
    assert code == 0 and out.startswith("no records of nope")


def test_a_torn_last_line_is_skipped_quietly(records: Path) -> None:
    with open(records / FILE_NAME, "ab") as file:
        file.write(b'{"specversion": "1.0", "id": "half-writ')  # a writer mid-write
    code, out, err = run(str(records), "--json", "--limit", "1")
    assert code == 0
    assert json.loads(out)["requestid"] == "req-11"
    assert err == ""


def test_the_sinks_directory_is_the_default(records: Path) -> None:
    code, out, _ = run("--limit", "1", env={"GATEWAY_RECORDS_SINK": f"file://{records}"})
    assert code == 0 and "req-11" in out


@pytest.mark.parametrize("form", ["file://{dir}", "file://localhost{dir}"])
def test_the_sinks_url_names_its_directory(records: Path, form: str) -> None:
    """The argument takes what GATEWAY_RECORDS_SINK takes, as well as a bare directory."""
    code, out, err = run(form.format(dir=records), "--limit", "1")
    assert code == 0, err
    assert "req-11" in out


def test_a_url_that_is_no_directory_is_refused_plainly() -> None:
    code, _, err = run("file://elsewhere/records")
    assert code != 0
    assert err.startswith("Error: ") and "file:///absolute/directory" in err, err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"GATEWAY_RECORDS_SINK": ""}, "name a directory"),
        ((), {"GATEWAY_RECORDS_SINK": "http://127.0.0.1:1/records"}, "name a directory"),
        (("{tmp}/missing",), None, "no records directory at"),
        (("{tmp}",), None, "no records in"),
    ],
)
def test_nothing_to_read_is_one_line_and_a_failure(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str] | None, message: str
) -> None:
    code, out, err = run(*(arg.format(tmp=tmp_path) for arg in args), env=env)
    assert code != 0
    assert err.startswith(f"Error: {message}") and err.count("\n") == 1, err
