"""`python -m app.work`: one worker of either mode, started the way worker.sh starts it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus

from app import work
from app.queue import SERIALIZER

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("chosen", "environment", "mode"),
    [(None, None, "fork"), (None, "fast", "fast"), ("fork", "fast", "fork")],
)
def test_the_mode_comes_from_the_command_line_then_worker_mode(
    chosen: str | None, environment: str | None, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if environment is None:
        monkeypatch.delenv("WORKER_MODE", raising=False)
    else:
        monkeypatch.setenv("WORKER_MODE", environment)
    assert work.worker_mode(chosen) == mode


def test_an_unknown_worker_mode_is_refused_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKER_MODE", "turbo")
    assert work.main([]) == 2
    assert "WORKER_MODE must be one of fast, fork, not 'turbo'" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["fork", "fast"])
def test_a_burst_worker_runs_the_queued_jobs_then_exits_0(redis_server_url: str, mode: str) -> None:
    connection = Redis.from_url(redis_server_url)
    connection.flushdb()
    queue = Queue("default", connection=connection, serializer=SERIALIZER)
    jobs = [queue.enqueue("app.jobs.noop.noop") for _ in range(3)]
    finished = subprocess.run(
        [sys.executable, "-m", "app.work", "--mode", mode, "--burst", "--name", f"test-{mode}"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": redis_server_url, "APP_ENV": "production", "LOG_FILE": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    for job in jobs:
        assert Job.fetch(job.id, connection=connection).get_status() == JobStatus.FINISHED
    assert Worker.find_by_key(Worker.redis_worker_namespace_prefix + f"test-{mode}", connection=connection)
