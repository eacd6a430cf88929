"""worker.sh in the fast mode (WORKER_MODE=fast), over HTTP: jobs run, stop, and survive crashes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from redis import Redis
from rq import Worker

from tests.integration.conftest import (
    HTTP_TIMEOUT,
    JOB_TIMEOUT,
    Child,
    descendants,
    enqueue,
    get,
    running_workers,
    wait_for,
    wait_for_job,
)


@pytest.fixture(scope="module")
def fast_workers(redis_url: str, logs_dir: Path) -> Iterator[Child]:
    """Run `WORKER_MODE=fast ./worker.sh 1` for the module's tests."""
    with running_workers(redis_url, logs_dir, count=1, WORKER_MODE="fast") as child:
        yield child


def worker_pids(redis_url: str) -> set[int]:
    """Return the pids of the RQ workers registered in the Redis."""
    with Redis.from_url(redis_url, socket_timeout=HTTP_TIMEOUT) as connection:
        return {worker.pid for worker in Worker.all(connection=connection) if worker.pid}


def horse_of(redis_url: str, workers: Child) -> int:
    """Return the pid of the work horse: the child of a worker that leads its own process group."""
    candidates = {
        pid
        for worker_pid in worker_pids(redis_url) & set(descendants(workers.pid))
        for pid in descendants(worker_pid)
        if os.getpgid(pid) == pid
    }
    assert len(candidates) == 1, f"expected one work horse, found {candidates}"
    return candidates.pop()


def test_jobs_posted_over_http_run_and_report_progress(server: str, fast_workers: Child) -> None:
    job_id = enqueue(server, {"function": "some_long_function", "args": [{"n": 1}]})["job_id"]
    seen = wait_for_job(server, job_id)
    assert any(body.get("progress") for body in seen)
    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["result"] == {"n": 1}


def test_a_running_job_can_be_stopped_and_the_worker_goes_on(server: str, fast_workers: Child) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 30}})["job_id"]
    wait_for_job(server, job_id, until="started")
    response = requests.post(f"{server}/jobs/{job_id}/cancel", timeout=HTTP_TIMEOUT * 3)
    assert response.status_code in (200, 202), response.text
    wait_for_job(server, job_id, until="stopped", timeout=JOB_TIMEOUT)
    after = enqueue(server, {"function": "noop"})["job_id"]
    wait_for_job(server, after)


def test_a_killed_horse_fails_its_job_and_a_new_one_takes_the_next(
    server: str, redis_url: str, fast_workers: Child
) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 30}})["job_id"]
    wait_for_job(server, job_id, until="started")
    horse = horse_of(redis_url, fast_workers)
    os.kill(horse, signal.SIGKILL)
    wait_for_job(server, job_id, until="failed")
    body = get(server, "/check_status", job_id=job_id).json()
    assert "Work horse died" in body["error"], body
    after = enqueue(server, {"function": "noop"})["job_id"]
    wait_for_job(server, after)
    assert fast_workers.check_alive()
    wait_for(lambda: horse_of(redis_url, fast_workers) != horse, JOB_TIMEOUT, message="a new work horse")
