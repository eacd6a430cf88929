"""Job control on FakeRedis: GET /jobs/<id>, cancel or stop, requeue and delete."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

import app.control as control
from app.jobs.count import count
from app.queue import SERIALIZER
from app.status import fetch_job
from tests.conftest import enqueue

WORKER = "worker-1"
STOPPED_BY_USER = "Job stopped by user, work-horse terminated."
COUNT = {"function": "count", "kwargs": {"duration": 0}}


@pytest.fixture
def config() -> dict[str, Any]:
    """Wait a short time for a stop nobody answers."""
    return {"CANCEL_WAIT_SECONDS": 0.3}


def fetch(redis: fakeredis.FakeRedis, job_id: str) -> Job:
    """Return the job as RQ stored it."""
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def start(redis: fakeredis.FakeRedis, job_id: str, worker_name: str | None = WORKER) -> None:
    """Do what a worker does when it takes a queued job (without running it)."""
    job = fetch(redis, job_id)
    with redis.pipeline() as pipe:
        Queue(job.origin, connection=redis).remove(job, pipeline=pipe)
        if worker_name:
            job.prepare_for_execution(worker_name, pipeline=pipe)
        else:
            job.set_status(JobStatus.STARTED, pipeline=pipe)
        pipe.zadd(StartedJobRegistry(job.origin, connection=redis).key, {f"{job_id}:run": time.time() + 60})
        pipe.execute()


def stop(redis: fakeredis.FakeRedis, job_id: str) -> None:
    """Do what a worker does once it has killed a job's work horse on a stop command."""
    job = fetch(redis, job_id)
    with redis.pipeline() as pipe:
        job.set_status(JobStatus.STOPPED, pipeline=pipe)
        pipe.zrem(StartedJobRegistry(job.origin, connection=redis).key, f"{job_id}:run")
        FailedJobRegistry(job.origin, connection=redis).add(
            job, ttl=600, exc_string=STOPPED_BY_USER, pipeline=pipe
        )
        pipe.execute()


@contextmanager
def obliging_worker(redis: fakeredis.FakeRedis, timeout: float = 5.0) -> Iterator[list[dict[str, Any]]]:
    """Listen on WORKER's command channel and stop the job a stop-job command names; yield the commands."""
    commands: list[dict[str, Any]] = []
    pubsub = redis.pubsub()
    pubsub.subscribe(f"rq:pubsub:{WORKER}")
    done = threading.Event()

    def listen() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
            if message:
                command = json.loads(message["data"])
                commands.append(command)
                if command["command"] == "stop-job":
                    stop(redis, command["job_id"])

    thread = threading.Thread(target=listen)
    thread.start()
    try:
        yield commands
    finally:
        done.set()
        thread.join()
        pubsub.close()


