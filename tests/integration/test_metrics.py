"""/metrics, /health, /ready and the logs of a real gunicorn and worker.sh, sharing a metrics directory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import metrics
from app.redis_server import free_port
from tests.integration.conftest import (
    BIN,
    CHILDREN,
    HTTP_TIMEOUT,
    START_TIMEOUT,
    Child,
    answers,
    enqueue,
    get,
    log_path,
    running_gunicorn,
    running_workers,
    service_env,
    wait_for,
    wait_for_job,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Stack:
    """gunicorn and worker.sh of this module, with their logs and metrics directory."""

    base_url: str
    gunicorn_log: Path
    worker_log: Path
    metrics_dir: Path


@pytest.fixture(scope="module")
def stack(redis_url: str, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Run gunicorn (2 processes) and `worker.sh 1` with one metrics directory and JSON logs."""
    metrics_dir = tmp_path_factory.mktemp("metrics")
    with pytest.MonkeyPatch.context() as patch:
        # service_env passes the test's environment on to gunicorn and worker.sh.
        patch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
        patch.setenv("LOG_FORMAT", "json")
        patch.setenv("PERIODIC_JOBS", "[]")
        with running_gunicorn(redis_url, logs_dir) as base_url:
            gunicorn = [child for child in CHILDREN if child.name == "gunicorn"][-1]
            with running_workers(redis_url, logs_dir, count=1) as workers:
                yield Stack(base_url, gunicorn.service.log, workers.service.log, metrics_dir)


