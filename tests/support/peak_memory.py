"""How much a process's resident memory rose at its peak while something ran: the kernel's own
high-water mark (``VmHWM``, reset through ``/proc/<pid>/clear_refs``), so an allocation made and
freed before the end is counted too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Peak:
    before: int = 0  # bytes resident when it began
    peak: int = 0  # the most resident at once while it ran

    @property
    def growth(self) -> int:
        return max(self.peak - self.before, 0)


def _status(pid: int | str, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        found = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    assert found is not None, field
    return int(found.group(1)) * 1024


@contextmanager
def peak_growth(pid: int | str = "self") -> Iterator[Peak]:
    with open(f"/proc/{pid}/clear_refs", "w") as clear:
        clear.write("5")  # VmHWM := VmRSS
    peak = Peak(before=_status(pid, "VmRSS"))
    yield peak
    peak.peak = _status(pid, "VmHWM")