def job_in(client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None], status: str) -> str:
    """Return the id of a count job brought to `status` the way it happens in production."""
    if status == "deferred":
        parent = enqueue(client, COUNT)
        return (
            Queue("default", connection=redis, serializer=SERIALIZER)
            .enqueue(count, duration=0, depends_on=parent, meta={"function": "count"})
            .id
        )
    if status == "scheduled":
        return (
            Queue("default", connection=redis, serializer=SERIALIZER)
            .enqueue_in(timedelta(hours=1), count, duration=0, meta={"function": "count"})
            .id
        )
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": -1 if status == "failed" else 0}})
    if status in {"finished", "failed"}:
        work()
    elif status in {"started", "stopped"}:
        start(redis, job_id)
        if status == "stopped":
            stop(redis, job_id)
    elif status == "canceled":
        assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert fetch(redis, job_id).get_status() == status
    return job_id


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check the response is the JSON error `code` with `status`; return the error object."""
    assert response.status_code == status, response.get_json()
    error: dict[str, Any] = response.get_json()["error"]
    assert (error["status"], error["code"]) == (status, code)
    return error


def index_holds(redis: fakeredis.FakeRedis, key: str, job_id: str) -> bool:
    """Tell whether a queue list or registry holds the job."""
    if redis.type(key) == b"list":
        return job_id.encode() in redis.lrange(key, 0, -1)
    return any(member.decode().split(":")[0] == job_id for member in redis.zrange(key, 0, -1))


# --- GET /jobs/<id> ---


@pytest.mark.parametrize("status", ["queued", "started", "finished", "failed", "stopped", "canceled"])
def test_get_job_answers_the_check_status_body(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None], status: str
) -> None:
    job_id = job_in(client, redis, work, status)

    response = client.get(f"/jobs/{job_id}")

    assert response.status_code == 200
    assert response.get_json() == client.get(f"/check_status?job_id={job_id}").get_json()
    assert response.get_json()["status"] == status


# --- Cancel ---


@pytest.mark.parametrize(
    ("status", "index"),
    [
        ("queued", "rq:queue:default"),
        ("deferred", DeferredJobRegistry.key_template.format("default")),
        ("scheduled", ScheduledJobRegistry.key_template.format("default")),
    ],
)
def test_cancel_of_a_waiting_job_cancels_it_for_good(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None], status: str, index: str
) -> None:
    job_id = job_in(client, redis, work, status)

    response = client.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "canceled"
    assert not index_holds(redis, index, job_id)
    assert job_id in CanceledJobRegistry("default", connection=redis)
    work()  # runs everything else, the deferred job's parent included
    body = client.get(f"/jobs/{job_id}").get_json()
    assert (body["status"], body["started_at"]) == ("canceled", None)


def test_cancel_of_a_job_others_wait_on_cancels_them_too(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    parent = enqueue(client, COUNT)
    child = Queue("default", connection=redis, serializer=SERIALIZER).enqueue(
        count, duration=0, depends_on=parent, meta={"function": "count"}
    )

    assert client.post(f"/jobs/{parent}/cancel").status_code == 200
    work()

    body = client.get(f"/jobs/{child.id}").get_json()
    assert body["status"] == "canceled"
    assert parent in body["error"]


def test_cancel_of_a_running_job_stops_it_and_answers_stopped(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = job_in(client, redis, work, "started")

    with obliging_worker(redis) as commands:
        response = client.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "stopped"
    assert commands == [{"command": "stop-job", "job_id": job_id}]
    assert job_id in FailedJobRegistry("default", connection=redis)


def test_cancel_of_a_running_job_nobody_stops_answers_202_with_its_status(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = job_in(client, redis, work, "started")
    began = time.monotonic()

    response = client.post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 202, response.get_json()
    assert response.get_json()["status"] == "started"
    assert response.headers["Retry-After"] == "1"
    assert time.monotonic() - began >= 0.3  # CANCEL_WAIT_SECONDS


def test_cancel_never_marks_a_job_canceled_that_a_worker_took_meanwhile(
    client: FlaskClient, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = enqueue(client, COUNT)
    read_while_queued = fetch(redis, job_id)
    start(redis, job_id)
    answers = iter([read_while_queued])
    monkeypatch.setattr(control, "fetch_job", lambda job_id: next(answers, None) or fetch_job(job_id))

    response = client.post(f"/jobs/{job_id}/cancel")

    # It went the way of a running job: a stop command, then 202 while nobody stops it.
    assert response.status_code == 202, response.get_json()
    assert fetch(redis, job_id).get_status() == JobStatus.STARTED
    assert job_id not in CanceledJobRegistry("default", connection=redis)


def test_cancel_of_a_started_job_without_a_worker_is_refused(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, COUNT)
    start(redis, job_id, worker_name=None)

    error = error_of(client.post(f"/jobs/{job_id}/cancel"), 409, "job_not_running")

    assert error["job_status"] == "started"


@pytest.mark.parametrize("status", ["finished", "failed", "stopped", "canceled"])
def test_cancel_of_an_ended_job_answers_409_with_its_status(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None], status: str
) -> None:
    job_id = job_in(client, redis, work, status)

    error = error_of(client.post(f"/jobs/{job_id}/cancel"), 409, "job_already_ended")

    assert (error["job_id"], error["job_status"]) == (job_id, status)
    assert fetch(redis, job_id).get_status() == status


# --- Requeue ---


def test_requeue_of_a_stopped_job_runs_it_to_the_end(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, COUNT)
    start(redis, job_id)
    job = fetch(redis, job_id)
    job.meta["progress"] = {"current": 1, "total": 1, "percent": 100.0}
    job.save_meta()
    stop(redis, job_id)

    response = client.post(f"/jobs/{job_id}/requeue")

    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["status"], body["started_at"], body["progress"]) == ("queued", None, None)
    assert response.headers["Location"] == body["status_url"]
    assert job_id not in FailedJobRegistry("default", connection=redis)
    work()
    result = client.get(f"/get_result?job_id={job_id}")
    assert result.status_code == 200, result.get_json()
    assert result.get_json()["result"]["counted"] == 1


def test_requeue_of_a_failed_job_runs_it_again(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = job_in(client, redis, work, "failed")
    first = client.get(f"/jobs/{job_id}").get_json()

    assert client.post(f"/jobs/{job_id}/requeue").status_code == 202
    work()

    again = client.get(f"/jobs/{job_id}").get_json()
    assert again["status"] == "failed"
    assert again["started_at"] > first["started_at"]
    assert len(fetch(redis, job_id).results()) == 2


def test_requeue_of_a_canceled_job_runs_it(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = job_in(client, redis, work, "canceled")

    assert client.post(f"/jobs/{job_id}/requeue").status_code == 202
    assert job_id not in CanceledJobRegistry("default", connection=redis)
    work()

    assert client.get(f"/jobs/{job_id}").get_json()["status"] == "finished"


@pytest.mark.parametrize("status", ["queued", "started", "deferred", "scheduled", "finished"])
def test_requeue_of_a_job_that_did_not_fail_answers_409(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None], status: str
) -> None:
    job_id = job_in(client, redis, work, status)

    error = error_of(client.post(f"/jobs/{job_id}/requeue"), 409, "job_not_requeueable")

    assert error["job_status"] == status
    assert error["requeueable"] == ["failed", "stopped", "canceled"]
    assert fetch(redis, job_id).get_status() == status


def test_second_requeue_of_the_same_failure_answers_409(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = job_in(client, redis, work, "failed")
    assert client.post(f"/jobs/{job_id}/requeue").status_code == 202

    error = error_of(client.post(f"/jobs/{job_id}/requeue"), 409, "job_not_requeueable")

    assert error["job_status"] == "queued"
    assert Queue("default", connection=redis).job_ids == [job_id]


# --- Delete ---


@pytest.mark.parametrize(
    "status", ["queued", "deferred", "scheduled", "finished", "failed", "stopped", "canceled"]
)
def test_delete_removes_the_job_its_result_and_every_trace(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None], status: str
) -> None:
    job_id = job_in(client, redis, work, status)

    response = client.delete(f"/jobs/{job_id}")

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"job_id": job_id, "deleted": True, "job_status": status}
    error_of(client.get(f"/jobs/{job_id}"), 404, "job_not_found")
    error_of(client.get(f"/get_result?job_id={job_id}"), 404, "job_not_found")
    assert redis.keys(f"*{job_id}*") == []
    for key in redis.keys("rq:*"):
        if redis.type(key) in {b"list", b"zset"}:
            assert not index_holds(redis, key.decode(), job_id), key


def test_delete_of_a_running_job_answers_409_and_tells_to_cancel_first(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = job_in(client, redis, work, "started")

    error = error_of(client.delete(f"/jobs/{job_id}"), 409, "job_running")

    assert error["cancel_url"] == f"http://localhost/jobs/{job_id}/cancel"
    assert fetch(redis, job_id).get_status() == JobStatus.STARTED


# --- Errors common to every route ---

ROUTES = [("get", ""), ("post", "/cancel"), ("post", "/requeue"), ("delete", "")]


@pytest.mark.parametrize(("method", "suffix"), ROUTES)
@pytest.mark.parametrize(
    ("job_id", "status", "code"),
    [
        ("no-such-job", 404, "job_not_found"),
        ("bad.id", 400, "invalid_job_id"),
        ("x" * 129, 400, "invalid_job_id"),
    ],
)
def test_unknown_or_malformed_job_id_is_a_json_error(
    client: FlaskClient, method: str, suffix: str, job_id: str, status: int, code: str
) -> None:
    response = getattr(client, method)(f"/jobs/{job_id}{suffix}")

    error_of(response, status, code)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/jobs/some-job/cancel", "POST"),
        ("get", "/jobs/some-job/requeue", "POST"),
        ("put", "/jobs/some-job", "DELETE"),
    ],
)
def test_wrong_method_answers_405_with_allow(
    client: FlaskClient, method: str, path: str, allowed: str
) -> None:
    response = getattr(client, method)(path)

    error_of(response, 405, "method_not_allowed")
    assert allowed in response.headers["Allow"]
