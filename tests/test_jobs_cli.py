"""``registry-gateway jobs`` against a running ``registry-gateway serve``: submit, then wait with
a progress bar on a terminal (a pseudo-terminal here) and plain lines otherwise; list, status,
and the exit status of wait (0 only for a job that succeeded)."""

from __future__ import annotations

import os
import pty
import shlex
import signal
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.demo import IRIS
from tests.conftest import IRIS_COLUMNS, Registry
from tests.support.servers import BIN, gateway_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "registry-gateway"), "jobs", *args], capture_output=True, text=True, timeout=120)


def on_a_terminal(*args: str) -> tuple[int, str]:
    """The command's exit status and what it wrote, run with a pseudo-terminal as its stdout."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([str(BIN / "registry-gateway"), "jobs", *args], stdout=follower, stderr=follower)
    os.close(follower)
    written = b""
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not data:
            break
        written += data
    os.close(leader)
    return process.wait(timeout=120), written.decode("utf-8", "replace")


def test_submit_and_wait_with_a_progress_bar_on_a_terminal_and_lines_otherwise(
    iris_registry: Registry, tmp_path: Path
) -> None:
    ids = np.arange(2000)
    columns = {"row_id": pa.array(ids)} | {name: pa.array(1.0 + (ids % 50) / 10.0) for name in IRIS_COLUMNS}
    pq.write_table(pa.table(columns), tmp_path / "in.parquet", row_group_size=100)
    env = {"GATEWAY_JOBS_POLL_SECONDS": "0.1", "GATEWAY_JOBS_CHUNK_ROWS": "200"}
    process, base = gateway_server(tracking_uri=iris_registry.tracking_uri, workdir=tmp_path / "gateway", env=env)
    process.start()
    try:
        submitted = cli(
            "submit", IRIS, "--url", base, "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out")
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        status, written = on_a_terminal("wait", job_id, "--url", base, "--interval", "0.1")
        assert status == 0, written
        assert "rows/s" in written and "2000/2000" in written and "succeeded" in written  # rich's bar, then the line
        waited = cli("wait", job_id, "--url", base)  # not a terminal: lines
        assert waited.returncode == 0 and waited.stdout.splitlines()[-1].split("\t")[1] == "succeeded"
        assert "\x1b[" not in waited.stdout  # no terminal codes in a log
        assert job_id in cli("list", "--url", base, "--model", IRIS).stdout
        status_json = cli("status", job_id, "--url", base, "--json")
        assert '"rows_done": 2000' in status_json.stdout
        bad = cli("submit", IRIS, "--url", base, "--input", "/nowhere/*.parquet", "--output", str(tmp_path / "o2"))
        assert bad.returncode != 0 and "/nowhere" in bad.stderr
        waited_too = cli(
            "submit",
            IRIS,
            "--url",
            base,
            "--input",
            str(tmp_path / "in.parquet"),
            "--output",
            str(tmp_path / "o3"),
            "--wait",
        )
        assert waited_too.returncode == 0
        (tmp_path / "bad.csv").write_text("row_id,colour\n1,red\n")
        partial = cli(
            "submit",
            IRIS,
            "--url",
            base,
            "--input",
            str(tmp_path / "bad.csv"),
            "--output",
            str(tmp_path / "o4"),
            "--wait",
        )
        assert partial.returncode == 1 and "failed" in partial.stdout  # every chunk failed: the job failed
    finally:
        process.stop(signal.SIGTERM)


def demo_jobs_commands() -> list[str]:
    guide = (ROOT / "docs" / "user-guide.md").read_text()
    start = guide.index("<!-- demo jobs commands: run by tests/test_jobs_cli.py -->")
    block = guide[start : guide.index("<!-- end of the demo jobs commands -->", start)]
    return [line for line in block.splitlines() if line.startswith(".venv/bin/")]


def test_the_user_guides_jobs_commands_for_the_demo_work_as_written(iris_registry: Registry, tmp_path: Path) -> None:
    """docs/user-guide.md's file job against `make demo`, line by line in a shell from the
    repository's root, with this test's folder for /tmp, its venv for .venv/bin and its
    gateway's --url for the demo's."""
    process, base = gateway_server(tracking_uri=iris_registry.tracking_uri, workdir=tmp_path / "gateway")
    process.start()
    try:
        printed = []
        for line in demo_jobs_commands():
            command = line.replace("/tmp/", f"{tmp_path}/").replace(".venv/bin/", f"{BIN}/")
            if "registry-gateway jobs" in command:
                command += f" --url {shlex.quote(base)}"
            done = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            printed = done.stdout.splitlines()
        assert len(demo_jobs_commands()) == 2
        job_id, *_, last = printed
        assert last.split("\t") == [job_id, "succeeded", f"{IRIS} v1", "rows 150/150", "chunks 1/1"]
        scored = pq.read_table(tmp_path / "iris-scored" / "part-000000.parquet")
        assert scored.column_names == ["prediction"] and scored.num_rows == 150
    finally:
        process.stop(signal.SIGTERM)
