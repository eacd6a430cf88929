"""A worker killed mid-job (kill -9 of it and its work horse): its job fails, or is retried, in seconds."""

from __future__ import annotations

import os
import signal
import time
from contextlib import suppress
from pathlib import Path

from redis import Redis
from rq import Worker

from tests.integration.conftest import (
    HTTP_TIMEOUT,
    JOB_TIMEOUT,
    descendants,
    enqueue,
    get,
    running_workers,
    wait_for,
    wait_for_job,
)

# By design 10-20 s (see app.worker.Worker); the rest is slack for a loaded machine.
ABANDONED_DEADLINE = 45.0


def kill_worker_running(redis_url: str, job_id: str) -> None:
    """SIGKILL the RQ worker running the job, its work horse and any other child (its scheduler)."""
    with Redis.from_url(redis_url, socket_timeout=HTTP_TIMEOUT) as connection:
        worker = wait_for(
            lambda: next(
                (w for w in Worker.all(connection=connection) if w.get_current_job_id() == job_id), None
            ),
            JOB_TIMEOUT,
            message=f"the worker running job {job_id}",
        )
    assert worker.pid is not None
    family = descendants(worker.pid)
    assert family, f"worker {worker.name} (pid {worker.pid}) has no work horse"
    # The worker first: alive, it would see its horse die and fail the job itself.
    for pid in [worker.pid, *family]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_job_of_a_killed_worker_fails_as_abandoned_within_seconds(
    server: str, redis_url: str, logs_dir: Path
) -> None:
    with running_workers(redis_url, logs_dir, count=2):
        job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 300}})["job_id"]
        wait_for_job(server, job_id, until="started")

        kill_worker_running(redis_url, job_id)
        killed = time.monotonic()
        seen = wait_for_job(server, job_id, until="failed", timeout=ABANDONED_DEADLINE)
        failed_after = time.monotonic() - killed

        # The surviving worker carries on.
        after = enqueue(server, {"function": "count", "kwargs": {"duration": 0}})["job_id"]
        wait_for_job(server, after)

    assert "abandoned" in seen[-1]["error"].lower(), seen[-1]
    assert failed_after < ABANDONED_DEADLINE
    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 409, result.text


def test_job_of_a_killed_worker_is_retried_by_another_worker_when_its_retry_allows(
    server: str, redis_url: str, logs_dir: Path
) -> None:
    with running_workers(redis_url, logs_dir, count=2):
        body = {"function": "count", "kwargs": {"duration": 6}, "retry": {"max": 1, "intervals": [0]}}
        job_id = enqueue(server, body)["job_id"]
        wait_for_job(server, job_id, until="started")

        kill_worker_running(redis_url, job_id)
        # Never "failed" on the way: wait_for_job stops at any other end.
        wait_for_job(server, job_id, until="finished", timeout=ABANDONED_DEADLINE + JOB_TIMEOUT)

    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["counted"] == 6
