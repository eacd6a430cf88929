"""Configuration: environment defaults, typed values from the environment, and overrides."""

from __future__ import annotations

from typing import Any

import pytest

from app.config import build_config


@pytest.fixture(autouse=True)
def no_app_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test without APP_ENV in the environment."""
    monkeypatch.delenv("APP_ENV", raising=False)


def production(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    """Return the production settings with these variables in the environment."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return build_config({"APP_ENV": "production"})


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("JOB_TIMEOUT", "120", 120),
        ("SMTP_PORT", " 587 ", 587),
        ("REDIS_SOCKET_TIMEOUT", "0.5", 0.5),
        ("REDIS_SOCKET_TIMEOUT", "2", 2.0),
        ("QUEUES", "urgent, default ,, low", ("urgent", "default", "low")),
        ("QUEUES", "only", ("only",)),
        ("REDIS_URL", "redis://cache:6380/2", "redis://cache:6380/2"),
    ],
)
def test_build_config_reads_typed_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: str, raw: str, expected: Any
) -> None:
    value = production(monkeypatch, **{key: raw})[key]

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("EXPOSE_TRACEBACKS", "1", True),
        ("EXPOSE_TRACEBACKS", "true", True),
        ("EXPOSE_TRACEBACKS", "Yes", True),
        ("EXPOSE_TRACEBACKS", " ON ", True),
        ("DASHBOARD_ENABLED", "0", False),
        ("DASHBOARD_ENABLED", "false", False),
        ("DASHBOARD_ENABLED", "NO", False),
        ("DASHBOARD_ENABLED", "off", False),
        ("DASHBOARD_ENABLED", "", False),
    ],
)
def test_build_config_reads_bool_words(
    monkeypatch: pytest.MonkeyPatch, key: str, raw: str, expected: bool
) -> None:
    assert production(monkeypatch, **{key: raw})[key] is expected


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("JOB_TIMEOUT", "ten"),
        ("JOB_TIMEOUT", "1.5"),
        ("REDIS_SOCKET_TIMEOUT", "fast"),
        ("EXPOSE_TRACEBACKS", "maybe"),
        ("DASHBOARD_ENABLED", "2"),
    ],
)
def test_build_config_refuses_an_invalid_value_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, raw: str
) -> None:
    with pytest.raises(ValueError, match=key):
        production(monkeypatch, **{key: raw})


def test_build_config_keeps_defaults_for_variables_not_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOB_TIMEOUT", raising=False)

    settings = production(monkeypatch)

    assert settings["APP_ENV"] == "production"
    assert settings["JOB_TIMEOUT"] == 600
    assert settings["QUEUES"] == ("high", "default", "low")
    assert settings["EXPOSE_TRACEBACKS"] is False


@pytest.mark.parametrize("from_env", [False, True], ids=["override", "environment"])
def test_testing_config_ignores_the_environment(monkeypatch: pytest.MonkeyPatch, from_env: bool) -> None:
    monkeypatch.setenv("JOB_TIMEOUT", "not a number")
    monkeypatch.setenv("QUEUES", "elsewhere")
    monkeypatch.setenv("ECHO_DELAY_SECONDS", "10")
    if from_env:
        monkeypatch.setenv("APP_ENV", "testing")

    settings = build_config(None if from_env else {"APP_ENV": "testing"})

    assert settings["APP_ENV"] == "testing"
    assert settings["TESTING"] is True
    assert settings["JOB_TIMEOUT"] == 600
    assert settings["QUEUES"] == ("high", "default", "low")
    assert settings["ECHO_DELAY_SECONDS"] == 0.0


def test_app_env_defaults_to_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    monkeypatch.delenv("EXPOSE_TRACEBACKS", raising=False)

    settings = build_config()

    assert settings["APP_ENV"] == "development"
    assert settings["LOG_LEVEL"] == "DEBUG"
    assert settings["EXPOSE_TRACEBACKS"] is True


def test_app_env_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("EXPOSE_TRACEBACKS", raising=False)

    settings = build_config()

    assert settings["APP_ENV"] == "production"
    assert settings["EXPOSE_TRACEBACKS"] is False


@pytest.mark.parametrize("from_env", [False, True], ids=["override", "environment"])
def test_unknown_app_env_is_refused(monkeypatch: pytest.MonkeyPatch, from_env: bool) -> None:
    if from_env:
        monkeypatch.setenv("APP_ENV", "staging")

    with pytest.raises(ValueError, match="'staging'"):
        build_config(None if from_env else {"APP_ENV": "staging"})


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_TIMEOUT", "120")
    monkeypatch.setenv("APP_ENV", "production")

    settings = build_config({"APP_ENV": "development", "JOB_TIMEOUT": 30, "EXTRA_KEY": "kept"})

    assert settings["APP_ENV"] == "development"
    assert settings["JOB_TIMEOUT"] == 30
    assert settings["EXTRA_KEY"] == "kept"


def test_overrides_win_over_testing_defaults() -> None:
    settings = build_config({"APP_ENV": "testing", "MAX_CONTENT_LENGTH": 64})

    assert settings["MAX_CONTENT_LENGTH"] == 64
