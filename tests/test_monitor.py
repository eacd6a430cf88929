"""GET /queues and GET /workers: counts from Redis without loading jobs, workers as RQ sees them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.utils import now
from rq.worker import WorkerStatus

import app.monitor as monitor_module
from app.queue import SERIALIZER
from app.worker import SimpleWorker, Worker
from tests.conftest import enqueue

REGISTRY_NAMES = ["started", "deferred", "scheduled", "finished", "failed", "canceled"]


def queues_by_name(client: FlaskClient) -> dict[str, dict[str, Any]]:
    """Return the /queues answer keyed by queue name."""
    response = client.get("/queues")
    assert response.status_code == 200, response.get_json()
    return {queue["name"]: queue for queue in response.get_json()["queues"]}


def rq_queue(redis: fakeredis.FakeRedis, name: str = "default") -> Queue:
    """Return an RQ queue on the test Redis, JSON like the app's."""
    return Queue(name, connection=redis, serializer=SERIALIZER)


def test_queues_lists_every_configured_queue_in_order_with_zero_counts(client: FlaskClient) -> None:
    response = client.get("/queues")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.get_json() == {
        "queues": [
            {
                "name": name,
                "length": 0,
                "oldest_job_id": None,
                "oldest_job_age": None,
                "registries": dict.fromkeys(REGISTRY_NAMES, 0),
            }
            for name in ("high", "default", "low")
        ]
    }


