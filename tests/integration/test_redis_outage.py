"""A Redis restart under a running gunicorn and worker.sh: 503 while down, then recovery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from app.redis_server import RedisServer, is_reachable
from tests.integration.conftest import (
    Child,
    enqueue,
    get,
    running_gunicorn,
    running_redis,
    running_workers,
    wait_for,
    wait_for_job,
)

# This module stops and starts Redis: it runs its own, never TEST_REDIS_URL.
pytestmark = pytest.mark.owns_redis

# What "answers within a few seconds" means for one request while Redis is down.
REQUEST_DEADLINE = 5.0
# How long each outage lasts: longer than a count job's one-second progress step and than
# RQ's first reconnection back-off, so that jobs and workers really meet the outage.
OUTAGE_SECONDS = 3.0
RECOVERY_DEADLINE = 30.0
# RQ workers retry with exponential back-off after losing Redis.
REQUEUE_DEADLINE = 90.0


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Run a redis-server this module may stop and start."""
    with running_redis(tmp_path_factory.mktemp("outage-redis")) as server:
        yield server


@pytest.fixture(scope="module")
def outage_server(own_redis: RedisServer, logs_dir: Path) -> Iterator[str]:
    """Return the base URL of a gunicorn on the module's own Redis."""
    with running_gunicorn(own_redis.url, logs_dir) as base_url:
        yield base_url


@pytest.fixture(params=["fork", "fast"])
def outage_workers(own_redis: RedisServer, logs_dir: Path, request: pytest.FixtureRequest) -> Iterator[Child]:
    """Run `./worker.sh 2` on the module's own Redis for one test, in each worker mode."""
    with running_workers(own_redis.url, logs_dir, count=2, WORKER_MODE=request.param) as child:
        yield child


@contextmanager
def redis_down(server: RedisServer) -> Iterator[None]:
    """Stop Redis for the block, then start it again on the same port and directory."""
    server.stop()
    assert not is_reachable(server.url), "Redis still answers after stop()"
    try:
        yield
    finally:
        server.start()


def send(method: str, url: str, **kwargs: Any) -> requests.Response:
    """Send one request that must be answered within REQUEST_DEADLINE seconds."""
    return requests.request(method, url, timeout=REQUEST_DEADLINE, **kwargs)


def assert_redis_unavailable(response: requests.Response) -> None:
    """Check the answer is a 503 that tells the client Redis is down, in the JSON error body."""
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/json", response.text
    error = response.json()["error"]
    assert error["status"] == 503
    assert error["code"] == "redis_unavailable"
    assert "Redis" in error["message"]
    assert response.headers.get("Retry-After")


def assert_unavailable_throughout_outage(base_url: str, job_id: str) -> None:
    """Keep checking, for OUTAGE_SECONDS, that status and enqueue requests answer 503 promptly."""
    ends = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < ends:
        assert_redis_unavailable(send("GET", f"{base_url}/check_status", params={"job_id": job_id}))
        assert_redis_unavailable(send("POST", f"{base_url}/enqueue", json={"hello": "world"}))
        time.sleep(0.2)


def wait_until_answering(base_url: str, job_id: str) -> dict[str, Any]:
    """Wait until / and /check_status answer 200 again; return the job's status."""
    wait_for(
        lambda: get(base_url, "/").status_code == 200,
        RECOVERY_DEADLINE,
        message="GET / to answer 200 after Redis came back",
    )
    response = wait_for(
        lambda: (answer := get(base_url, "/check_status", job_id=job_id)).status_code == 200 and answer,
        RECOVERY_DEADLINE,
        message="GET /check_status to answer 200 after Redis came back",
    )
    status: dict[str, Any] = response.json()
    return status


def test_server_answers_503_while_redis_is_down_and_recovers_by_itself(
    outage_server: str, own_redis: RedisServer, outage_workers: Child
) -> None:
    before = enqueue(outage_server, {"function": "count", "kwargs": {"duration": 0}})["job_id"]
    wait_for_job(outage_server, before)

    with redis_down(own_redis):
        assert_unavailable_throughout_outage(outage_server, "x")

    assert wait_until_answering(outage_server, before)["status"] == "finished"
    job_id = enqueue(outage_server, {"hello": "again"})["job_id"]
    wait_for_job(outage_server, job_id, timeout=REQUEUE_DEADLINE)
    result = get(outage_server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["input"] == {"hello": "again"}
    outage_workers.check_alive()


def test_job_queued_before_a_redis_restart_is_not_lost(
    outage_server: str, own_redis: RedisServer, logs_dir: Path
) -> None:
    # No workers yet: the job waits in Redis (its append-only file) across the restart.
    job_id = enqueue(outage_server, {"function": "count", "kwargs": {"duration": 1}})["job_id"]

    with redis_down(own_redis):
        assert_unavailable_throughout_outage(outage_server, job_id)

    assert wait_until_answering(outage_server, job_id)["status"] == "queued"
    with running_workers(own_redis.url, logs_dir, count=2):
        wait_for_job(outage_server, job_id, timeout=REQUEUE_DEADLINE)
    result = get(outage_server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["counted"] == 1


def test_job_running_when_redis_stops_finishes_after_the_restart(
    outage_server: str, own_redis: RedisServer, outage_workers: Child
) -> None:
    job_id = enqueue(outage_server, {"function": "count", "kwargs": {"duration": 4}})["job_id"]
    wait_for_job(outage_server, job_id, until="started")

    with redis_down(own_redis):
        assert_unavailable_throughout_outage(outage_server, job_id)

    wait_until_answering(outage_server, job_id)
    # The outage is seconds long, so RQ's back-off stays short: a minute is plenty.
    wait_for_job(outage_server, job_id, timeout=60)
    result = get(outage_server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["counted"] == 4
