"""flask jobs ...: enqueue (checked as /enqueue checks), show, queues, workers, requeue-failed."""

from __future__ import annotations

import json
from collections.abc import Callable

import fakeredis
import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from rq.job import Job, JobStatus
from rq.worker import WorkerStatus

import app.cli as cli_module
from app import create_app
from app.queue import SERIALIZER
from app.sweeper import INFLIGHT_KEY
from app.worker import SimpleWorker


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """Return a runner of the app's flask commands."""
    return app.test_cli_runner()


def run(runner: FlaskCliRunner, *args: str) -> Result:
    """Run `flask jobs ARGS`."""
    return runner.invoke(args=["jobs", *args])


def enqueued_id(result: Result) -> str:
    """Return the job id `flask jobs enqueue` printed."""
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("Enqueued job ")
    return first.split()[2].rstrip(":")


def fetch(redis: fakeredis.FakeRedis, job_id: str) -> Job:
    """Return the job from Redis."""
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def test_enqueue_queues_a_registered_function_with_its_arguments(
    runner: FlaskCliRunner, redis: fakeredis.FakeRedis
) -> None:
    result = run(runner, "enqueue", "count", "--kwargs", '{"duration": 2}', "--queue", "high")

    job = fetch(redis, enqueued_id(result))
    assert result.output == f"Enqueued job {job.id}: count on queue high\n"
    assert job.origin == "high"
    assert job.kwargs == {"duration": 2}
    assert job.meta["function"] == "count"
    assert job.get_status() == JobStatus.QUEUED
    # The callbacks every job of the server has (last_error of retries, canceling dependents).
    assert job._failure_callback_name == "app.callbacks.on_failure"
    assert job._stopped_callback_name == "app.callbacks.on_stopped"
    # Watched by the sweeper, like a job from /enqueue.
    assert redis.zscore(INFLIGHT_KEY, job.id) is not None


def test_enqueue_takes_positional_arguments_as_json(
    runner: FlaskCliRunner, redis: fakeredis.FakeRedis
) -> None:
    result = run(runner, "enqueue", "some_long_function", "--arg", '{"hello": "world"}')

    job = fetch(redis, enqueued_id(result))
    assert job.args == [{"hello": "world"}]
    assert job.origin == "default"


@pytest.mark.parametrize("config", [{"JOB_TIMEOUT": 42, "RESULT_TTL": 43, "FAILURE_TTL": 44}])
def test_enqueue_gives_the_jobs_the_apis_defaults(runner: FlaskCliRunner, redis: fakeredis.FakeRedis) -> None:
    job = fetch(redis, enqueued_id(run(runner, "enqueue", "count")))

    assert (job.timeout, job.result_ttl, job.failure_ttl) == (42, 43, 44)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "No function named 'nope' is registered. Available: count,"),
        (
            ["count", "--kwargs", '{"duration": "long"}'],
            "count: argument 'duration' must be number, not string.",
        ),
        (["count", "--kwargs", '{"speed": 1}'], "count: got an unexpected keyword argument 'speed'."),
        (["count", "--kwargs", "[1]"], "kwargs must be a JSON object."),
        (["count", "--queue", "urgent"], "queue must be one of high, default, low."),
    ],
    ids=["unknown-function", "wrong-type", "unknown-argument", "kwargs-not-object", "unknown-queue"],
)
def test_enqueue_refuses_what_the_api_refuses_with_its_message(
    runner: FlaskCliRunner, redis: fakeredis.FakeRedis, args: list[str], message: str
) -> None:
    result = run(runner, "enqueue", *args)

    assert result.exit_code == 1
    assert f"Error: {message}" in result.output
    assert not redis.keys("rq:job:*")


@pytest.mark.parametrize("option", ["--arg", "--kwargs"])
def test_enqueue_refuses_an_option_that_is_not_json(runner: FlaskCliRunner, option: str) -> None:
    result = run(runner, "enqueue", "count", option, "five")

    assert result.exit_code == 2
    assert f"Invalid value for {option}" in result.output
    assert "is not JSON" in result.output


