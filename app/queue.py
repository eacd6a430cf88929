"""The Redis connection and RQ queues of an app, kept in `app.extensions`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection
from rq import Queue
from rq.serializers import JSONSerializer

EXTENSION = "rq"

# Jobs carry JSON only: nothing read back from Redis is unpickled.
SERIALIZER = JSONSerializer

SENTINEL_PORT = 26379


def worker_retry_options() -> dict[str, Any]:
    """Return the connection options that retry each command through a Redis outage of about 30 s."""
    return {
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=20),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


class WorkerRedis(Redis):
    """The workers' Redis client: each command retries through an outage of about 30 seconds.

    A job that reports progress while Redis restarts then carries on instead of failing, and
    the worker does not quit on the error (`rq worker --connection-class app.queue.WorkerRedis`).
    """

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> WorkerRedis:  # type: ignore[override]
        """Return a client for the URL with the workers' retry policy."""
        for key, value in worker_retry_options().items():
            kwargs.setdefault(key, value)
        return super().from_url(url, **kwargs)  # type: ignore[return-value]


class SentinelConnection(SentinelManagedConnection):
    """A connection to the master the Sentinels name, asking them again at every reconnect.

    redis-py 8.1 asks the Sentinels only in connect(); a command's retries reconnect through
    connect_check_health() to the address the connection had, so after a failover each retry
    reached the old master, now a read-only replica (redis/redis-py#3874).
    """

    def __init__(self, **kwargs: Any) -> None:
        # SentinelConnectionPool passes `ssl` on when it is given a connection class: TLS is
        # SentinelSSLConnection's part.
        kwargs.pop("ssl", None)
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        """Connect to the master the Sentinels name now (unless connected)."""
        if self._sock is None and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


class SentinelSSLConnection(SentinelConnection, SSLConnection):
    """SentinelConnection over TLS (REDIS_URL rediss://)."""


@dataclass(frozen=True)
class SentinelSettings:
    """Where the Sentinels are, the master they watch, and how to log in to each."""

    addresses: list[tuple[str, int]]
    master: str
    # The master's database, username, password and TLS (from REDIS_URL), and connection class.
    master_options: dict[str, Any] = field(default_factory=dict)
    # The Sentinels' own password, and TLS when REDIS_URL is rediss://.
    sentinel_options: dict[str, Any] = field(default_factory=dict)


def parse_sentinels(text: str) -> list[tuple[str, int]]:
    """Read REDIS_SENTINELS ("host:port,host:port"; the port defaults to 26379)."""
    addresses = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        host, colon, port = entry.rpartition(":")
        if not colon:
            host, port = entry, str(SENTINEL_PORT)
        host = host.strip("[]")  # [::1]:26379
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS must read host:port,host:port; {entry!r} does not")
        addresses.append((host, int(port)))
    if not addresses:
        raise ValueError("REDIS_SENTINELS names no Sentinel")
    return addresses


def sentinel_settings(config: Mapping[str, Any]) -> SentinelSettings:
    """Return the Sentinel settings: REDIS_SENTINELS, REDIS_SENTINEL_MASTER, and REDIS_URL's login."""
    url_options: dict[str, Any] = parse_url(config["REDIS_URL"])  # type: ignore[no-untyped-call]
    tls = url_options.pop("connection_class", None) is SSLConnection
    master_options = {key: value for key, value in url_options.items() if key not in ("host", "port")}
    master_options["connection_class"] = SentinelSSLConnection if tls else SentinelConnection
    # With rediss://, the Sentinels are reached over TLS too, with the same certificates.
    sentinel_options: dict[str, Any] = {}
    if tls:
        sentinel_options = {"ssl": True, **{k: v for k, v in master_options.items() if k.startswith("ssl_")}}
    if config["REDIS_SENTINEL_PASSWORD"]:
        sentinel_options["password"] = config["REDIS_SENTINEL_PASSWORD"]
    return SentinelSettings(
        addresses=parse_sentinels(config["REDIS_SENTINELS"]),
        master=config["REDIS_SENTINEL_MASTER"],
        master_options=master_options,
        sentinel_options=sentinel_options,
    )


def connect(config: Mapping[str, Any], redis_class: type[Redis] = Redis, **options: Any) -> Redis:
    """Return a client of the configured Redis: REDIS_URL's, or the master the Sentinels name.

    Nothing is sent yet: the first command connects (and asks the Sentinels where the master is;
    after a failover the next command asks again).
    """
    if not config["REDIS_SENTINELS"]:
        return redis_class.from_url(config["REDIS_URL"], **options)
    settings = sentinel_settings(config)
    timeouts = {key: value for key, value in options.items() if key.startswith("socket_")}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.addresses,
        sentinel_kwargs={**timeouts, **settings.sentinel_options},
        **{**settings.master_options, **options},
    )
    client: Redis = sentinel.master_for(settings.master, redis_class=redis_class)  # type: ignore[no-untyped-call]
    return client


def worker_connection(config: Mapping[str, Any]) -> Redis:
    """Return a client with the workers' retry policy, to REDIS_URL or through the Sentinels."""
    return connect(config, WorkerRedis, **worker_retry_options())


def dashboard_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the RQ_DASHBOARD_* settings that point rq-dashboard at the app's Redis.

    REDIS_URL as it is; with Sentinels, a redis+sentinel:// URL, the passwords beside it (its
    parser would take a password with '@' or '/' in the URL for hosts). rq-dashboard reaches
    Sentinels over plain TCP and logs in with a password only (no username).
    """
    if not config["REDIS_SENTINELS"]:
        return {"RQ_DASHBOARD_REDIS_URL": str(config["REDIS_URL"])}
    settings = sentinel_settings(config)
    hosts = ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in settings.addresses
    )
    db = settings.master_options.get("db", 0)
    return {
        "RQ_DASHBOARD_REDIS_URL": f"redis+sentinel://{hosts}/{settings.master}/{db}",
        "RQ_DASHBOARD_REDIS_PASSWORD": settings.master_options.get("password"),
        "RQ_DASHBOARD_REDIS_SENTINEL_PASSWORD": config["REDIS_SENTINEL_PASSWORD"] or None,
    }


@dataclass(frozen=True)
class QueueState:
    """What the app keeps per Redis: the connection and one Queue per configured name."""

    connection: Redis
    queues: dict[str, Queue]


def init_app(app: Flask, connection: Redis | None = None) -> None:
    """Connect the app to Redis (lazily: nothing is sent until the first request)."""
    if connection is None:
        timeout = app.config["REDIS_SOCKET_TIMEOUT"]
        connection = connect(
            app.config, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
        )
    # rq-dashboard would take REDIS_SENTINELS for its own deprecated setting, and warn; it uses
    # RQ_DASHBOARD_REDIS_URL only.
    app.config.setdefault("RQ_DASHBOARD_REDIS_SENTINELS", None)
    if app.config["REDIS_SENTINELS"]:
        # rq-dashboard at /rq opens connections of its own, from these settings.
        for key, value in dashboard_settings(app.config).items():
            app.config.setdefault(key, value)
    queues = {
        name: Queue(name, connection=connection, serializer=SERIALIZER) for name in app.config["QUEUES"]
    }
    app.extensions[EXTENSION] = QueueState(connection, queues)


def _state() -> QueueState:
    state: QueueState = current_app.extensions[EXTENSION]
    return state


def get_redis() -> Redis:
    """Return the current app's Redis connection."""
    return _state().connection


def get_queue(name: str | None = None) -> Queue:
    """Return the named queue of the current app (the default queue without a name)."""
    return _state().queues[name or current_app.config["DEFAULT_QUEUE"]]
