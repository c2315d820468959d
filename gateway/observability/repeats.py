"""A failure that comes back on every retry is told once: the first time (a WARNING and an
event), then quietly until it clears or changes. Without this, a warm alias whose target
cannot load wrote a ``failed`` event and a WARNING every 30 s, about 2,900 a day, and pushed
every other event off the page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

K = TypeVar("K")


@dataclass(slots=True)
class Failing:
    """A failure told once: what it said, since when, and how often it came back since."""

    text: str
    since: datetime
    repeats: int = 0

    def told(self) -> str:
        """How long it lasted, for the event that says it is over."""
        tries = self.repeats + 1
        return f"it had failed {tries} time{'s' if tries != 1 else ''} since {self.since:%Y-%m-%d %H:%M:%S}Z"


class Repeats(Generic[K]):
    """The failure last told for each key (an alias, a version)."""

    def __init__(self) -> None:
        self._told: dict[K, Failing] = {}

    def news(self, key: K, text: str) -> bool:
        """Whether this failure is worth telling: not the one told last for ``key`` (a
        repeat is counted)."""
        told = self._told.get(key)
        if told is not None and told.text == text:
            told.repeats += 1
            return False
        self._told[key] = Failing(text, datetime.now(UTC))
        return True

    def get(self, key: K) -> Failing | None:
        return self._told.get(key)

    def clear(self, key: K) -> Failing | None:
        """The key works again (or no longer matters): the failure it was in, if any."""
        return self._told.pop(key, None)

    def keys(self) -> list[K]:
        return list(self._told)
