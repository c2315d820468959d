"""The gateway's own random generator for ids: a forked worker does not repeat its parent's."""

from __future__ import annotations

import os

import pytest

from gateway.observability.ids import random_bits


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    """``serve --workers N`` forks; without a reseed in the child, parent and child would draw
    the very same ids from then on."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next draw, then leave at once
        try:
            os.write(write, random_bits(128).to_bytes(16))
        finally:
            os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random_bits(128)
