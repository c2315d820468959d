"""Tests for free_port() (tests/support/servers.py): the port a test gives a process it starts
stays free until that process binds it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.servers import _ephemeral_floor, free_port

TAKEN = 300


def test_a_port_is_outside_the_range_outgoing_connections_take_their_ports_from() -> None:
    """Between free_port() and the bind of the process it is for, any outgoing connection
    (the tests poll their servers with a new one every 50 ms) could have been given an
    ephemeral port as its own, and the process exited 'address already in use'."""
    floor = _ephemeral_floor()
    assert all(1024 <= port < floor for port in (free_port() for _ in range(50)))


def test_two_processes_of_a_run_are_never_given_the_same_port() -> None:
    """xdist workers ask at once: each port is handed out once a run, whoever asks."""
    code = f"from tests.support.servers import free_port; print(*(free_port() for _ in range({TAKEN})))"
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ)
    mine = [free_port() for _ in range(TAKEN)]
    theirs, _ = other.communicate(timeout=120)
    assert other.returncode == 0
    given = [*mine, *map(int, theirs.split())]
    assert len(given) == 2 * TAKEN and len(set(given)) == len(given)