def work_while_waiting(monkeypatch: pytest.MonkeyPatch, work: Callable[[], None]) -> None:
    """Make --wait's pauses run the queued jobs, as a worker would meanwhile."""
    monkeypatch.setattr(cli_module.time, "sleep", lambda seconds: work())


def test_enqueue_wait_shows_progress_and_prints_the_result(
    runner: FlaskCliRunner, work: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    work_while_waiting(monkeypatch, work)

    result = run(runner, "enqueue", "count", "--kwargs", '{"duration": 0}', "--wait")

    assert result.exit_code == 0, result.output
    job_id = enqueued_id(result)
    assert f"Job {job_id}" in result.output  # the progress bar's label
    printed = result.stdout[result.stdout.index("{") :]
    assert json.loads(printed)["counted"] == 1


def test_enqueue_wait_reports_a_failure_with_exit_status_1(
    runner: FlaskCliRunner, work: Callable[[], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    work_while_waiting(monkeypatch, work)

    result = run(runner, "enqueue", "count", "--kwargs", '{"duration": -1}', "--wait")

    assert result.exit_code == 1
    job_id = result.stdout.split()[2].rstrip(":")
    assert (
        f"Job {job_id} failed: ValueError: duration must be between 0 and 3600 seconds, not -1"
        in result.stderr
    )


def test_follow_moves_the_bar_with_the_jobs_progress(
    app: Flask, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app.app_context():
        job = cli_module.create_job(cli_module.check_submission({"function": "count"}))
    steps = iter([40, 70, None])

    def tick(seconds: float) -> None:
        step = next(steps)
        if step is None:
            redis.hset(job.key, "status", JobStatus.FINISHED.value)
        else:
            job.meta["progress"] = {"percent": float(step)}
            job.save_meta()  # type: ignore[no-untyped-call]

    monkeypatch.setattr(cli_module.time, "sleep", tick)
    updates: list[int] = []
    monkeypatch.setattr(
        "click._termui_impl.ProgressBar.update", lambda self, n, current_item=None: updates.append(n)
    )

    with app.app_context():
        cli_module.follow(job)

    assert updates == [40, 30, 30]


def test_show_describes_a_job(runner: FlaskCliRunner) -> None:
    job_id = enqueued_id(run(runner, "enqueue", "count", "--kwargs", '{"duration": 0}'))

    result = run(runner, "show", job_id)

    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.output.splitlines())
    assert lines["job_id"] == job_id
    assert lines["status"] == "queued"
    assert lines["function"] == "count"
    assert lines["started_at"] == "-"
    assert "status_url" not in lines


def test_show_json_has_the_result_of_a_finished_job(runner: FlaskCliRunner, work: Callable[[], None]) -> None:
    job_id = enqueued_id(run(runner, "enqueue", "count", "--kwargs", '{"duration": 0}'))
    work()

    result = run(runner, "show", job_id, "--json")

    body = json.loads(result.output)
    assert body["status"] == "finished"
    assert body["result"]["counted"] == 1


def test_show_gives_the_error_of_a_failed_job(runner: FlaskCliRunner, work: Callable[[], None]) -> None:
    job_id = enqueued_id(run(runner, "enqueue", "count", "--kwargs", '{"duration": -1}'))
    work()

    body = json.loads(run(runner, "show", job_id, "--json").output)

    assert body["status"] == "failed"
    assert body["error"].startswith("ValueError: duration must be")


@pytest.mark.parametrize(
    ("job_id", "message"), [("unknown-id", "No job unknown-id"), ("bad id!", "job_id must be 1-128")]
)
def test_show_of_an_unknown_or_malformed_id_fails(runner: FlaskCliRunner, job_id: str, message: str) -> None:
    result = run(runner, "show", job_id)

    assert result.exit_code == 1
    assert message in result.output


def test_queues_lists_each_queue_with_its_counts(runner: FlaskCliRunner, work: Callable[[], None]) -> None:
    run(runner, "enqueue", "count", "--kwargs", '{"duration": -1}', "--queue", "low")
    work()
    run(runner, "enqueue", "count", "--queue", "high")
    run(runner, "enqueue", "count", "--queue", "high")

    result = run(runner, "queues")

    assert result.exit_code == 0, result.output
    header, *rows = [line.split() for line in result.output.splitlines()]
    assert header == [
        "QUEUE",
        "QUEUED",
        "OLDEST",
        "STARTED",
        "DEFERRED",
        "SCHEDULED",
        "FINISHED",
        "FAILED",
        "CANCELED",
    ]
    table = {row[0]: row for row in rows}
    assert list(table) == ["high", "default", "low"]
    assert table["high"][1] == "2"
    assert table["high"][2].endswith("s")
    assert table["default"][1:3] == ["0", "-"]
    assert table["low"][7] == "1"


def test_queues_json(runner: FlaskCliRunner) -> None:
    rows = json.loads(run(runner, "queues", "--json").output)

    assert [row["name"] for row in rows] == ["high", "default", "low"]


def test_workers_says_when_there_are_none(runner: FlaskCliRunner) -> None:
    result = run(runner, "workers")

    assert result.exit_code == 0
    assert "No workers" in result.output


def test_workers_lists_each_worker(app: Flask, runner: FlaskCliRunner, redis: fakeredis.FakeRedis) -> None:
    worker = SimpleWorker(["high", "low"], name="cli-worker", connection=redis, app=app)
    worker.register_birth()
    worker.set_state(WorkerStatus.IDLE)

    result = run(runner, "workers")
    as_json = json.loads(run(runner, "workers", "--json").output)

    assert result.exit_code == 0, result.output
    header, row = [line.split() for line in result.output.splitlines()]
    assert header[:4] == ["NAME", "STATE", "QUEUES", "JOB"]
    assert row[:4] == ["cli-worker", "idle", "high,low", "-"]
    assert as_json[0]["name"] == "cli-worker"


def test_requeue_failed_puts_failed_jobs_back_on_their_queues(
    runner: FlaskCliRunner, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    failing = [
        enqueued_id(run(runner, "enqueue", "count", "--kwargs", '{"duration": -1}', "--queue", queue))
        for queue in ("high", "low")
    ]
    work()

    result = run(runner, "requeue-failed", "--queue", "low")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"low: requeued 1 job(s): {failing[1]}", "Requeued 1 job(s)."]
    assert fetch(redis, failing[1]).get_status() == JobStatus.QUEUED
    assert fetch(redis, failing[0]).get_status() == JobStatus.FAILED

    result = run(runner, "requeue-failed")
    assert result.output.splitlines()[-1] == "Requeued 1 job(s)."
    assert fetch(redis, failing[0]).get_status() == JobStatus.QUEUED


def test_requeue_failed_refuses_an_unknown_queue(runner: FlaskCliRunner) -> None:
    result = run(runner, "requeue-failed", "--queue", "urgent")

    assert result.exit_code == 2
    assert "'urgent' is not one of high, default, low" in result.output


@pytest.mark.parametrize(
    "args", [["queues"], ["workers"], ["show", "abc"], ["enqueue", "count"], ["requeue-failed"]]
)
def test_an_unreachable_redis_is_one_line_and_exit_status_1(args: list[str]) -> None:
    app = create_app(
        {"APP_ENV": "testing", "REDIS_URL": "redis://127.0.0.1:1/0", "REDIS_SOCKET_TIMEOUT": 0.2}
    )

    result = app.test_cli_runner().invoke(args=["jobs", *args])

    assert result.exit_code == 1
    assert result.output.startswith("Error: Redis does not answer:")


def test_the_commands_are_listed_under_flask_jobs(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["jobs", "--help"])

    for command in ("enqueue", "show", "queues", "workers", "requeue-failed"):
        assert command in result.output
