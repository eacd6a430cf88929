"""Idempotent enqueues: Idempotency-Key and client job ids replay their job instead of making another."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from rq import Queue
from werkzeug.test import TestResponse

from app import idempotency
from app.queue import SERIALIZER
from app.submissions import read_submission

COUNT = {"function": "count", "kwargs": {"duration": 0}}
FAILING_COUNT = {"function": "count", "kwargs": {"duration": -1}}


def post(client: FlaskClient, body: Any, key: str | None = None) -> TestResponse:
    """Post a JSON body to /enqueue, with an Idempotency-Key when given one."""
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/enqueue", json=body, headers=headers)


def accepted(response: TestResponse, replayed: bool = False) -> dict[str, Any]:
    """Check a 202 and whether it is a replay; return its body."""
    assert response.status_code == 202, response.get_json()
    assert response.headers.get("Idempotent-Replayed") == ("true" if replayed else None)
    body: dict[str, Any] = response.get_json()
    return body


def error_of(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Check the error status and code; return the error body."""
    assert response.status_code == status, response.get_json()
    error: dict[str, Any] = response.get_json()["error"]
    assert error["code"] == code, error
    return error


def queued_ids(app: Flask, redis: fakeredis.FakeRedis) -> list[str]:
    """Return the ids of the jobs waiting on all the app's queues."""
    return [job_id for name in app.config["QUEUES"] for job_id in Queue(name, connection=redis).job_ids]


def forget_records(redis: fakeredis.FakeRedis) -> None:
    """Drop every idempotency record, as if IDEMPOTENCY_TTL had passed."""
    keys = redis.keys(f"{idempotency.RECORD_PREFIX}*")
    assert keys
    redis.delete(*keys)


# --- Idempotency-Key ---


