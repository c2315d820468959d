"""A clock the test moves by hand, for code that takes one (a monotonic-seconds callable)."""

from __future__ import annotations


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
