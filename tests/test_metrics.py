"""GET /metrics: request, enqueue and job counters, job durations, and queue gauges from Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from rq import Retry

from app import create_app, metrics
from app.queue import get_queue
from app.worker import SimpleWorker
from tests.conftest import enqueue

ROOT = Path(__file__).resolve().parents[1]


def scrape(client: FlaskClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics and return its samples keyed by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """Return one sample's value, 0 when the series does not exist yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_is_the_prometheus_text_format(client: FlaskClient) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert "# TYPE rq_jobs_finished_total counter" in text
    assert "# TYPE rq_job_duration_seconds histogram" in text
    assert "# TYPE rq_queue_length gauge" in text


def test_metrics_speaks_openmetrics_when_asked(client: FlaskClient) -> None:
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})

    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


def test_requests_are_counted_by_route_pattern_method_and_status(client: FlaskClient) -> None:
    before = scrape(client)
    client.get("/jobs/some-job")
    client.get("/jobs/another-job")
    client.get("/no/such/route")
    after = scrape(client)

    route = {"method": "GET", "route": "/jobs/<job_id>", "status": "404"}
    assert value(after, "http_requests_total", **route) - value(before, "http_requests_total", **route) == 2
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert (
        value(after, "http_requests_total", **unmatched) - value(before, "http_requests_total", **unmatched)
        == 1
    )
    count = "http_request_duration_seconds_count"
    assert value(after, count, **route) - value(before, count, **route) == 2