def test_queues_gives_the_length_and_the_age_of_the_oldest_queued_job(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    enqueue(client, {"function": "count", "kwargs": {"duration": 0}, "queue": "high"})
    enqueued_at = Job.fetch(first, connection=client.application.extensions["rq"].connection).enqueued_at
    assert enqueued_at is not None
    monkeypatch.setattr(monitor_module, "now", lambda: enqueued_at + timedelta(seconds=42.5))

    queues = queues_by_name(client)

    assert queues["default"]["length"] == 2
    assert queues["default"]["oldest_job_id"] == first
    assert queues["default"]["oldest_job_age"] == 42.5
    assert queues["high"]["length"] == 1
    assert queues["low"] == {**queues["low"], "length": 0, "oldest_job_id": None, "oldest_job_age": None}


def test_queues_counts_each_registry(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    enqueue(client, {"function": "count", "kwargs": {"duration": -1}})
    work()
    queue = rq_queue(redis)
    parent = queue.enqueue_call(func="app.jobs.count.count", kwargs={"duration": 0})
    queue.enqueue_call(func="app.jobs.count.count", depends_on=parent)
    queue.enqueue_in(timedelta(hours=1), "app.jobs.count.count")
    queue.enqueue_call(func="app.jobs.count.count").cancel()
    # A running job's entry, as a worker writes it: "job_id:execution_id", scored by its expiry.
    redis.zadd(queue.started_job_registry.key, {"running:execution": now().timestamp() + 60})

    default = queues_by_name(client)["default"]

    assert default["registries"] == {
        "started": 1,
        "deferred": 1,
        "scheduled": 1,
        "finished": 1,
        "failed": 1,
        "canceled": 1,
    }
    assert default["length"] == 1  # the parent of the deferred job


def test_queues_loads_no_job_and_needs_two_round_trips_for_all_queues(
    client: FlaskClient, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for queue in ("high", "default", "low"):
        enqueue(client, {"function": "count", "queue": queue})

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("GET /queues loaded a job")

    for name in ("fetch", "fetch_many", "refresh"):
        monkeypatch.setattr(Job, name, refuse)
    round_trips: list[str] = []
    original_execute = type(redis.pipeline()).execute

    def counting_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        round_trips.append("pipeline")
        return original_execute(self, *args, **kwargs)

    monkeypatch.setattr(type(redis.pipeline()), "execute", counting_execute)
    monkeypatch.setattr(redis, "execute_command", refuse)

    queues = queues_by_name(client)

    assert [queue["length"] for queue in queues.values()] == [1, 1, 1]
    assert all(queue["oldest_job_age"] is not None for queue in queues.values())
    assert round_trips == ["pipeline", "pipeline"]


def test_queues_age_is_null_when_the_head_job_is_gone(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, {"function": "count"})
    redis.delete(Job.key_for(job_id))

    default = queues_by_name(client)["default"]

    assert default["length"] == 1
    assert default["oldest_job_id"] == job_id
    assert default["oldest_job_age"] is None


def test_workers_is_empty_without_workers(client: FlaskClient) -> None:
    response = client.get("/workers")

    assert response.status_code == 200
    assert response.get_json() == {"workers": []}


def test_workers_describes_each_registered_worker(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    idle = SimpleWorker(list(app.config["QUEUES"]), name="idle-one", connection=redis, app=app)
    idle.register_birth()
    idle.set_state(WorkerStatus.IDLE)
    busy = SimpleWorker(["low"], name="busy-one", connection=redis, app=app)
    busy.register_birth()
    busy.set_state(WorkerStatus.BUSY)
    busy.set_current_job_id("job-123")
    redis.hset(
        busy.key, mapping={"successful_job_count": 3, "failed_job_count": 1, "total_working_time": 12.5}
    )

    response = client.get("/workers")

    assert response.status_code == 200
    workers = {worker["name"]: worker for worker in response.get_json()["workers"]}
    assert list(workers) == ["busy-one", "idle-one"]
    assert workers["busy-one"] == {
        "name": "busy-one",
        "hostname": busy.hostname,
        "pid": busy.pid,
        "state": "busy",
        "queues": ["low"],
        "current_job_id": "job-123",
        "last_heartbeat": workers["busy-one"]["last_heartbeat"],
        "birth_date": workers["busy-one"]["birth_date"],
        "successful_job_count": 3,
        "failed_job_count": 1,
        "total_working_time": 12.5,
    }
    assert workers["busy-one"]["birth_date"].endswith("+00:00")
    assert workers["busy-one"]["last_heartbeat"] is not None
    assert workers["idle-one"]["state"] == "idle"
    assert workers["idle-one"]["queues"] == ["high", "default", "low"]
    assert workers["idle-one"]["current_job_id"] is None


def test_workers_counts_the_jobs_a_worker_ran(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    enqueue(client, {"function": "count", "kwargs": {"duration": -1}})
    worker = SimpleWorker(list(app.config["QUEUES"]), name="counted", connection=redis, app=app)
    # A burst worker unregisters when it is done: keep it listed to read its counts.
    monkeypatch.setattr(worker, "register_death", lambda: None)
    worker.work(burst=True)

    [described] = client.get("/workers").get_json()["workers"]

    assert described["successful_job_count"] == 1
    assert described["failed_job_count"] == 1
    assert described["total_working_time"] >= 0


@pytest.mark.parametrize("route", ["/queues", "/workers"])
def test_monitor_routes_answer_only_get(client: FlaskClient, route: str) -> None:
    response = client.post(route)

    assert response.status_code == 405
    assert response.get_json()["error"]["status"] == 405


# The workers' intervals: what makes a dead worker's job fail in seconds (see app/worker.py).


def test_worker_takes_its_intervals_from_the_app_not_from_rq_defaults(
    app: Flask, redis: fakeredis.FakeRedis
) -> None:
    app.config.update(JOB_MONITORING_INTERVAL=4, MAINTENANCE_INTERVAL=7, JOB_HEARTBEAT_GRACE=9)

    worker = Worker(
        list(app.config["QUEUES"]),
        connection=redis,
        app=app,
        job_monitoring_interval=30,
        maintenance_interval=600,
    )

    assert worker.job_monitoring_interval == 4
    assert worker.maintenance_interval == 7
    # An idle worker wakes from waiting for jobs to run its maintenance (RQ: worker_ttl - 15 = 405 s).
    assert worker.dequeue_timeout == 7
    # A running job's registry entry lives until the next heartbeat plus the grace (RQ: + 60 s).
    job = Job.create("app.jobs.count.count", connection=redis, serializer=SERIALIZER, timeout=600)
    assert worker.get_heartbeat_ttl(job) == 4 + 9


def test_simple_worker_keeps_rqs_heartbeat_ttl_for_the_jobs_it_runs_in_process(
    app: Flask, redis: fakeredis.FakeRedis
) -> None:
    # It sends no heartbeat while a job runs, so the entry must last the whole job timeout.
    worker = SimpleWorker(list(app.config["QUEUES"]), connection=redis, app=app)
    job = Job.create("app.jobs.count.count", connection=redis, serializer=SERIALIZER, timeout=600)

    assert worker.get_heartbeat_ttl(job) == 600 + 60


def abandon(redis: fakeredis.FakeRedis, job: Job) -> None:
    """Leave the job as a worker killed mid-job does: started, its heartbeat expired."""
    rq_queue(redis, job.origin).remove(job)
    job.set_status(JobStatus.STARTED)
    redis.zadd(job.started_job_registry.key, {f"{job.id}:execution": now().timestamp() - 1})


def test_maintenance_fails_a_job_whose_heartbeat_expired_as_abandoned(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    abandon(redis, Job.fetch(job_id, connection=redis, serializer=SERIALIZER))

    SimpleWorker(list(app.config["QUEUES"]), connection=redis, app=app).run_maintenance_tasks()

    status = client.get("/check_status", query_string={"job_id": job_id}).get_json()
    assert status["status"] == "failed"
    assert "AbandonedJobError" in status["error"]


@pytest.mark.parametrize(
    ("retry", "status"),
    [(Retry(max=1), JobStatus.QUEUED), (Retry(max=2, interval=[30]), JobStatus.SCHEDULED)],
)
def test_maintenance_retries_an_abandoned_job_with_retries_left(
    app: Flask, redis: fakeredis.FakeRedis, retry: Retry, status: JobStatus
) -> None:
    queue = rq_queue(redis)
    job = queue.enqueue_call(func="app.jobs.count.count", kwargs={"duration": 0}, retry=retry)
    abandon(redis, job)

    SimpleWorker(list(app.config["QUEUES"]), connection=redis, app=app).run_maintenance_tasks()

    job.refresh()
    assert job.get_status() == status
    assert job.retries_left == retry.max - 1
    assert job.id not in queue.failed_job_registry


@pytest.mark.parametrize(("level", "shown"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_maintenance_logs_its_frequent_cleaning_lines_at_debug(
    app: Flask, redis: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture, level: int, shown: bool
) -> None:
    caplog.set_level(level)

    SimpleWorker(list(app.config["QUEUES"]), connection=redis, app=app).run_maintenance_tasks()

    cleaning = [record for record in caplog.records if "cleaning registries" in record.getMessage()]
    assert bool(cleaning) == shown
    assert all(record.levelname == "DEBUG" for record in cleaning)