def scrape(base_url: str) -> Samples:
    """GET /metrics and return its samples keyed by name and labels."""
    response = get(base_url, "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value, 0 when the series does not exist."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_add_up_the_web_and_worker_processes_after_real_jobs(stack: Stack) -> None:
    finished = enqueue(stack.base_url, {"function": "count", "kwargs": {"duration": 0}, "queue": "high"})
    failed = enqueue(stack.base_url, {"function": "count", "kwargs": {"duration": -1}, "queue": "high"})
    echoed = enqueue(stack.base_url, {"hello": "metrics"})
    wait_for_job(stack.base_url, finished["job_id"])
    wait_for_job(stack.base_url, failed["job_id"], until="failed")
    wait_for_job(stack.base_url, echoed["job_id"])
    count = {"function": "count", "queue": "high"}
    echo = {"function": "some_long_function", "queue": "default"}

    # The worker records a job right after its work horse ends: a moment after its status.
    def recorded() -> Samples | None:
        samples = scrape(stack.base_url)
        done = value(samples, "rq_jobs_finished_total", **echo) and value(
            samples, "rq_jobs_failed_total", **count
        )
        return samples if done else None

    samples = wait_for(recorded, START_TIMEOUT, message="the worker's job counters in /metrics")

    assert value(samples, "rq_jobs_enqueued_total", **count) == 2
    assert value(samples, "rq_jobs_enqueued_total", **echo) == 1
    assert value(samples, "rq_jobs_finished_total", **count) == 1
    assert value(samples, "rq_jobs_failed_total", **count) == 1
    assert value(samples, "rq_jobs_finished_total", **echo) == 1
    assert value(samples, "rq_job_duration_seconds_count", **count, status="finished") == 1
    assert value(samples, "rq_job_duration_seconds_count", **count, status="failed") == 1
    # ECHO_DELAY_SECONDS=1 in the tests' environment.
    assert value(samples, "rq_job_duration_seconds_sum", **echo, status="finished") >= 1
    enqueued = {"method": "POST", "route": "/enqueue", "status": "202"}
    assert value(samples, "http_requests_total", **enqueued) == 3
    assert value(samples, "http_request_duration_seconds_count", **enqueued) == 3
    assert value(samples, "rq_redis_up") == 1
    assert value(samples, "rq_registry_jobs", queue="high", registry="failed") >= 1
    assert value(samples, "rq_workers", state="idle") + value(samples, "rq_workers", state="busy") >= 1
    files = {path.name for path in stack.metrics_dir.iterdir()}
    assert any(name.startswith("counter_") for name in files) and any(
        name.startswith("histogram_") for name in files
    )


def test_every_gunicorn_process_answers_the_same_job_counts(stack: Stack) -> None:
    # Each scrape may reach another of gunicorn's processes; all read the same files.
    job = enqueue(stack.base_url, {"function": "count", "kwargs": {"duration": 0}, "queue": "low"})
    wait_for_job(stack.base_url, job["job_id"])
    labels = {"function": "count", "queue": "low"}
    wait_for(
        lambda: value(scrape(stack.base_url), "rq_jobs_finished_total", **labels) == 1,
        START_TIMEOUT,
        message="the low queue's job in /metrics",
    )
    seen = set()
    for _ in range(12):
        # A new connection each time: gunicorn hands it to any of its processes.
        samples = scrape(stack.base_url)
        seen.add(
            (
                value(samples, "rq_jobs_finished_total", **labels),
                value(samples, "rq_jobs_enqueued_total", **labels),
            )
        )

    assert seen == {(1.0, 1.0)}


def test_queue_depth_and_oldest_age_are_read_from_redis_at_the_scrape(stack: Stack) -> None:
    # The only worker is busy with the first job: the second one waits on its queue.
    busy = enqueue(stack.base_url, {"function": "count", "kwargs": {"duration": 3}, "queue": "high"})
    wait_for_job(stack.base_url, busy["job_id"], until="started")
    waiting = enqueue(stack.base_url, {"function": "count", "kwargs": {"duration": 0}, "queue": "low"})

    samples = scrape(stack.base_url)

    assert value(samples, "rq_queue_length", queue="low") == 1
    assert value(samples, "rq_queue_oldest_job_age_seconds", queue="low") >= 0
    assert value(samples, "rq_registry_jobs", queue="high", registry="started") == 1
    assert value(samples, "rq_workers", state="busy") >= 1
    wait_for_job(stack.base_url, waiting["job_id"])
    assert value(scrape(stack.base_url), "rq_queue_length", queue="low") == 0


def test_health_and_ready_answer_with_the_workers_running(stack: Stack) -> None:
    health = get(stack.base_url, "/health")
    ready = get(stack.base_url, "/ready")

    assert health.status_code == 200
    assert ready.status_code == 200, ready.text
    assert all(count >= 1 for count in ready.json()["checks"]["workers"].values())


def test_one_json_log_format_with_request_and_job_ids(stack: Stack) -> None:
    response = requests.get(
        f"{stack.base_url}/functions", headers={"X-Request-ID": "it-req-1"}, timeout=HTTP_TIMEOUT
    )
    assert response.headers["X-Request-ID"] == "it-req-1"
    job = enqueue(stack.base_url, {"hello": "logs"})
    wait_for_job(stack.base_url, job["job_id"])

    def access_line() -> dict[str, object] | None:
        for line in stack.gunicorn_log.read_text().splitlines():
            if '"it-req-1"' in line:
                parsed: dict[str, object] = json.loads(line)
                return parsed
        return None

    line = wait_for(access_line, START_TIMEOUT, message="gunicorn's access line of the request")
    assert line["logger"] == "gunicorn.access"
    assert {"method": "GET", "path": "/functions", "status": 200}.items() <= line.items()
    worker_lines = [
        json.loads(line) for line in stack.worker_log.read_text().splitlines() if line.startswith("{")
    ]
    assert worker_lines, "the worker wrote no JSON lines"
    assert {line["logger"] for line in worker_lines} >= {"rq.worker", "app.jobs.echo"}
    echoed = [
        line for line in worker_lines if line["logger"] == "app.jobs.echo" and line["job_id"] == job["job_id"]
    ]
    assert echoed, "the job's own line does not carry its id"
    # Every line of gunicorn's log is JSON too: one format for the whole process.
    for raw in stack.gunicorn_log.read_text().splitlines():
        assert json.loads(raw)["level"]


def test_the_standalone_dashboard_reads_app_rqconfig(redis_url: str, logs_dir: Path) -> None:
    # `rq-dashboard --config app.rqconfig --json`, as docker-compose.yml runs it.
    port = free_port()
    child = Child(
        "rq-dashboard",
        [
            str(BIN / "rq-dashboard"),
            "--config",
            "app.rqconfig",
            "--json",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
        ],
        service_env(redis_url),
        log_path(logs_dir, "rq-dashboard"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: child.check_alive() and answers(f"{url}/"), START_TIMEOUT, message="rq-dashboard")
        queues = requests.get(f"{url}/0/data/queues.json", timeout=HTTP_TIMEOUT)
        assert queues.status_code == 200, queues.text
        assert {"high", "default", "low"} <= {queue["name"] for queue in queues.json()["queues"]}
    finally:
        child.stop()


def test_gunicorn_removes_the_files_of_processes_that_exited(stack: Stack) -> None:
    # What is left when the stack stops is cleaned up by the next start, here by hand.
    stale = stack.metrics_dir / f"counter_{metrics.HOST}-{_dead_pid()}.db"
    stale.write_bytes(b"")
    metrics.remove_dead_files(stack.metrics_dir)

    assert not stale.exists()
    assert any(stack.metrics_dir.iterdir())  # the live processes' files stay


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
