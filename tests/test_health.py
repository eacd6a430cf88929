"""GET /health (the process is up) and GET /ready (Redis, a live worker per queue, the scheduler)."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.worker import WorkerStatus

from app import create_app
from app.periodic import HEARTBEAT_KEY, HEARTBEAT_TTL, PeriodicScheduler, load_periodic_jobs
from app.worker import SimpleWorker

PERIODIC = json.dumps([{"function": "count", "kwargs": {"duration": 0}, "interval": 60}])


@pytest.fixture
def unreachable_client() -> FlaskClient:
    """Return a client of an app whose Redis cannot be reached."""
    app = create_app(
        {"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_TIMEOUT": 0.2}
    )
    return app.test_client()


def start_worker(app: Flask, redis: fakeredis.FakeRedis, queues: list[str], name: str) -> SimpleWorker:
    """Register a worker listening on `queues`, as a running one is."""
    worker = SimpleWorker(queues, name=name, connection=redis, app=app)
    worker.register_birth()
    worker.set_state(WorkerStatus.IDLE)
    return worker


def assert_not_ready(response: Any, *reasons: str) -> dict[str, Any]:
    """Check a 503 with the error body; return the error."""
    assert response.status_code == 503, response.get_json()
    error: dict[str, Any] = response.get_json()["error"]
    assert error["status"] == 503
    assert error["code"] == "not_ready"
    for reason in reasons:
        assert any(reason in given for given in error["reasons"]), error["reasons"]
        assert reason in error["message"]
    assert int(response.headers["Retry-After"]) > 0
    return error


def test_health_answers_200_without_asking_redis(unreachable_client: FlaskClient) -> None:
    response = unreachable_client.get("/health")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": "rq-job-server", "version": "0.1.0"}
    assert response.headers["Cache-Control"] == "no-store"


def test_ready_without_workers_names_every_queue_without_one(client: FlaskClient) -> None:
    error = assert_not_ready(
        client.get("/ready"),
        "no live worker listens on queue 'high'",
        "no live worker listens on queue 'default'",
        "no live worker listens on queue 'low'",
    )

    assert error["checks"] == {"redis": "ok", "workers": {"high": 0, "default": 0, "low": 0}, "schedulers": 0}


def test_ready_answers_200_when_every_queue_has_a_live_worker(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    start_worker(app, redis, ["high", "default"], "first")
    start_worker(app, redis, ["default", "low"], "second")

    response = client.get("/ready")

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "status": "ready",
        "checks": {"redis": "ok", "workers": {"high": 1, "default": 2, "low": 1}, "schedulers": 0},
    }
    assert response.headers["Cache-Control"] == "no-store"


def test_ready_names_the_queue_no_worker_listens_on(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    start_worker(app, redis, ["high", "default"], "only")

    error = assert_not_ready(client.get("/ready"), "no live worker listens on queue 'low'")

    assert len(error["reasons"]) == 1


def test_ready_does_not_count_a_worker_that_left_or_is_suspended(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    start_worker(app, redis, ["high", "default", "low"], "gone").register_death()
    start_worker(app, redis, ["high", "default", "low"], "paused").set_state(WorkerStatus.SUSPENDED)

    error = assert_not_ready(client.get("/ready"), "no live worker listens on queue 'default'")

    assert error["checks"]["workers"] == {"high": 0, "default": 0, "low": 0}


def test_ready_answers_503_when_redis_is_unreachable(unreachable_client: FlaskClient) -> None:
    error = assert_not_ready(unreachable_client.get("/ready"), "Redis does not answer")

    assert error["checks"] == {"redis": "unreachable"}


@pytest.mark.parametrize("config", [{"PERIODIC_JOBS": PERIODIC}])
def test_ready_with_periodic_jobs_wants_a_scheduler_heartbeat(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    start_worker(app, redis, list(app.config["QUEUES"]), "all")
    assert_not_ready(client.get("/ready"), "no periodic-job scheduler has sent a heartbeat")

    scheduler = PeriodicScheduler(redis, load_periodic_jobs(app.config), name="cron-1")
    scheduler.heartbeat()
    response = client.get("/ready")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checks"]["schedulers"] == 1


@pytest.mark.parametrize("config", [{"PERIODIC_JOBS": PERIODIC}])
def test_ready_forgets_a_scheduler_whose_heartbeat_is_old_or_that_stopped(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    start_worker(app, redis, list(app.config["QUEUES"]), "all")
    scheduler = PeriodicScheduler(redis, load_periodic_jobs(app.config), name="cron-1")
    scheduler.register_birth()
    scheduler.heartbeat()
    assert client.get("/ready").status_code == 200

    redis.zincrby(HEARTBEAT_KEY, -(HEARTBEAT_TTL + 1), "cron-1")
    assert_not_ready(client.get("/ready"), "no periodic-job scheduler")

    scheduler.heartbeat()
    scheduler.register_death()
    assert_not_ready(client.get("/ready"), "no periodic-job scheduler")
    assert redis.zscore(HEARTBEAT_KEY, "cron-1") is None


@pytest.mark.parametrize("config", [{"PERIODIC_JOBS": '[{"function": "nope", "interval": 5}]'}])
def test_ready_reports_periodic_jobs_that_no_scheduler_would_run(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    start_worker(app, redis, list(app.config["QUEUES"]), "all")

    assert_not_ready(client.get("/ready"), "PERIODIC_JOBS is not valid", "'nope'")


def test_a_scheduler_wakes_at_least_every_heartbeat_interval(redis: fakeredis.FakeRedis) -> None:
    scheduler = PeriodicScheduler(redis, [], name="idle")

    # RQ's scheduler sleeps up to 60 s when nothing is due: too long for a heartbeat.
    assert scheduler.calculate_sleep_interval() <= HEARTBEAT_TTL / 3
