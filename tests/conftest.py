"""Unit-test fixtures: the app on one FakeRedis, a test client, and a burst worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from app import create_app
from app.redis_server import RedisServer, free_port
from app.worker import SimpleWorker


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    """Return a fresh in-memory Redis shared by the app and the worker."""
    return fakeredis.FakeRedis()


@pytest.fixture(scope="module")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the URL of a real redis-server for the module: for tests that fork or spawn processes."""
    server = RedisServer(free_port(), Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def real_redis(redis_server_url: str) -> Iterator[Redis]:
    """Return a client of the module's real redis-server, emptied for each test."""
    connection = Redis.from_url(redis_server_url)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def config() -> dict[str, Any]:
    """Return config overrides; a test module may override this fixture."""
    return {}


@pytest.fixture
def app(redis: fakeredis.FakeRedis, config: dict[str, Any]) -> Iterator[Flask]:
    """Return the app in testing mode on the FakeRedis."""
    yield create_app({"APP_ENV": "testing", **config}, connection=redis)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client for the app."""
    return app.test_client()


@pytest.fixture
def work(app: Flask, redis: fakeredis.FakeRedis) -> Callable[[], None]:
    """Return a function that runs every queued job in-process, then returns."""

    def run() -> None:
        SimpleWorker(app.config["QUEUES"], connection=redis, app=app).work(burst=True)

    return run


def enqueue(client: FlaskClient, body: Any) -> str:
    """Post a JSON body to /enqueue, check it was accepted, and return the job id."""
    response = client.post("/enqueue", json=body)
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    return job_id
