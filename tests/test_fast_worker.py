"""The fast worker (app.worker.FastWorker) on a real redis-server: what RQ would record, faster.

Its work horse is another process, which FakeRedis cannot follow: these tests start a
redis-server of their own on a free port, and run the worker in burst mode in the test.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from rq import Callback, Queue, Retry
from rq.command import send_stop_job_command
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result

from app import callbacks, create_app, sweeper
from app.queue import SERIALIZER
from app.status import LAST_ERROR_KEY
from app.worker import FastWorker
from tests import horse_jobs
from tests.conftest import enqueue

DEADLINE = 30.0


@pytest.fixture
def redis(real_redis: Redis) -> Redis:
    """Return the real Redis, for the app and the workers alike."""
    return real_redis


@pytest.fixture
def app(redis: Redis) -> Flask:
    """Return the app in testing mode on the real Redis."""
    return create_app({"APP_ENV": "testing"}, connection=redis)


@pytest.fixture
def queue(redis: Redis) -> Queue:
    """Return the default queue, with the app's JSON serializer."""
    return Queue("default", connection=redis, serializer=SERIALIZER)


@pytest.fixture
def worker(app: Flask, redis: Redis) -> FastWorker:
    """Return a fast worker on the app's queues, with short intervals."""
    worker = FastWorker(app.config["QUEUES"], connection=redis, app=app)
    worker.job_monitoring_interval = 1
    return worker


@pytest.fixture
def work(worker: FastWorker) -> Callable[[], None]:
    """Return a function that runs every queued job with the fast worker, then returns."""

    def run() -> None:
        worker.work(burst=True)

    return run


def fetch(redis: Redis, job_id: str) -> Job:
    """Return the job as it is in Redis now."""
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def error(job: Job) -> str:
    """Return the error RQ recorded for the job's last try."""
    result = job.latest_result()
    return (result.exc_string if result else None) or ""


def test_a_job_runs_in_another_process_and_its_result_is_recorded_as_rq_records_it(
    queue: Queue, redis: Redis, worker: FastWorker, work: Callable[[], None]
) -> None:
    job = queue.enqueue(horse_jobs.whoami, result_ttl=600)
    work()
    job = fetch(redis, job.id)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() not in (None, os.getpid())
    assert job.started_at is not None and job.ended_at is not None and job.ended_at >= job.started_at
    assert job.worker_name == worker.name
    assert job.id in FinishedJobRegistry(queue=queue)
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
    assert not redis.keys("rq:execution:*"), "the execution record is cleaned up"
    assert redis.ttl(job.key) == pytest.approx(600, abs=5)
    counts = redis.hmget(worker.key, "successful_job_count", "failed_job_count")
    assert counts == [b"1", None]


def test_jobs_share_one_work_horse(queue: Queue, redis: Redis, work: Callable[[], None]) -> None:
    jobs = [queue.enqueue(horse_jobs.whoami) for _ in range(3)]
    work()
    assert len({fetch(redis, job.id).return_value() for job in jobs}) == 1


def test_an_api_job_runs_in_the_app_and_leaves_the_lost_job_tracker(
    app: Flask, redis: Redis, work: Callable[[], None]
) -> None:
    job_id = enqueue(app.test_client(), {"function": "some_long_function", "args": ["hi"]})
    assert redis.zscore(sweeper.INFLIGHT_KEY, job_id) is not None
    work()
    body = app.test_client().get(f"/get_result?job_id={job_id}").get_json()
    assert body["result"]["result"] == "hi"
    assert body["result"]["job_started_at"] is not None
    assert redis.zscore(sweeper.INFLIGHT_KEY, job_id) is None
    progress = app.test_client().get(f"/check_status?job_id={job_id}").get_json()["progress"]
    assert progress["message"] == "done"


def test_a_job_that_raises_fails_with_its_traceback(
    queue: Queue, redis: Redis, worker: FastWorker, work: Callable[[], None]
) -> None:
    job = queue.enqueue(horse_jobs.fail)
    work()
    job = fetch(redis, job.id)
    assert job.get_status() == JobStatus.FAILED
    assert "ValueError: this job fails on purpose" in error(job)
    assert job.id in FailedJobRegistry(queue=queue)
    assert redis.hget(worker.key, "failed_job_count") == b"1"


