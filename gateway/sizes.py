"""Sizes as people read them, in logs, pages and the CLI: ``12.8 KiB``, ``283.4 MiB``."""

from __future__ import annotations


def readable(size: float) -> str:
    """Bytes in the unit that shows them: B under a KiB, KiB under a MiB, MiB under a GiB, else GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"
