"""Settings: a bad value is one line naming its variable; a likely mistake is a warning."""

from __future__ import annotations

import logging

import pytest

from gateway.settings import SECTIONS, GatewaySettings, SettingsError, doubts, load_settings


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("GATEWAY_DATABASE_URL", "notaurl", "not a SQLAlchemy URL"),
        ("GATEWAY_DATABASE_URL", "nosuchdb://host/db", "no database dialect 'nosuchdb'"),
        ("GATEWAY_LOG_LEVEL", "loud", "'debug'"),
        ("GATEWAY_MAX_LOADED_MODELS", "zero", "integer"),
        ("GATEWAY_ROLE", "leader", "'sync'"),
        ("GATEWAY_PREDICTION_CACHE", "disk", "redis://"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert message.startswith(f"{variable}: ") and "\n" not in message, message
    assert says in message


def test_each_bad_variable_gets_its_own_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", "loud")
    monkeypatch.setenv("GATEWAY_MAX_QUEUE", "-1")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    lines = str(raised.value).splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["GATEWAY_LOG_LEVEL", "GATEWAY_MAX_QUEUE"]


def test_a_database_url_with_a_password_is_never_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "nosuchdb://user:hunter2@host/db")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("value", ["sqlite:////var/lib/gw/state.db", "postgresql+psycopg://u:p@db.internal/gw"])
def test_database_urls_sqlalchemy_can_open_are_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", value)
    assert load_settings().database_url == value


@pytest.mark.parametrize(("value", "number"), [("DEBUG", logging.DEBUG), ("warning", logging.WARNING), ("trace", 5)])
def test_log_levels_are_read_in_any_case(monkeypatch: pytest.MonkeyPatch, value: str, number: int) -> None:
    monkeypatch.setenv("GATEWAY_LOG_LEVEL", value)
    settings = load_settings()
    assert settings.log_level == value.lower() and settings.log_level_number == number


def test_a_misspelled_variable_is_named_with_what_was_meant() -> None:
    found = doubts(GatewaySettings(), {"GATEWAY_MAX_LODED_MODELS": "3", "GATEWAY_MAX_LOADED_MODELS": "3", "PATH": "/"})
    assert found == [
        "GATEWAY_MAX_LODED_MODELS is not a setting and is ignored; did you mean GATEWAY_MAX_LOADED_MODELS?"
    ]


def test_a_warm_alias_no_request_can_name_is_doubted() -> None:
    settings = GatewaySettings(warm_aliases=["champion", "3", "latest", "чемпион"])
    found = doubts(settings, {})
    assert len(found) == 2 and all(line.startswith("GATEWAY_WARM_ALIASES: ") for line in found)
    assert "'3'" in found[0] and "'latest'" in found[1]
    assert doubts(GatewaySettings(warm_aliases=["champion", "challenger"]), {}) == []


def test_no_two_sections_name_a_validator_alike() -> None:
    # The composed class keeps one method per name: a section's validator named like another's
    # is silently dropped (GATEWAY_ENV_PASS once stopped being split at commas so).
    seen: dict[str, str] = {}
    for section in SECTIONS:
        for name in section.__pydantic_decorators__.field_validators:
            assert name not in seen, f"{section.__name__}.{name} hides {seen[name]}.{name}"
            seen[name] = section.__name__
    assert set(seen) == set(GatewaySettings.__pydantic_decorators__.field_validators)


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("GATEWAY_ALLOWED_FLAVORS", "allowed_flavors"),
        ("GATEWAY_ALLOWED_ARTIFACT_URIS", "allowed_artifact_uris"),
        ("GATEWAY_RECORDS_REDACT", "records_redact"),
        ("GATEWAY_ENV_PASS", "env_pass"),
        ("GATEWAY_WARM_ALIASES", "warm_aliases"),
    ],
)
def test_comma_separated_settings_are_split_in_every_section(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    monkeypatch.setenv(variable, " s3://a/ , /b ,")
    assert getattr(load_settings(), field) == ["s3://a/", "/b"]