@pytest.mark.parametrize("function", [horse_jobs.crash, horse_jobs.exit_process])
def test_a_job_that_kills_its_process_fails_and_the_worker_goes_on(
    function: Callable[[], None], queue: Queue, redis: Redis, work: Callable[[], None]
) -> None:
    before = queue.enqueue(horse_jobs.whoami)
    doomed = queue.enqueue(function)
    after = queue.enqueue(horse_jobs.whoami)
    work()
    doomed = fetch(redis, doomed.id)
    assert doomed.get_status() == JobStatus.FAILED
    assert "Work horse died while running the job" in error(doomed)
    expected = "signal 9 (SIGKILL)" if function is horse_jobs.crash else "exit status 3"
    assert expected in error(doomed)
    assert fetch(redis, after.id).get_status() == JobStatus.FINISHED
    assert fetch(redis, before.id).return_value() != fetch(redis, after.id).return_value(), "a new horse"


def test_a_job_past_its_timeout_fails_and_the_horse_carries_on(
    queue: Queue, redis: Redis, work: Callable[[], None]
) -> None:
    before = queue.enqueue(horse_jobs.whoami)
    slow = queue.enqueue(horse_jobs.sleep_for, 30, job_timeout=1)
    after = queue.enqueue(horse_jobs.whoami)
    started = time.monotonic()
    work()
    assert time.monotonic() - started < 15
    slow = fetch(redis, slow.id)
    assert slow.get_status() == JobStatus.FAILED
    assert "Task exceeded maximum timeout value (1 seconds)" in error(slow)
    assert fetch(redis, before.id).return_value() == fetch(redis, after.id).return_value()


def test_a_job_that_ignores_its_timeout_is_killed_with_its_horse(
    queue: Queue, redis: Redis, worker: FastWorker, work: Callable[[], None]
) -> None:
    worker.HARD_KILL_GRACE = 1.0
    stubborn = queue.enqueue(horse_jobs.ignore_timeout, 60, job_timeout=1)
    after = queue.enqueue(horse_jobs.whoami)
    started = time.monotonic()
    work()
    assert time.monotonic() - started < 15
    stubborn = fetch(redis, stubborn.id)
    assert stubborn.get_status() == JobStatus.FAILED
    assert "did not stop; its work horse was killed" in error(stubborn)
    assert fetch(redis, after.id).get_status() == JobStatus.FINISHED


def test_a_retried_job_keeps_what_its_first_try_wrote(
    queue: Queue, redis: Redis, work: Callable[[], None]
) -> None:
    job = queue.enqueue(horse_jobs.succeed_on_second_try, retry=Retry(max=1))
    work()
    job = fetch(redis, job.id)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "succeeded on try 2"
    assert job.meta["progress"]["message"] == "try 2"


def test_a_try_to_be_retried_later_keeps_the_error_its_callback_noted(
    queue: Queue, redis: Redis, work: Callable[[], None]
) -> None:
    job = queue.enqueue(
        horse_jobs.fail,
        retry=Retry(max=2, interval=600),
        on_failure=Callback(callbacks.on_failure),
        meta={"function": "fail"},
    )
    work()
    job = fetch(redis, job.id)
    assert job.get_status() == JobStatus.SCHEDULED
    assert job.retries_left == 1
    assert job.meta[LAST_ERROR_KEY] == "ValueError: this job fails on purpose"


def test_a_job_that_returns_a_retry_runs_again_as_rq_workers_run_it(
    queue: Queue, redis: Redis, work: Callable[[], None]
) -> None:
    job = queue.enqueue(horse_jobs.retry_once_then_succeed)
    work()
    job = fetch(redis, job.id)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "done after 1 retry"


def test_a_job_that_keeps_returning_a_retry_fails_when_its_retries_are_spent(
    queue: Queue, redis: Redis, worker: FastWorker, work: Callable[[], None]
) -> None:
    job = queue.enqueue(horse_jobs.always_ask_for_a_retry)
    work()
    job = fetch(redis, job.id)
    assert job.get_status() == JobStatus.FAILED
    assert job.number_of_retries == 1
    assert job.id in FailedJobRegistry(queue=queue)
    assert [result.type for result in job.results()] == [
        Result.Type.MAX_RETRIES_EXCEEDED,
        Result.Type.RETRIED,
    ]


def test_dependents_run_after_their_parent(queue: Queue, redis: Redis, work: Callable[[], None]) -> None:
    parent = queue.enqueue(horse_jobs.sleep_for, 0.1)
    child = queue.enqueue(horse_jobs.whoami, depends_on=parent)
    assert child.get_status() == JobStatus.DEFERRED
    work()
    assert fetch(redis, child.id).get_status() == JobStatus.FINISHED


def test_a_failed_api_job_cancels_what_waits_on_it(
    app: Flask, redis: Redis, work: Callable[[], None]
) -> None:
    client = app.test_client()
    parent = enqueue(client, {"function": "count", "kwargs": {"length": "forever"}})
    child = enqueue(client, {"function": "noop", "depends_on": [parent]})
    work()
    assert fetch(redis, parent).get_status() == JobStatus.FAILED
    assert fetch(redis, child).get_status() == JobStatus.CANCELED


