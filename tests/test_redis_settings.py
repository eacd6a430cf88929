"""Redis settings beyond one box, read without a server: Sentinels, TLS, passwords, rq's config."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis
from redis.sentinel import SentinelConnectionPool

from app.config import build_config
from app.queue import (
    SentinelConnection,
    SentinelSSLConnection,
    WorkerRedis,
    connect,
    dashboard_settings,
    parse_sentinels,
    sentinel_settings,
    worker_connection,
)

SENTINELS = {"REDIS_SENTINELS": "10.0.0.1:26379, sentinel-2:26380", "REDIS_SENTINEL_MASTER": "jobs"}


def config(**settings: Any) -> dict[str, Any]:
    """Return the testing config with these settings."""
    return build_config({"APP_ENV": "testing", **settings})


@pytest.mark.parametrize(
    ("text", "addresses"),
    [
        ("a:1", [("a", 1)]),
        ("a:1,b:2", [("a", 1), ("b", 2)]),
        (" a:1 , b ", [("a", 1), ("b", 26379)]),
        ("[::1]:26379", [("::1", 26379)]),
    ],
)
def test_parse_sentinels_reads_host_port_lists(text: str, addresses: list[tuple[str, int]]) -> None:
    assert parse_sentinels(text) == addresses


@pytest.mark.parametrize("text", ["a:port", ":26379", "a:0", "a:70000", " , "])
def test_parse_sentinels_refuses_what_is_not_host_port(text: str) -> None:
    with pytest.raises(ValueError, match="REDIS_SENTINELS"):
        parse_sentinels(text)


def test_sentinel_settings_take_the_login_and_database_from_redis_url() -> None:
    settings = sentinel_settings(
        config(REDIS_URL="redis://worker:p%40ss@ignored:1/3", REDIS_SENTINEL_PASSWORD="s-pass", **SENTINELS)
    )

    assert settings.addresses == [("10.0.0.1", 26379), ("sentinel-2", 26380)]
    assert settings.master == "jobs"
    assert settings.master_options == {
        "username": "worker",
        "password": "p@ss",
        "db": 3,
        "connection_class": SentinelConnection,
    }
    assert settings.sentinel_options == {"password": "s-pass"}


def test_sentinel_settings_with_rediss_use_tls_to_master_and_sentinels() -> None:
    settings = sentinel_settings(config(REDIS_URL="rediss://:pw@ignored/0?ssl_ca_certs=/ca.pem", **SENTINELS))

    assert settings.master_options["connection_class"] is SentinelSSLConnection
    assert settings.master_options["ssl_ca_certs"] == "/ca.pem"
    assert settings.sentinel_options == {"ssl": True, "ssl_ca_certs": "/ca.pem"}


def test_connect_without_sentinels_uses_redis_url() -> None:
    client = connect(config(REDIS_URL="rediss://:pw@redis.example:6380/2"), socket_timeout=3)

    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
        "redis.example",
        6380,
        2,
        "pw",
    )
    assert kwargs["socket_timeout"] == 3


def test_connect_with_sentinels_asks_them_for_the_master() -> None:
    client = connect(config(REDIS_URL="redis://:pw@ignored/1", **SENTINELS), socket_timeout=3)

    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "jobs"
    assert pool.connection_class is SentinelConnection
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_kwargs["db"] == 1
    sentinels = pool.sentinel_manager.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
        for s in sentinels
    ] == [
        ("10.0.0.1", 26379),
        ("sentinel-2", 26380),
    ]
    # The socket timeouts apply to the Sentinels too: an unreachable one must not hang a request.
    assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 3 for s in sentinels)


@pytest.mark.parametrize("sentinels", [{}, SENTINELS], ids=["redis-url", "sentinels"])
def test_worker_connection_retries_through_an_outage(sentinels: dict[str, str]) -> None:
    client = worker_connection(config(REDIS_URL="redis://localhost/0", **sentinels))

    retry = client.connection_pool.connection_kwargs["retry"]
    assert retry.get_retries() == 20
    if not sentinels:
        assert isinstance(client, WorkerRedis)


def test_dashboard_settings_without_sentinels_are_redis_url() -> None:
    assert dashboard_settings(config(REDIS_URL="redis://:pw@h:1/0")) == {
        "RQ_DASHBOARD_REDIS_URL": "redis://:pw@h:1/0"
    }


def test_dashboard_settings_with_sentinels_keep_passwords_out_of_the_url() -> None:
    settings = dashboard_settings(
        config(REDIS_URL="redis://:p%40ss%2Fw@ignored/2", REDIS_SENTINEL_PASSWORD="s-pass", **SENTINELS)
    )

    assert settings == {
        "RQ_DASHBOARD_REDIS_URL": "redis+sentinel://10.0.0.1:26379,sentinel-2:26380/jobs/2",
        "RQ_DASHBOARD_REDIS_PASSWORD": "p@ss/w",
        "RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD": "s-pass",
    }


def test_the_app_hands_rq_dashboard_the_sentinel_settings() -> None:
    from app import create_app

    app = create_app({"APP_ENV": "testing", "REDIS_URL": "redis://:pw@ignored/0", **SENTINELS})

    assert app.config["RQ_DASHBOARD_REDIS_URL"] == (
        "redis+sentinel://10.0.0.1:26379,sentinel-2:26380/jobs/0",
    )
    assert app.config["RQ_DASHBOARD_REDIS_PASSWORD"] == "pw"
    assert isinstance(app.extensions["rq"].connection.connection_pool, SentinelConnectionPool)


@pytest.fixture
def fresh_rqconfig() -> Iterator[None]:
    """Read app.rqconfig again after the test, from the environment as it was."""
    yield
    import app.rqconfig

    importlib.reload(app.rqconfig)


@pytest.mark.usefixtures("fresh_rqconfig")
@pytest.mark.parametrize("sentinels", [{}, SENTINELS], ids=["redis-url", "sentinels"])
def test_rqconfig_gives_rq_a_url_or_its_sentinel_settings(
    monkeypatch: pytest.MonkeyPatch, sentinels: dict[str, str]
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/4")
    monkeypatch.setenv("REDIS_SENTINELS", sentinels.get("REDIS_SENTINELS", ""))
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", sentinels.get("REDIS_SENTINEL_MASTER", "mymaster"))
    import app.rqconfig as rqconfig

    rqconfig = importlib.reload(rqconfig)

    if not sentinels:
        assert rqconfig.REDIS_URL == "redis://:pw@redis:6379/4"
        assert rqconfig.RQ_DASHBOARD_REDIS_URL == rqconfig.REDIS_URL
        return
    assert rqconfig.REDIS_URL is None
    assert rqconfig.SENTINEL["INSTANCES"] == [("10.0.0.1", 26379), ("sentinel-2", 26380)]
    assert rqconfig.SENTINEL["MASTER_NAME"] == "jobs"
    kwargs = rqconfig.SENTINEL["CONNECTION_KWARGS"]
    assert (kwargs["password"], kwargs["db"], kwargs["connection_class"]) == ("pw", 4, SentinelConnection)
    assert kwargs["retry"].get_retries() == 20
    # What `rq worker --config app.rqconfig` then builds: a client of the Sentinels' master.
    from rq.cli.helpers import get_redis_from_config, read_config_file

    client = get_redis_from_config(read_config_file("app.rqconfig"), WorkerRedis)
    assert isinstance(client, Redis)
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    assert client.connection_pool.connection_kwargs["db"] == 4
