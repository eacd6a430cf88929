"""The Redis connection and RQ queues of an app, kept in `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

EXTENSION = "rq"

# Jobs carry JSON only: nothing read back from Redis is unpickled.
SERIALIZER = JSONSerializer


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
