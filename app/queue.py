"""The Redis connection and RQ queues of an app, kept in `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from rq import Queue
from rq.serializers import JSONSerializer

EXTENSION = "rq"

# Jobs carry JSON only: nothing read back from Redis is unpickled.
SERIALIZER = JSONSerializer


class WorkerRedis(Redis):
    """The workers' Redis client: each command retries through an outage of about 30 seconds.

    A job that reports progress while Redis restarts then carries on instead of failing, and
    the worker does not quit on the error (`rq worker --connection-class app.queue.WorkerRedis`).
    """

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> WorkerRedis:  # type: ignore[override]
        """Return a client for the URL with the workers' retry policy."""
        kwargs.setdefault("retry", Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=20))
        kwargs.setdefault("retry_on_error", [RedisConnectionError, RedisTimeoutError])
        return super().from_url(url, **kwargs)  # type: ignore[return-value]


@dataclass(frozen=True)
class QueueState:
    """What the app keeps per Redis: the connection and one Queue per configured name."""

    connection: Redis
    queues: dict[str, Queue]


def init_app(app: Flask, connection: Redis | None = None) -> None:
    """Connect the app to Redis (lazily: nothing is sent until the first request)."""
    if connection is None:
        timeout = app.config["REDIS_SOCKET_TIMEOUT"]
        connection = Redis.from_url(
            app.config["REDIS_URL"],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
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
