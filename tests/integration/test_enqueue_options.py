"""Per-enqueue options over HTTP with real workers: retries, timeouts, schedules, chains, priority."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.conftest import (
    HTTP_TIMEOUT,
    Child,
    enqueue,
    get,
    listening_workers,
    running_workers,
    wait_for_job,
)

COUNT = {"function": "count", "kwargs": {"duration": 0}}
COUNT_ERROR = "ValueError: duration must be between 0 and 3600 seconds, not -1"


@pytest.fixture
def worker(redis_url: str, logs_dir: Path) -> Iterator[Child]:
    """Run one worker (with its scheduler) for the test."""
    with running_workers(redis_url, logs_dir, count=1) as child:
        yield child


def moment(value: str) -> datetime:
    """Parse an ISO-8601 time from a response."""
    return datetime.fromisoformat(value)


@pytest.mark.usefixtures("worker")
def test_retried_job_shows_each_attempt_and_fails_after_the_last(server: str) -> None:
    body = {"function": "count", "kwargs": {"duration": -1}, "retry": {"max": 2, "intervals": [1]}}
    job_id = enqueue(server, body)["job_id"]

    seen = wait_for_job(server, job_id, until="failed")

    final = seen[-1]
    assert (final["attempt"], final["error"], final["last_error"]) == (3, COUNT_ERROR, COUNT_ERROR)
    waiting = [status for status in seen if status["status"] == "scheduled"]
    assert waiting, "a retry never waited for its interval"
    assert waiting[0]["attempt"] == 2
    assert waiting[0]["last_error"] == COUNT_ERROR
    assert waiting[0]["scheduled_for"]


@pytest.mark.usefixtures("worker")
def test_job_past_its_timeout_fails_with_a_timeout_error(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 10}, "timeout": 1})["job_id"]

    final = wait_for_job(server, job_id, until="failed")[-1]

    assert final["error"] == "JobTimeoutException: Task exceeded maximum timeout value (1 seconds)"
    ran_for = moment(final["ended_at"]) - moment(final["started_at"])
    assert ran_for.total_seconds() < 5


@pytest.mark.usefixtures("worker")
def test_delayed_job_is_scheduled_then_runs_when_due(server: str) -> None:
    accepted = enqueue(server, {**COUNT, "delay": 2})
    assert accepted["status"] == "scheduled"
    due = moment(accepted["scheduled_for"])

    seen = wait_for_job(server, accepted["job_id"])

    assert seen[0]["status"] == "scheduled"
    assert moment(seen[0]["scheduled_for"]) == due
    assert moment(seen[-1]["started_at"]) >= due


@pytest.mark.usefixtures("worker")
def test_child_runs_once_its_parent_has_finished(server: str) -> None:
    parent = enqueue(server, {"function": "count", "kwargs": {"duration": 1}})["job_id"]
    child = enqueue(server, {**COUNT, "depends_on": [parent]})
    assert (child["status"], child["depends_on"]) == ("deferred", [parent])

    seen = wait_for_job(server, child["job_id"])

    assert seen[0]["status"] == "deferred"
    assert seen[0]["depends_on"] == [parent]
    parent_status = get(server, "/check_status", job_id=parent).json()
    assert moment(seen[-1]["started_at"]) >= moment(parent_status["ended_at"])


@pytest.mark.usefixtures("worker")
def test_child_of_a_failed_parent_is_canceled(server: str) -> None:
    parent = enqueue(server, {"function": "count", "kwargs": {"duration": -1}})["job_id"]
    child = enqueue(server, {**COUNT, "depends_on": [parent]})["job_id"]

    final = wait_for_job(server, child, until="canceled")[-1]

    assert final["error"] == f"Canceled: job {parent}, which it depends on, failed."
    result = get(server, "/get_result", job_id=child)
    assert result.status_code == 409, result.text
    assert result.json()["error"]["code"] == "job_canceled"


def test_concurrent_identical_posts_make_one_job(server: str) -> None:
    body = {**COUNT, "queue": "low"}
    start = threading.Barrier(8)
    answers: list[requests.Response] = []

    def post() -> None:
        start.wait(timeout=HTTP_TIMEOUT)
        response = requests.post(
            f"{server}/enqueue", json=body, headers={"Idempotency-Key": "race-1"}, timeout=HTTP_TIMEOUT
        )
        answers.append(response)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * HTTP_TIMEOUT)

    assert len(answers) == 8
    created = [r for r in answers if r.status_code == 202 and "Idempotent-Replayed" not in r.headers]
    replayed = [r for r in answers if r.status_code == 202 and r.headers.get("Idempotent-Replayed") == "true"]
    # A request that arrives while the first is still enqueuing is told to retry, not given a job.
    busy = [r for r in answers if r.status_code == 409]
    assert len(created) == 1, [r.text for r in answers]
    assert len(created) + len(replayed) + len(busy) == 8, [r.text for r in answers]
    assert {r.json()["job_id"] for r in created + replayed} == {created[0].json()["job_id"]}
    assert {r.json()["error"]["code"] for r in busy} <= {"idempotency_in_progress"}
    again = requests.post(
        f"{server}/enqueue", json=body, headers={"Idempotency-Key": "race-1"}, timeout=HTTP_TIMEOUT
    )
    assert again.status_code == 202, again.text
    assert again.json()["job_id"] == created[0].json()["job_id"]


def test_high_priority_job_runs_before_a_low_one_queued_earlier(
    server: str, redis_url: str, logs_dir: Path
) -> None:
    assert not listening_workers(redis_url), "this test needs the workers of other tests stopped"
    low = enqueue(server, {**COUNT, "queue": "low"})["job_id"]
    high = enqueue(server, {**COUNT, "queue": "high"})["job_id"]

    with running_workers(redis_url, logs_dir, count=1):
        finished: dict[str, dict[str, Any]] = {
            job_id: wait_for_job(server, job_id)[-1] for job_id in (low, high)
        }

    assert moment(finished[high]["ended_at"]) <= moment(finished[low]["started_at"])
