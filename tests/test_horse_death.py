"""A job whose work horse dies still gets its failure callback, in the fork and the fast mode.

RQ runs none when the process running a job is killed (the OOM killer, a segfault, a hard
kill past the timeout): without it, what waits on the job would stay deferred for ever.
These tests fork work horses, so they run on a real redis-server.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus

from app import callbacks
from app.jobs.progress import PROGRESS_KEY
from app.queue import SERIALIZER, get_queue
from app.status import CANCELED_BECAUSE_KEY, LAST_ERROR_KEY
from app.worker import FastWorker, Worker
from tests import horse_jobs

MODES = {"fork": Worker, "fast": FastWorker}
ON_FAILURE = Callback(callbacks.on_failure)


@pytest.fixture
def redis(real_redis: Redis) -> Redis:
    """Put the app (conftest's `app`) on the real Redis: a forked horse cannot see a FakeRedis."""
    return real_redis


@pytest.fixture
def queue(app: Flask) -> Queue:
    """Return the app's default queue."""
    with app.app_context():
        return get_queue("default")


@pytest.fixture(params=list(MODES))
def work(request: pytest.FixtureRequest, app: Flask, real_redis: Redis) -> Callable[[], None]:
    """Return a function that runs every queued job with a worker of each mode, then returns."""
    worker = MODES[request.param](app.config["QUEUES"], connection=real_redis, app=app)
    worker.job_monitoring_interval = 1
    return lambda: worker.work(burst=True)


def fetch(redis: Redis, job_id: str) -> Job:
    """Return the job as it is in Redis now."""
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def test_a_job_whose_horse_is_killed_cancels_what_waits_on_it(
    queue: Queue, real_redis: Redis, work: Callable[[], None]
) -> None:
    parent = queue.enqueue(horse_jobs.crash, on_failure=ON_FAILURE)
    child = queue.enqueue(horse_jobs.whoami, depends_on=parent)

    work()

    assert fetch(real_redis, parent.id).get_status() == JobStatus.FAILED
    child = fetch(real_redis, child.id)
    assert child.get_status() == JobStatus.CANCELED
    assert parent.id in child.meta[CANCELED_BECAUSE_KEY]


def test_a_try_whose_horse_is_killed_keeps_its_error_for_the_retry(
    queue: Queue, real_redis: Redis, work: Callable[[], None]
) -> None:
    job = queue.enqueue(horse_jobs.report_then_crash, retry=Retry(max=2, interval=600), on_failure=ON_FAILURE)

    work()

    job = fetch(real_redis, job.id)
    assert job.get_status() == JobStatus.SCHEDULED
    assert job.meta[LAST_ERROR_KEY] == "HorseDied: signal 9 (SIGKILL)"
    assert job.meta[PROGRESS_KEY]["message"] == "half way"  # what the horse wrote is kept


def test_a_fast_mode_job_killed_past_its_timeout_cancels_what_waits_on_it(
    app: Flask, queue: Queue, real_redis: Redis
) -> None:
    worker = FastWorker(app.config["QUEUES"], connection=real_redis, app=app)
    worker.job_monitoring_interval = 1
    worker.HARD_KILL_GRACE = 1.0
    parent = queue.enqueue(horse_jobs.ignore_timeout, 60, job_timeout=1, on_failure=ON_FAILURE)
    child = queue.enqueue(horse_jobs.whoami, depends_on=parent)

    worker.work(burst=True)

    assert fetch(real_redis, parent.id).get_status() == JobStatus.FAILED
    assert fetch(real_redis, child.id).get_status() == JobStatus.CANCELED
