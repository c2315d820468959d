"""The version selector grammar: what a path segment or X-Model-Version may say."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidSelector
from gateway.routing.selectors import parse_selector


@pytest.mark.parametrize(("raw", "version"), [("1", 1), ("42", 42), (" 7 ", 7), ("0012", 12)])
def test_digits_are_a_version_number(raw: str, version: int) -> None:
    selector = parse_selector(raw)
    assert (selector.kind, selector.version, selector.alias) == ("version", version, None)


@pytest.mark.parametrize("raw", ["latest", "LATEST", "Latest"])
def test_latest_in_any_case(raw: str) -> None:
    assert parse_selector(raw).kind == "latest"


# MLflow takes any alias matching ^[\w\-]*$ with Python's Unicode \w (mlflow.utils.validation).
@pytest.mark.parametrize("raw", ["champion", "blue-green_2", "-3", "v2", "чемпион", "候选", "café", "x" * 255])
def test_aliases_are_what_mlflow_accepts(raw: str) -> None:
    selector = parse_selector(raw)
    assert (selector.kind, selector.alias) == ("alias", raw)


@pytest.mark.parametrize("raw", ["", "0", "a b", "a.b", "a/b", "x" * 256, "a\nb", "🙂", "a;b"])
def test_anything_else_is_refused(raw: str) -> None:
    with pytest.raises(InvalidSelector):
        parse_selector(raw)
