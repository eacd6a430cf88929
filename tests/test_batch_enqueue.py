"""POST /enqueue with a JSON array of bodies: a batch, created whole or not at all."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from werkzeug.test import TestResponse

from app.queue import SERIALIZER
from app.status import Links
from app.sweeper import INFLIGHT_KEY
from tests.conftest import enqueue
from tests.test_metrics import scrape, value

SUBMITTER = "submitter-key-0123456789"
READER = "reader-key-0123456789"
KEYS = [
    {"name": "submitter", "key": SUBMITTER, "scopes": ["submit", "read"]},
    {"name": "reader", "key": READER, "scopes": ["read"]},
]


def post(client: FlaskClient, body: Any, **options: Any) -> TestResponse:
    """Post a JSON body to /enqueue."""
    return client.post("/enqueue", json=body, **options)


def accepted(client: FlaskClient, batch: list[dict[str, Any]], **options: Any) -> list[dict[str, Any]]:
    """Post a batch, check it was accepted, and return the answer for each job."""
    response = post(client, batch, **options)
    assert response.status_code == 202, response.get_json()
    jobs: list[dict[str, Any]] = response.get_json()["jobs"]
    return jobs


def result_of(client: FlaskClient, job_id: str) -> Any:
    """Return the JSON result of a finished job."""
    response = client.get(f"/get_result?job_id={job_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["result"]


def job_count(redis: fakeredis.FakeRedis) -> int:
    """Return how many jobs Redis holds."""
    return len(redis.keys("rq:job:*"))


def echo(number: int) -> dict[str, Any]:
    """Return a body that runs the echo job on a number."""
    return {"function": "some_long_function", "args": [number]}


# --- The happy path ---


def test_a_batch_queues_every_job_in_order_and_each_runs(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    jobs = accepted(client, [echo(number) for number in range(5)])

    ids = [job["job_id"] for job in jobs]
    assert Queue("default", connection=redis).job_ids == ids
    work()
    assert [result_of(client, job_id)["result"] for job_id in ids] == [0, 1, 2, 3, 4]


def test_each_job_is_answered_as_a_single_enqueue_would_be(client: FlaskClient) -> None:
    single = post(client, {"function": "count", "queue": "high"})
    response = post(client, [{"function": "count", "queue": "high"}, {"function": "noop"}])

    first, second = response.get_json()["jobs"]
    assert set(first) == set(single.get_json())
    assert {key: first[key] for key in ("status", "function", "queue")} == {
        "status": "queued",
        "function": "count",
        "queue": "high",
    }
    assert second["function"] == "noop" and second["queue"] == "default"
    for job in (first, second):
        assert job["status_url"] == f"http://localhost/check_status?job_id={job['job_id']}"
        assert job["result_url"] == f"http://localhost/get_result?job_id={job['job_id']}"
        assert client.get(job["status_url"]).get_json()["status"] == "queued"


def test_a_batch_answer_has_no_location(client: FlaskClient) -> None:
    response = post(client, [{"function": "noop"}])

    assert response.status_code == 202
    assert "Location" not in response.headers


def test_every_job_of_a_batch_is_tracked_and_carries_its_meta(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    jobs = accepted(client, [{"function": "noop"}, {"function": "noop", "delay": 60}])

    for answer in jobs:
        assert redis.zscore(INFLIGHT_KEY, answer["job_id"]) is not None
        job = Job.fetch(answer["job_id"], connection=redis, serializer=SERIALIZER)
        assert job.meta == {"function": "noop", "base_url": "http://localhost/"}


def test_a_batch_mixes_queued_and_scheduled_jobs(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    jobs = accepted(
        client,
        [
            {"function": "noop"},
            {"function": "noop", "delay": 600},
            {"function": "noop", "at": at.isoformat()},
            {"function": "noop", "delay": 0},
        ],
    )

    assert [job["status"] for job in jobs] == ["queued", "scheduled", "scheduled", "queued"]
    assert datetime.fromisoformat(jobs[2]["scheduled_for"]) == at
    scheduled = ScheduledJobRegistry("default", connection=redis)
    assert set(scheduled.get_job_ids()) == {jobs[1]["job_id"], jobs[2]["job_id"]}
    work()
    statuses = [client.get(job["status_url"]).get_json()["status"] for job in jobs]
    assert statuses == ["finished", "scheduled", "scheduled", "finished"]


def test_a_batch_item_may_wait_for_an_existing_job(client: FlaskClient, work: Callable[[], None]) -> None:
    parent = enqueue(client, echo(1))

    jobs = accepted(client, [echo(2), {**echo(3), "depends_on": [parent]}])

    assert [job["status"] for job in jobs] == ["queued", "deferred"]
    assert jobs[1]["depends_on"] == [parent]
    work()
    assert [result_of(client, job["job_id"])["result"] for job in jobs] == [2, 3]


def test_enqueued_jobs_of_a_batch_are_counted(client: FlaskClient) -> None:
    labels = {"function": "noop", "queue": "low"}
    before = value(scrape(client), "rq_jobs_enqueued_total", **labels)

    accepted(client, [{"function": "noop", "queue": "low"}] * 3)

    assert value(scrape(client), "rq_jobs_enqueued_total", **labels) - before == 3


# --- All or nothing ---


@pytest.mark.parametrize(
    ("item", "status", "code"),
    [
        ({"function": "nope"}, 422, "unknown_function"),
        ({"function": 7}, 422, "invalid_function"),
        ({"function": "noop", "args": [1]}, 422, "invalid_arguments"),
        ({"function": "noop", "colour": "red"}, 422, "unknown_fields"),
        ({"function": "noop", "queue": "urgent"}, 422, "invalid_queue"),
        ({"function": "noop", "delay": -1}, 422, "invalid_delay"),
        ({"function": "noop", "retry": {"max": 0}}, 422, "invalid_retry"),
        ({"function": "noop", "job_id": "bad id!"}, 422, "invalid_job_id"),
        ({"function": "noop", "depends_on": ["gone"]}, 422, "unknown_dependency"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_one_invalid_item_refuses_the_whole_batch_naming_it(
    app: Flask,
    client: FlaskClient,
    redis: fakeredis.FakeRedis,
    item: dict[str, Any],
    status: int,
    code: str,
) -> None:
    batch = [{"function": "noop"}, {"function": "noop", "delay": 60}, {"function": "count"}, item]

    response = post(client, batch)

    assert response.status_code == status
    error = response.get_json()["error"]
    assert (error["code"], error["index"]) == (code, 3)
    assert error["message"].startswith("Batch item 3: ")
    assert job_count(redis) == 0
    assert redis.zcard(INFLIGHT_KEY) == 0
    assert sum(Queue(name, connection=redis).count for name in app.config["QUEUES"]) == 0


def test_a_refused_dependency_refuses_the_batch(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    failing = enqueue(client, {"function": "count", "kwargs": {"duration": -1}})
    work()
    before = job_count(redis)

    response = post(client, [{"function": "noop"}, {"function": "noop", "depends_on": [failing]}])

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert (error["code"], error["index"], error["job_ids"]) == ("dependency_failed", 1, [failing])
    assert job_count(redis) == before


def test_items_of_one_batch_may_not_wait_for_each_other(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    batch = [{"function": "noop", "job_id": "first"}, {"function": "noop", "depends_on": ["first"]}]

    response = post(client, batch)

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert (error["code"], error["index"], error["job_ids"]) == ("invalid_depends_on", 1, ["first"])
    assert job_count(redis) == 0


@pytest.mark.parametrize("config", [{"MAX_BATCH_SIZE": 3}])
def test_a_batch_larger_than_max_batch_size_is_refused(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    assert post(client, [{"function": "noop"}] * 3).status_code == 202

    response = post(client, [{"function": "noop"}] * 4)

    assert response.status_code == 413
    error = response.get_json()["error"]
    assert (error["code"], error["max_batch_size"]) == ("batch_too_large", 3)
    assert job_count(redis) == 3


def test_the_default_max_batch_size_is_1000(client: FlaskClient) -> None:
    assert post(client, [{"function": "noop"}] * 1000).status_code == 202
    assert post(client, [{"function": "noop"}] * 1001).status_code == 413


def test_an_empty_array_is_an_empty_batch(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    response = post(client, [])

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "empty_batch"
    assert job_count(redis) == 0


# --- The seed format is kept for every other array ---


@pytest.mark.parametrize(
    "body", [[1, 2, 3], [{"hello": "world"}], [{"functoin": "noop"}]], ids=["numbers", "objects", "typo"]
)
def test_arrays_without_a_job_go_whole_to_the_default_function(
    client: FlaskClient, work: Callable[[], None], body: list[Any]
) -> None:
    response = post(client, body)

    assert response.status_code == 202
    assert response.get_json()["function"] == "some_long_function"
    work()
    assert result_of(client, response.get_json()["job_id"])["input"] == body


@pytest.mark.parametrize(
    ("body", "index"),
    [([{"function": "noop"}, {"functoin": "noop"}], 1), ([1, {"function": "noop"}], 0)],
    ids=["a mistyped item", "an item that is not an object"],
)
def test_an_array_of_jobs_with_an_item_that_is_not_one_is_refused_whole(
    client: FlaskClient, redis: fakeredis.FakeRedis, body: list[Any], index: int
) -> None:
    response = post(client, body)

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert (error["code"], error["index"]) == ("invalid_batch_item", index)
    assert job_count(redis) == 0


# --- Idempotency ---


def test_item_job_ids_make_a_retried_batch_replay_its_jobs(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    batch = [{"function": "noop", "job_id": "a"}, {"function": "noop"}, {"function": "noop", "job_id": "b"}]
    first = accepted(client, batch)

    again = accepted(client, batch)

    assert [job["job_id"] for job in first][::2] == ["a", "b"]
    assert [job["job_id"] for job in again][::2] == ["a", "b"]
    assert [job.get("replayed") for job in again] == [True, None, True]
    assert "replayed" not in first[0]
    assert job_count(redis) == 4  # a, b and one new job per post for the item without an id


def test_a_job_id_used_for_another_request_refuses_the_batch(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    enqueue(client, {"function": "noop", "job_id": "taken"})

    response = post(
        client, [{"function": "noop", "job_id": "fresh"}, {"function": "count", "job_id": "taken"}]
    )

    assert response.status_code == 409
    error = response.get_json()["error"]
    assert (error["code"], error["index"]) == ("idempotency_conflict", 1)
    assert job_count(redis) == 1
    # Nothing of the refused batch holds its ids: posting it fixed goes through.
    assert accepted(client, [{"function": "noop", "job_id": "fresh"}])[0]["status"] == "queued"


def test_a_job_id_twice_in_one_batch_is_refused(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    response = post(client, [{"function": "noop", "job_id": "twin"}, {"function": "noop", "job_id": "twin"}])

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert (error["code"], error["index"], error["job_id"]) == ("duplicate_job_id", 1, "twin")
    assert job_count(redis) == 0


def test_an_idempotency_key_is_refused_on_a_batch(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    response = post(client, [{"function": "noop"}], headers={"Idempotency-Key": "one-key"})

    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_key_not_supported"
    assert job_count(redis) == 0


# --- Keys and rate limits ---


@pytest.mark.parametrize("config", [{"API_KEYS": json.dumps(KEYS)}])
def test_a_batch_needs_the_submit_scope_and_records_the_owner(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    batch = [{"function": "noop"}, {"function": "noop", "delay": 60}]
    assert post(client, batch).status_code == 401
    assert post(client, batch, headers={"X-API-Key": READER}).status_code == 403
    assert job_count(redis) == 0

    jobs = accepted(client, batch, headers={"X-API-Key": SUBMITTER})

    for answer in jobs:
        assert (
            Job.fetch(answer["job_id"], connection=redis, serializer=SERIALIZER).meta["owner"] == "submitter"
        )


@pytest.mark.parametrize("config", [{"RATE_LIMIT": "2/60"}])
def test_a_batch_counts_as_one_request_against_the_rate_limit(client: FlaskClient) -> None:
    assert post(client, [{"function": "noop"}] * 10).status_code == 202
    assert post(client, [{"function": "noop"}] * 10).status_code == 202

    assert post(client, [{"function": "noop"}]).status_code == 429


@pytest.mark.parametrize("root", ["", "/jobs-api"])
def test_job_links_are_what_url_for_builds(app: Flask, root: str) -> None:
    with app.test_request_context("/enqueue", method="POST", base_url=f"https://example.com{root}"):
        for job_id in ("5b0e6c8e-3f5e-4a8c-9d61-2f0b2f0c9a11", "my_own-id"):
            assert Links().of(job_id) == {
                "status_url": url_for("api.check_status", job_id=job_id, _external=True),
                "result_url": url_for("api.get_result", job_id=job_id, _external=True),
            }