def test_same_key_and_body_replay_the_same_job(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    first = accepted(post(client, COUNT, key="order-1"))

    again = accepted(post(client, COUNT, key="order-1"), replayed=True)

    assert again == first
    assert queued_ids(app, redis) == [first["job_id"]]


def test_replay_shows_the_job_as_it_is_now(client: FlaskClient, work: Callable[[], None]) -> None:
    job_id = accepted(post(client, COUNT, key="k"))["job_id"]
    work()

    again = accepted(post(client, COUNT, key="k"), replayed=True)

    assert (again["job_id"], again["status"]) == (job_id, "finished")


def test_replay_of_a_scheduled_job_says_when_it_is_due(client: FlaskClient) -> None:
    first = accepted(post(client, {**COUNT, "delay": 600}, key="later"))

    again = accepted(post(client, {**COUNT, "delay": 600}, key="later"), replayed=True)

    assert again["status"] == "scheduled"
    assert again["scheduled_for"] == first["scheduled_for"]


def test_replay_of_a_job_no_longer_kept_says_expired(client: FlaskClient, work: Callable[[], None]) -> None:
    body = {**COUNT, "result_ttl": 0}
    job_id = accepted(post(client, body, key="gone"))["job_id"]
    work()  # result_ttl 0: the finished job is deleted at once

    again = accepted(post(client, body, key="gone"), replayed=True)

    assert (again["job_id"], again["status"]) == (job_id, "expired")


def test_same_key_with_another_body_is_a_conflict(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    first = accepted(post(client, COUNT, key="order-2"))

    error = error_of(post(client, {**COUNT, "queue": "high"}, key="order-2"), 409, "idempotency_conflict")

    assert error["job_id"] == first["job_id"]
    assert "order-2" in error["message"]
    assert queued_ids(app, redis) == [first["job_id"]]


@pytest.mark.parametrize(
    "same",
    [
        {"function": "count", "kwargs": {"duration": 0}, "queue": "default", "args": []},
        {"kwargs": {"duration": 0}, "function": "count", "retry": None},
    ],
    ids=["defaults-spelled-out", "other-order"],
)
def test_equal_requests_written_differently_replay(client: FlaskClient, same: dict[str, Any]) -> None:
    first = accepted(post(client, COUNT, key="same"))

    assert accepted(post(client, same, key="same"), replayed=True)["job_id"] == first["job_id"]


def test_different_keys_make_different_jobs(client: FlaskClient) -> None:
    first = accepted(post(client, COUNT, key="a"))
    second = accepted(post(client, COUNT, key="b"))

    assert first["job_id"] != second["job_id"]


def test_quoted_key_is_the_same_key(client: FlaskClient) -> None:
    first = accepted(post(client, COUNT, key="abc-123"))

    assert accepted(post(client, COUNT, key='"abc-123"'), replayed=True)["job_id"] == first["job_id"]


def test_key_of_a_refused_request_stays_free(client: FlaskClient) -> None:
    error_of(post(client, {**COUNT, "depends_on": ["missing"]}, key="fix-me"), 422, "unknown_dependency")

    accepted(post(client, COUNT, key="fix-me"))


def test_request_while_the_first_is_still_enqueuing_is_told_to_retry(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    with app.test_request_context("/enqueue", json=COUNT):
        fingerprint = idempotency.fingerprint(read_submission(request, app.config).normalized())
    # The first request has claimed the key and not yet created its job.
    assert isinstance(idempotency.claim(redis, "busy", None, fingerprint), idempotency.Claim)

    response = post(client, COUNT, key="busy")

    error_of(response, 409, "idempotency_in_progress")
    assert response.headers["Retry-After"] == "1"
    assert queued_ids(app, redis) == []


@pytest.mark.parametrize(
    "key", ["", "   ", "x" * 256, "clé"], ids=["empty", "blank", "too-long", "non-ascii"]
)
def test_malformed_key_is_refused(client: FlaskClient, redis: fakeredis.FakeRedis, key: str) -> None:
    error = error_of(post(client, COUNT, key=key), 400, "invalid_idempotency_key")

    assert "Idempotency-Key" in error["message"]
    assert redis.keys("rq:job:*") == []


def test_records_expire_after_the_configured_time(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    accepted(post(client, COUNT, key="ttl"))

    (record,) = redis.keys(f"{idempotency.RECORD_PREFIX}*")
    assert app.config["IDEMPOTENCY_TTL"] - 5 <= redis.ttl(record) <= app.config["IDEMPOTENCY_TTL"]


# --- client job ids ---


def test_client_job_id_names_the_job_and_replays_it(client: FlaskClient) -> None:
    first = accepted(post(client, {**COUNT, "job_id": "nightly-2026-11-21"}))

    again = accepted(post(client, {**COUNT, "job_id": "nightly-2026-11-21"}), replayed=True)

    assert first["job_id"] == again["job_id"] == "nightly-2026-11-21"


def test_client_job_id_with_another_body_is_a_conflict(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    accepted(post(client, {**COUNT, "job_id": "report-7"}))

    error = error_of(post(client, {**FAILING_COUNT, "job_id": "report-7"}), 409, "idempotency_conflict")

    assert error["job_id"] == "report-7"
    assert "report-7" in error["message"]
    assert redis.hget("rq:job:report-7", "description") == b"count"


def test_client_job_id_of_a_job_still_kept_after_its_record_expired(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    accepted(post(client, {**COUNT, "job_id": "kept"}))
    work()
    forget_records(redis)

    again = accepted(post(client, {**COUNT, "job_id": "kept"}), replayed=True)
    error = error_of(post(client, {**FAILING_COUNT, "job_id": "kept"}), 409, "idempotency_conflict")

    assert again["status"] == "finished"
    assert error["job_id"] == "kept"


def test_client_job_id_of_a_job_made_some_other_way_is_a_conflict(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    Queue("default", connection=redis, serializer=SERIALIZER).enqueue("app.jobs.count.count", job_id="theirs")

    error_of(post(client, {**COUNT, "job_id": "theirs"}), 409, "idempotency_conflict")


def test_key_and_job_id_together_guard_each_other(client: FlaskClient) -> None:
    accepted(post(client, {**COUNT, "job_id": "both"}, key="k-both"))

    accepted(post(client, {**COUNT, "job_id": "both"}, key="k-both"), replayed=True)
    # Another key cannot take the job id, nor the key another job id.
    error_of(post(client, {**FAILING_COUNT, "job_id": "both"}, key="k-other"), 409, "idempotency_conflict")
    error_of(post(client, {**COUNT, "job_id": "other"}, key="k-both"), 409, "idempotency_conflict")
    # Refused requests leave nothing behind: the other key and job id are free.
    accepted(post(client, {**COUNT, "job_id": "other"}, key="k-other"))


@pytest.mark.parametrize("job_id", ["", "a b", "x" * 129, 7, None], ids=repr)
def test_malformed_client_job_id_is_refused(client: FlaskClient, job_id: Any) -> None:
    error_of(post(client, {**COUNT, "job_id": job_id}), 422, "invalid_job_id")
