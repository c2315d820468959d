"""The version selector grammar shared by the path and the ``X-Model-Version`` header.

``<digits>`` is a version number (as in ``models:/name/3``; MLflow allows an all-digit
alias, but a selector of digits always means a version), ``latest`` (any case, reserved
by MLflow) is the highest READY version, and anything else is an alias.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gateway.errors import InvalidSelector

# MLflow's own rule for alias names: ^[\w\-]*$ with Python's (Unicode) \w, at most 255
# characters. So "чемпион" is an alias MLflow takes, and so must we.
_ALIAS = re.compile(r"[\w\-]{1,255}")


@dataclass(frozen=True, slots=True)
class Selector:
    kind: Literal["version", "alias", "latest"]
    raw: str
    version: int | None = None

    @property
    def alias(self) -> str | None:
        return self.raw if self.kind == "alias" else None


def parse_selector(raw: str) -> Selector:
    text = raw.strip()
    if text.isdigit() and text.isascii():
        number = int(text)
        if number < 1:
            raise InvalidSelector(raw)
        return Selector("version", text, number)
    if text.lower() == "latest":
        return Selector("latest", text)
    if not _ALIAS.fullmatch(text):
        raise InvalidSelector(raw)
    return Selector("alias", text)