def test_a_job_deleted_while_queued_is_skipped_without_leftovers(
    queue: Queue, redis: Redis, work: Callable[[], None]
) -> None:
    gone = queue.enqueue(horse_jobs.whoami)
    kept = queue.enqueue(horse_jobs.whoami)
    redis.delete(gone.key)
    work()
    assert not redis.exists(gone.key)
    assert fetch(redis, kept.id).get_status() == JobStatus.FINISHED
    assert StartedJobRegistry(queue=queue).get_job_ids() == []


def test_a_stop_command_stops_the_running_job(queue: Queue, redis: Redis, work: Callable[[], None]) -> None:
    job = queue.enqueue(horse_jobs.sleep_for, 30)
    after = queue.enqueue(horse_jobs.whoami)

    def stop_when_started() -> None:
        deadline = time.monotonic() + DEADLINE
        while fetch(redis, job.id).get_status() != JobStatus.STARTED and time.monotonic() < deadline:
            time.sleep(0.05)
        send_stop_job_command(redis, job.id, serializer=SERIALIZER)

    stopper = threading.Thread(target=stop_when_started)
    stopper.start()
    started = time.monotonic()
    work()
    stopper.join()
    assert time.monotonic() - started < 15
    assert fetch(redis, job.id).get_status() == JobStatus.STOPPED
    assert fetch(redis, after.id).get_status() == JobStatus.FINISHED


def test_the_worker_ends_its_horse_when_it_stops(worker: FastWorker, queue: Queue, redis: Redis) -> None:
    queue.enqueue(horse_jobs.whoami)
    worker.work(burst=True)
    assert worker.horse is not None
    horse_pid = worker.horse.pid
    with pytest.raises(ProcessLookupError):
        os.kill(horse_pid, 0)


def test_the_worker_shows_in_rq_as_a_worker_with_its_counts(
    queue: Queue, redis: Redis, worker: FastWorker, work: Callable[[], None]
) -> None:
    for _ in range(3):
        queue.enqueue(horse_jobs.whoami)
    queue.enqueue(horse_jobs.fail)
    seen: dict[str, Any] = {}

    def look_while_busy() -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and "state" not in seen:
            # One read: the job may end between two, and its worker go idle without a job.
            state, current_job = redis.hmget(worker.key, "state", "current_job")
            if state == b"busy":
                seen["state"] = state
                seen["current_job"] = current_job
            time.sleep(0.001)

    watcher = threading.Thread(target=look_while_busy)
    watcher.start()
    work()
    watcher.join()
    assert seen.get("current_job"), "a busy worker names its current job"
    total = float(redis.hget(worker.key, "total_working_time") or 0)
    assert total > 0
    assert redis.hmget(worker.key, "successful_job_count", "failed_job_count") == [b"3", b"1"]


def test_rq_dashboard_shows_the_worker_busy_and_its_jobs_finished_or_failed(
    app: Flask, queue: Queue, work: Callable[[], None]
) -> None:
    client = app.test_client()
    slow = queue.enqueue(horse_jobs.sleep_for, 1)
    failed = queue.enqueue(horse_jobs.fail)
    seen: dict[str, Any] = {}

    def look_while_busy() -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline and "worker" not in seen:
            for worker in client.get("/rq/0/data/workers.json").get_json()["workers"]:
                if worker["state"] == "busy":
                    seen["worker"] = worker
            time.sleep(0.05)

    watcher = threading.Thread(target=look_while_busy)
    watcher.start()
    work()
    watcher.join()

    assert seen["worker"]["current_job"]["job_id"] == slow.id
    finished = client.get("/rq/0/data/jobs/default/finished/8/asc/1.json").get_json()["jobs"]
    assert slow.id in {job["id"] for job in finished}
    assert client.get(f"/rq/0/data/job/{slow.id}.json").get_json()["status"] == "finished"
    failures = client.get("/rq/0/data/jobs/default/failed/8/asc/1.json").get_json()["jobs"]
    assert failed.id in {job["id"] for job in failures}
    assert (
        "this job fails on purpose" in client.get(f"/rq/0/data/job/{failed.id}.json").get_json()["exc_info"]
    )


def test_a_large_job_reaches_the_horse_whole(queue: Queue, redis: Redis, work: Callable[[], None]) -> None:
    # Random text compresses badly: the job's data is a megabyte of bytes of every value.
    value = "".join(chr(code) for code in os.urandom(1 << 20) if code) + "é€😀"
    job = queue.enqueue(horse_jobs.echo, value)
    work()
    assert fetch(redis, job.id).return_value() == value
