"""worker.sh on SIGTERM: running jobs finish, then it exits 0."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.conftest import enqueue, get, running_workers, wait_for_job

EXIT_DEADLINE = 20.0

# Both worker modes: fork (a process per job) and fast (one long-lived work horse).
pytestmark = pytest.mark.parametrize("mode", ["fork", "fast"])


def test_sigterm_lets_the_running_job_finish_and_worker_sh_exits_0(
    server: str, redis_url: str, logs_dir: Path, mode: str
) -> None:
    with running_workers(redis_url, logs_dir, count=2, WORKER_MODE=mode) as workers:
        job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 3}})["job_id"]
        wait_for_job(server, job_id, until="started")

        workers.terminate()
        status = workers.wait(EXIT_DEADLINE)

    assert status == 0, f"worker.sh exit status {status} (None: still running after {EXIT_DEADLINE:g}s)"
    assert get(server, "/check_status", job_id=job_id).json()["status"] == "finished"
    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["counted"] == 3


def test_sigterm_stops_idle_workers_promptly_with_status_0(redis_url: str, logs_dir: Path, mode: str) -> None:
    with running_workers(redis_url, logs_dir, count=2, WORKER_MODE=mode) as workers:
        workers.terminate()
        started = time.monotonic()
        status = workers.wait(EXIT_DEADLINE)

    assert status == 0, f"worker.sh exit status {status} (None: still running after {EXIT_DEADLINE:g}s)"
    assert time.monotonic() - started < 10