def test_enqueued_jobs_are_counted_by_function_and_queue_but_not_replays(client: FlaskClient) -> None:
    labels = {"function": "count", "queue": "high"}
    before = value(scrape(client), "rq_jobs_enqueued_total", **labels)
    body = {"function": "count", "kwargs": {"duration": 0}, "queue": "high"}
    enqueue(client, body)
    headers = {"Idempotency-Key": "metrics-replay"}
    assert client.post("/enqueue", json=body, headers=headers).status_code == 202
    replay = client.post("/enqueue", json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    client.post("/enqueue", json={"function": "nope"})

    assert value(scrape(client), "rq_jobs_enqueued_total", **labels) - before == 2


def test_a_worker_counts_finished_and_failed_jobs_and_times_them(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    before = scrape(client)
    enqueue(client, {"function": "count", "kwargs": {"duration": 0}, "queue": "low"})
    enqueue(client, {"function": "count", "kwargs": {"duration": -1}, "queue": "low"})
    enqueue(client, {"function": "count", "kwargs": {"duration": -2}, "queue": "low"})
    work()
    after = scrape(client)

    labels = {"function": "count", "queue": "low"}
    assert (
        value(after, "rq_jobs_finished_total", **labels) - value(before, "rq_jobs_finished_total", **labels)
        == 1
    )
    assert (
        value(after, "rq_jobs_failed_total", **labels) - value(before, "rq_jobs_failed_total", **labels) == 2
    )
    for status, runs in (("finished", 1), ("failed", 2)):
        timed = {**labels, "status": status}
        count = "rq_job_duration_seconds_count"
        assert value(after, count, **timed) - value(before, count, **timed) == runs
        bucket = {**timed, "le": "+Inf"}
        assert value(after, "rq_job_duration_seconds_bucket", **bucket) >= runs


def test_a_failed_try_that_is_retried_counts_as_retried_not_failed(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    labels = {"function": "count", "queue": "high"}
    before = scrape(client)
    with app.app_context():
        get_queue("high").enqueue_call(
            func="app.jobs.count.count",
            kwargs={"duration": -1},
            retry=Retry(max=1),
            meta={"function": "count"},
        )
    # One try only: the retry waits on the queue.
    SimpleWorker(["high"], connection=redis, app=app).work(burst=True, max_jobs=1)
    after = scrape(client)

    assert (
        value(after, "rq_jobs_retried_total", **labels) - value(before, "rq_jobs_retried_total", **labels)
        == 1
    )
    assert value(after, "rq_jobs_failed_total", **labels) == value(before, "rq_jobs_failed_total", **labels)
    assert value(after, "rq_queue_length", queue="high") == 1


def test_queue_gauges_are_read_from_redis_at_each_scrape(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    enqueue(client, {"function": "count", "kwargs": {"duration": 0}})
    SimpleWorker(["default"], name="metrics-worker", connection=redis, app=app).register_birth()

    samples = scrape(client)

    assert value(samples, "rq_redis_up") == 1
    assert value(samples, "rq_queue_length", queue="default") == 2
    assert value(samples, "rq_queue_length", queue="high") == 0
    assert value(samples, "rq_queue_oldest_job_age_seconds", queue="default") >= 0
    assert ("rq_queue_oldest_job_age_seconds", frozenset({("queue", "default")})) in samples
    assert value(samples, "rq_registry_jobs", queue="default", registry="finished") == 0
    assert sum(value for (name, _), value in samples.items() if name == "rq_workers") == 1


def test_metrics_answer_while_redis_is_unreachable_with_redis_up_0() -> None:
    app = create_app(
        {"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_TIMEOUT": 0.2}
    )

    samples = scrape(app.test_client())

    assert value(samples, "rq_redis_up") == 0
    assert not any(name == "rq_queue_length" for name, _ in samples)


def test_job_metrics_are_labelled_with_the_registered_name(app: Flask, redis: fakeredis.FakeRedis) -> None:
    with app.app_context():
        get_queue("default").enqueue_call(func="app.jobs.count.count", kwargs={"duration": 0})
    SimpleWorker(["default"], connection=redis, app=app).work(burst=True)

    # Without the registered name in its meta (a job enqueued by other means): the function's path.
    samples = scrape(app.test_client())
    assert value(samples, "rq_jobs_finished_total", function="app.jobs.count.count", queue="default") >= 1


def test_dead_processes_files_are_removed_and_live_or_foreign_ones_kept(tmp_path: Path) -> None:
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    dead = tmp_path / f"counter_{metrics.process_id(exited.pid)}.db"
    alive = tmp_path / f"counter_{metrics.process_id(os.getpid())}.db"
    foreign = tmp_path / f"counter_another-host-{exited.pid}.db"
    for path in (dead, alive, foreign):
        path.write_bytes(b"")

    assert metrics.remove_dead_files(tmp_path) == [dead]
    assert sorted(tmp_path.iterdir()) == sorted([alive, foreign])


def test_processes_sharing_the_directory_are_added_up(tmp_path: Path) -> None:
    # Each process records in its own files (named by machine and pid); a scrape adds them up.
    script = textwrap.dedent(
        """
        import sys
        from app import metrics
        metrics.use_multiprocess()
        metrics.JOBS_FINISHED.labels(function="count", queue="default").inc(3)
        metrics.JOB_DURATION.labels(function="count", queue="default", status="finished").observe(0.2)
        print("recorded", flush=True)
        sys.stdin.read()  # stay alive until the test has read the files
        """
    )
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path)}
    processes = []
    for _ in range(2):
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdout is not None
        assert process.stdout.readline() == "recorded\n"
    try:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(tmp_path))
        assert (
            registry.get_sample_value("rq_jobs_finished_total", {"function": "count", "queue": "default"})
            == 6
        )
        assert (
            registry.get_sample_value(
                "rq_job_duration_seconds_count",
                {"function": "count", "queue": "default", "status": "finished"},
            )
            == 2
        )
        assert all(metrics.HOST in path.name for path in tmp_path.iterdir())
    finally:
        for process in processes:
            process.communicate(timeout=60)


def test_the_worker_of_a_real_deployment_records_in_the_shared_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # app.worker.Worker outside tests: metrics go to PROMETHEUS_MULTIPROC_DIR, where /metrics reads.
    script = textwrap.dedent(
        """
        import fakeredis
        from app import create_app
        from app.worker import SimpleWorker
        from app.queue import SERIALIZER
        from rq import Queue

        redis = fakeredis.FakeRedis()
        Queue("default", connection=redis, serializer=SERIALIZER).enqueue_call(
            func="app.jobs.count.count", kwargs={"duration": 0}, meta={"function": "count"}
        )
        SimpleWorker(["default"], connection=redis).work(burst=True)
        """
    )
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path), "APP_ENV": "production", "LOG_FILE": ""}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("rq_jobs_finished_total", {"function": "count", "queue": "default"}) == 1
