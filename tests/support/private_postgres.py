"""A PostgreSQL cluster of a test's own, in a temporary folder, on a free port: for tests that
stop and restart the database under a running gateway. The shared server
(``GATEWAY_TEST_POSTGRES_URL``, 127.0.0.1:5432) serves every other test at once and is never
restarted by one.

The server binaries are found as ``GATEWAY_TEST_POSTGRES_BIN`` names them, else the newest
``/usr/lib/postgresql/<n>/bin`` (Debian's and Ubuntu's packages), else ``pg_ctl`` on ``PATH``;
where there are none the test skips with the reason (fails under CI: tests.support.ci). As root
(containers), the cluster runs as the ``postgres`` user, since PostgreSQL refuses root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.ci import missing
from tests.support.servers import free_port

BIN_VARIABLE = "GATEWAY_TEST_POSTGRES_BIN"


def _binaries() -> Path | None:
    given = os.environ.get(BIN_VARIABLE)
    if given:
        return Path(given)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


@dataclass
class PrivateCluster:
    bin: Path
    data: Path
    port: int
    as_user: list[str]  # ["runuser", "-u", "postgres", "--"] as root, else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        command = [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
        if done.returncode != 0:
            log = (self.data.parent / "postgres.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}\n{log}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-l", str(self.data.parent / "postgres.log"), "-o", options, "start")

    def stop(self) -> None:
        """``-m fast``: every session is ended at once (its transaction rolled back), as a
        database failover or a restart for an upgrade does it."""
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_postgres() -> Iterator[PrivateCluster]:
    """A fresh cluster, started; stopped and deleted on exit."""
    bin = _binaries()
    if bin is None or not (bin / "initdb").exists():
        missing(f"no PostgreSQL server binaries (initdb, pg_ctl) found; set {BIN_VARIABLE} to their folder")
    as_user: list[str] = []
    owner: int | None = None
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres").pw_uid
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            missing("running as root with no 'postgres' user (or no runuser) to run a private PostgreSQL as")
        as_user = [str(runuser), "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="gw-private-pg-"))
    try:
        if owner is not None:
            os.chown(root, owner, -1)
        cluster = PrivateCluster(bin, root / "data", free_port(), as_user)
        initdb = [*as_user, str(bin / "initdb"), "-D", str(cluster.data), "-A", "trust", "-U", "postgres"]
        subprocess.run([*initdb, "--no-sync", "-E", "UTF8"], capture_output=True, check=True, timeout=120)
        cluster.start()
        try:
            yield cluster
        finally:
            try:
                cluster._pg_ctl("-m", "immediate", "stop")
            except RuntimeError:
                pass  # stopped already (a test that ended mid-outage)
    finally:
        shutil.rmtree(root, ignore_errors=True)
