"""A model's traffic split, as its MLflow version tags set it.

``gateway.traffic.weight`` on a version: the percent of the model's default-route requests
(those that name no version) that version answers instead of the default alias's version.
``gateway.traffic.shadow``: the percent of them also sent to it after the primary answered.
A split whose tags are not numbers in [0, 100], or whose weights add up to more than 100, is
refused as a whole (:class:`InvalidSplit`): the sync keeps the previous one and says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

WEIGHT_TAG = "gateway.traffic.weight"
SHADOW_TAG = "gateway.traffic.shadow"


class InvalidSplit(ValueError):
    def __init__(self, name: str, problems: list[str]) -> None:
        self.name = name
        self.problems = problems
        super().__init__(f"traffic split of {name} refused, the previous one stays: {'; '.join(problems)}")


@dataclass(frozen=True, slots=True)
class Arm:
    """What one version takes of a model's default-route traffic, as the state database has it."""

    version: int
    weight: float
    shadow: float
    weight_tag: str | None = None
    """The weight tag's text when the split was taken: a rolled-back arm stays off until it changes."""
    rolled_back: str | None = None
    """Why the guard took this arm's weight away (None: it was not)."""

    @property
    def effective_weight(self) -> float:
        return 0.0 if self.rolled_back else self.weight


@dataclass(frozen=True, slots=True)
class ModelTraffic:
    name: str
    arms: dict[int, Arm]
    ranges: tuple[tuple[float, Arm], ...] = field(init=False, repr=False, compare=False)
    """Each weighted arm with the top of its range of [0, 100), laid out from 0 upward by
    version number (configured weights: an arm that is not warm or was rolled back keeps its
    range, so the other keys do not move). Worked out once per snapshot, not per request."""
    shadows: tuple[Arm, ...] = field(init=False, repr=False, compare=False)
    """Arms with a shadow percent, by version number."""

    def __post_init__(self) -> None:
        ordered = sorted(self.arms.values(), key=lambda a: a.version)
        ranges, high = [], 0.0
        for arm in ordered:
            if arm.weight > 0:
                high += arm.weight
                ranges.append((high, arm))
        object.__setattr__(self, "ranges", tuple(ranges))
        object.__setattr__(self, "shadows", tuple(a for a in ordered if a.shadow > 0))

    @property
    def canaries(self) -> list[Arm]:
        """Arms with weight, by version number (the order their key ranges are laid out in)."""
        return [a for _, a in self.ranges if a.effective_weight > 0]

    def landing(self, point: float) -> Arm | None:
        """The arm whose range holds ``point`` in [0, 100), if any."""
        for high, arm in self.ranges:
            if point < high:
                return arm
        return None


def _percent(raw: str, tag: str, version: int, problems: list[str]) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        problems.append(f"version {version}: {tag}={raw!r} is not a number")
        return 0.0
    if not math.isfinite(value) or not 0 <= value <= 100:
        problems.append(f"version {version}: {tag}={raw!r} is not a percent between 0 and 100")
        return 0.0
    return value


def parse_split(name: str, tags: Mapping[int, Mapping[str, str]]) -> dict[int, tuple[float, float, str | None]]:
    """``{version: (weight, shadow, weight tag)}`` for the versions with a non-zero share, from
    the tags of the model's live versions; :class:`InvalidSplit` if any tag is bad."""
    problems: list[str] = []
    split: dict[int, tuple[float, float, str | None]] = {}
    for version, version_tags in sorted(tags.items()):
        raw_weight, raw_shadow = version_tags.get(WEIGHT_TAG), version_tags.get(SHADOW_TAG)
        weight = _percent(raw_weight, WEIGHT_TAG, version, problems) if raw_weight is not None else 0.0
        shadow = _percent(raw_shadow, SHADOW_TAG, version, problems) if raw_shadow is not None else 0.0
        if weight or shadow:
            split[version] = (weight, shadow, raw_weight)
    total = sum(weight for weight, _, _ in split.values())
    if total > 100:
        problems.append(f"the weights add up to {total:g}%, more than 100%")
    if problems:
        raise InvalidSplit(name, problems)
    return split


def describe(split: Mapping[int, tuple[float, float, str | None]]) -> str:
    """One line for an event: ``v3 weight 10% shadow 0%, ...`` (or ``no split``)."""
    if not split:
        return "no split: the default version takes every default-route request"
    return ", ".join(f"v{v} weight {w:g}% shadow {s:g}%" for v, (w, s, _) in sorted(split.items()))
