"""Job control end to end: cancel, stop, requeue, delete and list jobs on gunicorn, worker.sh and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from redis import Redis

from tests.integration.conftest import HTTP_TIMEOUT, enqueue, get, wait_for, wait_for_job

pytestmark = pytest.mark.usefixtures("workers")

# Both workers of the `workers` fixture (./worker.sh 2) busy: what is queued next waits.
WORKERS = 2
LONG = {"function": "count", "kwargs": {"duration": 30}, "queue": "high"}
QUICK = {"function": "count", "kwargs": {"duration": 0}}
FAILING = {"function": "count", "kwargs": {"duration": -1}}
# The server waits up to CANCEL_WAIT_SECONDS (5) for a worker to stop a running job.
CANCEL_TIMEOUT = HTTP_TIMEOUT + 5.0
STOP_DEADLINE = 10.0


def post(base_url: str, path: str) -> requests.Response:
    """POST to a path of the server, without a body."""
    return requests.post(f"{base_url}{path}", timeout=CANCEL_TIMEOUT)


def status_of(base_url: str, job_id: str) -> dict[str, Any]:
    """Return GET /jobs/<id>, checking it answered 200."""
    response = get(base_url, f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def runs(base_url: str, job_id: str) -> bool:
    """Tell whether a job is started (False once it ended or was deleted)."""
    response = get(base_url, f"/jobs/{job_id}")
    return response.status_code == 200 and response.json()["status"] == "started"


def worker_of(redis_url: str, job_id: str) -> str:
    """Return the name of the worker that runs (or ran) a job; RQ forgets it once the job is stopped."""
    with Redis.from_url(redis_url, socket_timeout=HTTP_TIMEOUT) as connection:
        name = connection.hget(f"rq:job:{job_id}", "worker_name")
    assert name, f"job {job_id} has no worker"
    return name.decode()


def listed(base_url: str, **params: str) -> dict[str, str]:
    """Return {job id: status} of the first page (200 jobs) of GET /jobs with these filters."""
    response = get(base_url, "/jobs", per_page="200", **params)
    assert response.status_code == 200, response.text
    return {job["job_id"]: job["status"] for job in response.json()["jobs"]}


@pytest.fixture
def busy(server: str) -> Iterator[list[str]]:
    """Keep every worker busy with a 30-second count; stop those jobs afterwards."""
    job_ids = [enqueue(server, LONG)["job_id"] for _ in range(WORKERS)]
    for job_id in job_ids:
        wait_for_job(server, job_id, until="started")
    yield job_ids
    for job_id in job_ids:
        post(server, f"/jobs/{job_id}/cancel")  # 409 for those a test already ended
        wait_for(
            lambda job_id=job_id: not runs(server, job_id), STOP_DEADLINE, message=f"job {job_id} to stop"
        )


def test_cancel_of_a_running_job_stops_it_and_its_worker_runs_the_next_job(
    server: str, redis_url: str, busy: list[str]
) -> None:
    running, other = busy
    worker = worker_of(redis_url, running)
    next_job = enqueue(server, {**QUICK, "queue": "high"})["job_id"]
    assert status_of(server, next_job)["status"] == "queued"

    response = post(server, f"/jobs/{running}/cancel")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "stopped"
    assert "stopped" in body["error"]
    wait_for_job(server, next_job)
    assert worker_of(redis_url, next_job) == worker
    assert status_of(server, other)["status"] == "started"


def test_cancel_of_a_queued_job_means_it_never_runs(server: str, busy: list[str]) -> None:
    job_id = enqueue(server, QUICK)["job_id"]
    after = enqueue(server, QUICK)["job_id"]

    response = post(server, f"/jobs/{job_id}/cancel")

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "canceled"
    # Free a worker: it skips the canceled job and runs the one queued after it.
    assert post(server, f"/jobs/{busy[0]}/cancel").status_code == 200
    wait_for_job(server, after)
    body = status_of(server, job_id)
    assert (body["status"], body["started_at"]) == ("canceled", None)


def test_cancel_of_a_finished_job_answers_409_and_changes_nothing(server: str) -> None:
    job_id = enqueue(server, QUICK)["job_id"]
    wait_for_job(server, job_id)

    response = post(server, f"/jobs/{job_id}/cancel")

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert (error["code"], error["job_status"]) == ("job_already_ended", "finished")
    assert status_of(server, job_id)["status"] == "finished"


def test_requeue_of_a_stopped_job_runs_it_to_the_end(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 3}})["job_id"]
    wait_for_job(server, job_id, until="started")
    assert post(server, f"/jobs/{job_id}/cancel").json()["status"] == "stopped"

    response = post(server, f"/jobs/{job_id}/requeue")

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    wait_for_job(server, job_id)
    result = get(server, "/get_result", job_id=job_id)
    assert result.status_code == 200, result.text
    assert result.json()["result"]["counted"] == 3


def test_requeue_of_a_failed_job_runs_it_again(server: str) -> None:
    job_id = enqueue(server, FAILING)["job_id"]
    first = wait_for_job(server, job_id, until="failed")[-1]

    response = post(server, f"/jobs/{job_id}/requeue")

    assert response.status_code == 202, response.text
    again = wait_for_job(server, job_id, until="failed")[-1]
    assert again["started_at"] > first["started_at"]
    assert again["ended_at"] > first["ended_at"]
    assert again["error"] == first["error"]


def test_delete_removes_a_finished_job_and_its_result(server: str) -> None:
    job_id = enqueue(server, QUICK)["job_id"]
    wait_for_job(server, job_id)

    response = requests.delete(f"{server}/jobs/{job_id}", timeout=HTTP_TIMEOUT)

    assert response.status_code == 200, response.text
    assert response.json() == {"job_id": job_id, "deleted": True, "job_status": "finished"}
    assert get(server, f"/jobs/{job_id}").status_code == 404
    assert get(server, "/get_result", job_id=job_id).status_code == 404
    assert job_id not in listed(server, status="finished")


def test_delete_of_a_running_job_is_refused_until_it_is_canceled(server: str, busy: list[str]) -> None:
    job_id = busy[0]

    refused = requests.delete(f"{server}/jobs/{job_id}", timeout=HTTP_TIMEOUT)

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "job_running"
    assert post(server, f"/jobs/{job_id}/cancel").status_code == 200
    deleted = requests.delete(f"{server}/jobs/{job_id}", timeout=HTTP_TIMEOUT)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["job_status"] == "stopped"


def test_jobs_lists_every_status_with_its_jobs(server: str, request: pytest.FixtureRequest) -> None:
    finished = enqueue(server, QUICK)["job_id"]
    wait_for_job(server, finished)
    failed = enqueue(server, FAILING)["job_id"]
    wait_for_job(server, failed, until="failed")
    started: list[str] = request.getfixturevalue("busy")
    queued = enqueue(server, QUICK)["job_id"]
    canceled = enqueue(server, QUICK)["job_id"]
    assert post(server, f"/jobs/{canceled}/cancel").status_code == 200
    expected = {finished: "finished", failed: "failed", queued: "queued", canceled: "canceled"}
    expected.update(dict.fromkeys(started, "started"))

    for job_id, status in expected.items():
        assert listed(server, status=status).get(job_id) == status, (job_id, status)
    everything = listed(server)
    assert {job_id: everything.get(job_id) for job_id in expected} == expected
    assert set(expected) <= set(listed(server, function="count"))
    assert not set(expected) & set(listed(server, function="some_long_function"))

    stopped = started[0]
    assert post(server, f"/jobs/{stopped}/cancel").status_code == 200
    assert listed(server, status="stopped").get(stopped) == "stopped"
    assert stopped not in listed(server, status="failed")
    assert {failed, stopped} <= set(listed(server, status="failed,stopped"))
