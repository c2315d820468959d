"""The version selector grammar: what a path segment or X-Model-Version may say."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidSelector
from gateway.wire.selectors import parse_selector


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


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0", "start at 1"),
        ("000", "start at 1"),
        ("a b", "only letters, digits, '_' and '-'"),
        ("+1", "only letters, digits, '_' and '-'"),
        ("1.5", "only letters, digits, '_' and '-'"),
        ("x" * 256, "at most 255"),
    ],
)
def test_a_refusal_says_what_is_wrong(raw: str, problem: str) -> None:
    with pytest.raises(InvalidSelector, match=problem) as refused:
        parse_selector(raw)
    assert f"'{raw}'" in str(refused.value)


# MLflow sets an alias "-1" (tests/gateway/test_predict_endpoint.py serves one), so the grammar
# cannot refuse it; the predictor answers 400 only when the model has no such alias.
@pytest.mark.parametrize(("raw", "negative"), [("-1", True), ("-0", True), ("-12", True), ("-", False), ("-a1", False)])
def test_an_alias_that_reads_as_a_negative_number_is_marked(raw: str, negative: bool) -> None:
    selector = parse_selector(raw)
    assert (selector.kind, selector.negative_number) == ("alias", negative)
    assert not parse_selector("champion").negative_number and not parse_selector("3").negative_number
