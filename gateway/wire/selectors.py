"""The version selector grammar shared by the path and the ``X-Model-Version`` header.

``<digits>`` is a version number (as in ``models:/name/3``; MLflow allows an all-digit
alias, but a selector of digits always means a version), ``latest`` (any case, reserved
by MLflow) is the highest READY version, and anything else is an alias. Surrounding
whitespace is dropped (no alias can hold any). What can name nothing is refused here, with
the reason: an empty selector, ``0`` (versions start at 1), and what no MLflow alias can
be (other characters, more than 255 of them). A selector like ``-1`` is an alias to MLflow,
so it is one here too; only when the model has no such alias does it read as the negative
version number it looks like (:attr:`Selector.negative_number`, answered 400 by the
predictor, not 404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gateway.errors import InvalidSelector

# MLflow's own rule for alias names: ^[\w\-]*$ with Python's (Unicode) \w, at most 255
# characters. So "чемпион" is an alias MLflow takes, and so must we.
_ALIAS = re.compile(r"[\w\-]+")
_MAX_ALIAS = 255
_NEGATIVE = re.compile(r"-[0-9]+")


@dataclass(frozen=True, slots=True)
class Selector:
    kind: Literal["version", "alias", "latest"]
    raw: str
    version: int | None = None

    @property
    def alias(self) -> str | None:
        return self.raw if self.kind == "alias" else None

    @property
    def negative_number(self) -> bool:
        """An alias that reads as a negative version number (``-1``): MLflow takes it as an
        alias name, but a model without that alias was most likely asked for a version."""
        return self.kind == "alias" and _NEGATIVE.fullmatch(self.raw) is not None


def parse_selector(raw: str) -> Selector:
    text = raw.strip()
    if not text:
        raise InvalidSelector(raw, "it is empty")
    if text.isdigit() and text.isascii():
        number = int(text)
        if number < 1:
            raise InvalidSelector(raw, "version numbers start at 1")
        return Selector("version", text, number)
    if text.lower() == "latest":
        return Selector("latest", text)
    if not _ALIAS.fullmatch(text):
        raise InvalidSelector(raw, "an alias holds only letters, digits, '_' and '-'")
    if len(text) > _MAX_ALIAS:
        raise InvalidSelector(raw, f"an alias is at most {_MAX_ALIAS} characters long")
    return Selector("alias", text)


def split_model_reference(value: str) -> tuple[str, str | None]:
    """A model named as ``mlflow models serve``'s ``models:/`` URIs name one, less the scheme:
    ``name`` (its default route), ``name@alias`` or ``name/version``, as (name, selector or None),
    split at the last ``@`` or ``/`` (MLflow allows neither in an alias). GATEWAY_DEFAULT_MODEL
    and the OpenAI routes' ``model`` read so."""
    if "@" in value:
        name, alias = value.rsplit("@", 1)
        return name, alias
    if "/" in value:
        name, version = value.rsplit("/", 1)
        return name, version
    return value, None
