"""Per-enqueue options: retries, timeouts and TTLs, schedules and chains, on FakeRedis."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from rq import get_current_job
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from werkzeug.test import TestResponse

from app import submissions
from app.callbacks import on_stopped
from app.jobs.registry import Registry, registry
from app.queue import SERIALIZER
from tests.conftest import enqueue

COUNT = {"function": "count", "kwargs": {"duration": 0}}
FAILING = {"function": "count", "kwargs": {"duration": -1}}
COUNT_ERROR = "ValueError: duration must be between 0 and 3600 seconds, not -1"

# Tries per job of `flaky`; the burst worker runs jobs in this process.
TRIES: Counter[str] = Counter()


def flaky(failures: int) -> str:
    """Fail the first `failures` tries of the job, then succeed (a test job)."""
    job = get_current_job()
    assert job is not None
    TRIES[job.id] += 1
    if TRIES[job.id] <= failures:
        raise RuntimeError(f"try {TRIES[job.id]} failed")
    return f"succeeded on try {TRIES[job.id]}"


def patient(value: int = 0) -> int:
    """Return the value (a test job whose registration carries a retry default)."""
    return value


@pytest.fixture
def test_functions(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    """Serve /enqueue from a registry with the app's functions and the test jobs above."""
    private = Registry()
    for function in registry:
        retry = function.retry.to_json() if function.retry else None
        private.register(function.name, queue=function.queue, timeout=function.timeout, retry=retry)(
            function.func
        )
    private.register()(flaky)
    private.register(retry={"max": 2, "intervals": [0]})(patient)
    monkeypatch.setattr(submissions, "registry", private)
    yield private
    TRIES.clear()


def post(client: FlaskClient, body: Any) -> TestResponse:
    """Post a JSON body to /enqueue."""
    return client.post("/enqueue", json=body)


def status_of(client: FlaskClient, job_id: str) -> dict[str, Any]:
    """Return the /check_status body of a job."""
    response = client.get("/check_status", query_string={"job_id": job_id})
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def fetch(redis: fakeredis.FakeRedis, job_id: str) -> Job:
    """Return the job as RQ stored it."""
    return Job.fetch(job_id, connection=redis, serializer=SERIALIZER)


def error_of(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    """Check the error status and code; return the error body."""
    assert response.status_code == status, response.get_json()
    error: dict[str, Any] = response.get_json()["error"]
    assert error["code"] == code, error
    return error


def utc(moment: str) -> datetime:
    """Parse an ISO-8601 time from a response."""
    return datetime.fromisoformat(moment).astimezone(UTC)


# --- retries ---


@pytest.mark.usefixtures("test_functions")
def test_retried_job_finishes_on_a_later_try_with_its_attempt_and_last_error(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"function": "flaky", "args": [2], "retry": {"max": 3}})
    assert status_of(client, job_id)["attempt"] == 1

    work()

    status = status_of(client, job_id)
    assert status["status"] == "finished"
    assert status["attempt"] == 3
    assert status["last_error"] == "RuntimeError: try 2 failed"
    assert client.get(f"/get_result?job_id={job_id}").get_json()["result"] == "succeeded on try 3"


def test_job_failing_every_try_fails_after_its_last_retry(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {**FAILING, "retry": {"max": 2, "intervals": [0]}})

    work()

    status = status_of(client, job_id)
    assert status["status"] == "failed"
    assert status["attempt"] == 3
    assert status["error"] == COUNT_ERROR
    assert status["last_error"] == COUNT_ERROR


def test_job_without_retry_is_on_its_first_attempt_with_no_last_error(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, FAILING)

    work()

    status = status_of(client, job_id)
    assert (status["status"], status["attempt"], status["last_error"]) == ("failed", 1, None)


@pytest.mark.usefixtures("test_functions")
def test_retry_waiting_its_interval_is_scheduled_for_the_next_try(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"function": "flaky", "args": [1], "retry": {"max": 1, "intervals": [600]}})
    before = datetime.now(UTC)

    work()

    status = status_of(client, job_id)
    assert status["status"] == "scheduled"
    assert status["attempt"] == 2
    assert status["last_error"] == "RuntimeError: try 1 failed"
    due = utc(status["scheduled_for"]) - before
    assert timedelta(seconds=598) <= due <= timedelta(seconds=602)


@pytest.mark.parametrize(
    ("retry", "intervals"),
    [
        ({"max": 1}, [0]),
        ({"max": 3, "intervals": [5, 30, 60]}, [5, 30, 60]),
        # Fewer waits than retries: the last one repeats.
        ({"max": 4, "intervals": [5, 30]}, [5, 30, 30, 30]),
        ({"max": 5, "backoff": "exponential", "base": 2, "cap": 10, "jitter": False}, [2, 4, 8, 10, 10]),
        ({"max": 3, "backoff": "exponential", "jitter": False}, [1, 2, 4]),
    ],
    ids=["immediate", "fixed", "last-repeats", "capped", "defaults"],
)
def test_retry_gives_rq_one_interval_per_retry(
    client: FlaskClient, redis: fakeredis.FakeRedis, retry: dict[str, Any], intervals: list[int]
) -> None:
    job = fetch(redis, enqueue(client, {**COUNT, "retry": retry}))

    assert job.retries_left == retry["max"]
    assert job.retry_intervals == intervals


def test_exponential_backoff_with_jitter_keeps_each_wait_between_half_and_the_whole(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    retry = {"max": 8, "backoff": "exponential", "base": 4, "cap": 300, "jitter": True}
    full = [min(300, 4 * 2**n) for n in range(8)]

    drawn = [fetch(redis, enqueue(client, {**COUNT, "retry": retry})).retry_intervals for _ in range(20)]

    for intervals in drawn:
        assert intervals is not None
        assert all(math.ceil(wait / 2) <= got <= wait for got, wait in zip(intervals, full, strict=True))
    assert len({tuple(intervals or []) for intervals in drawn}) > 1, "the jitter never varied"


@pytest.mark.parametrize("config", [{"MAX_RETRY_INTERVAL": 60}])
def test_exponential_backoff_without_cap_stops_at_the_configured_longest_wait(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    retry = {"max": 8, "backoff": "exponential", "base": 8, "jitter": False}

    job = fetch(redis, enqueue(client, {**COUNT, "retry": retry}))

    assert job.retry_intervals == [8, 16, 32, 60, 60, 60, 60, 60]


@pytest.mark.usefixtures("test_functions")
@pytest.mark.parametrize(
    ("body", "retries_left"),
    [({}, 2), ({"retry": {"max": 1}}, 1), ({"retry": None}, None)],
    ids=["default", "client-choice", "null-turns-it-off"],
)
def test_registered_retry_default_applies_unless_the_client_chooses(
    client: FlaskClient, redis: fakeredis.FakeRedis, body: dict[str, Any], retries_left: int | None
) -> None:
    job = fetch(redis, enqueue(client, {"function": "patient", **body}))

    assert job.retries_left == retries_left


@pytest.mark.parametrize(
    "retry",
    [
        {"max": 0},
        {"max": 11},
        {"max": True},
        {"max": "3"},
        {"intervals": [1]},
        {"max": 2, "intervals": [1, 2, 3]},
        {"max": 2, "intervals": []},
        {"max": 2, "intervals": [-1]},
        {"max": 2, "intervals": [3601]},
        {"max": 2, "intervals": 5},
        {"max": 2, "backoff": "linear"},
        {"max": 2, "backoff": "exponential", "base": 0},
        {"max": 2, "backoff": "exponential", "base": 10, "cap": 5},
        {"max": 2, "backoff": "exponential", "cap": 3601},
        {"max": 2, "backoff": "exponential", "jitter": "yes"},
        {"max": 2, "backoff": "exponential", "intervals": [1]},
        {"max": 2, "base": 2},
        [3],
        3,
    ],
    ids=repr,
)
def test_invalid_retry_is_refused(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, retry: Any
) -> None:
    error = error_of(post(client, {**COUNT, "retry": retry}), 422, "invalid_retry")

    assert "retry" in error["message"]
    assert redis.keys("rq:job:*") == []


def test_registered_retry_default_is_described(test_functions: Registry) -> None:
    assert test_functions.get("patient").describe()["retry"] == {"max": 2, "intervals": [0]}
    assert "retry" not in test_functions.get("flaky").describe()


def test_registry_refuses_a_malformed_retry_default() -> None:
    with pytest.raises(ValueError, match=r"retry\.max"):
        Registry().register(retry={"max": 0})


# --- timeouts and TTLs ---


def test_ttl_and_failure_ttl_are_given_to_rq(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    job_id = enqueue(client, {**COUNT, "ttl": 60, "failure_ttl": 120})

    job = fetch(redis, job_id)
    assert (job.ttl, job.failure_ttl) == (60, 120)
    # Not started within its ttl, the job is dropped: its key expires.
    assert 0 < redis.ttl(f"rq:job:{job_id}") <= 60


def test_without_ttls_a_job_waits_unbounded_and_failures_keep_the_configured_time(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job = fetch(redis, enqueue(client, COUNT))

    assert job.ttl is None
    assert job.failure_ttl == app.config["FAILURE_TTL"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ttl", 0),
        ("ttl", 30 * 86400 + 1),
        ("ttl", "60"),
        ("ttl", 1.5),
        ("failure_ttl", 0),
        ("failure_ttl", 30 * 86400 + 1),
        ("failure_ttl", True),
        ("timeout", 0),
    ],
)
def test_ttl_out_of_bounds_is_refused(client: FlaskClient, field: str, value: Any) -> None:
    error = error_of(post(client, {**COUNT, field: value}), 422, f"invalid_{field}")

    assert field in error["message"]


def test_job_past_its_timeout_fails_with_a_timeout_error(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": 5}, "timeout": 1})

    work()

    status = status_of(client, job_id)
    assert status["status"] == "failed"
    assert status["error"] == "JobTimeoutException: Task exceeded maximum timeout value (1 seconds)"


# --- schedules ---


def test_delayed_job_is_scheduled_until_due(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    before = datetime.now(UTC)
    response = post(client, {**COUNT, "delay": 90.5})

    assert response.status_code == 202, response.get_json()
    accepted = response.get_json()
    assert accepted["status"] == "scheduled"
    due = utc(accepted["scheduled_for"])
    assert due.microsecond == 0
    assert before + timedelta(seconds=90.5) <= due <= before + timedelta(seconds=92)
    work()
    status = status_of(client, accepted["job_id"])
    assert status["status"] == "scheduled"
    assert utc(status["scheduled_for"]) == due
    registry = ScheduledJobRegistry("default", connection=redis, serializer=SERIALIZER)
    assert registry.get_job_ids() == [accepted["job_id"]]


def test_job_at_a_time_with_a_zone_is_scheduled_for_that_time(client: FlaskClient) -> None:
    due = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    at = due.astimezone(datetime.now().astimezone().tzinfo).isoformat()

    response = post(client, {**COUNT, "at": due.isoformat().replace("+00:00", "Z"), "queue": "low"})
    in_local_zone = post(client, {**COUNT, "at": at})

    for accepted in (response.get_json(), in_local_zone.get_json()):
        assert accepted["status"] == "scheduled"
        assert utc(accepted["scheduled_for"]) == due


@pytest.mark.parametrize(
    "schedule",
    [
        lambda: {"delay": 0},
        # A client clock a little behind the server's: within the tolerance, "now".
        lambda: {"at": (datetime.now(UTC) - timedelta(seconds=2)).isoformat()},
    ],
    ids=["delay-0", "at-just-past"],
)
def test_job_due_already_is_queued_at_once(
    client: FlaskClient, work: Callable[[], None], schedule: Callable[[], dict[str, Any]]
) -> None:
    response = post(client, {**COUNT, **schedule()})

    assert response.get_json()["status"] == "queued"
    assert "scheduled_for" not in response.get_json()
    work()
    assert status_of(client, response.get_json()["job_id"])["status"] == "finished"


@pytest.mark.parametrize(
    ("schedule", "code"),
    [
        ({"delay": -1}, "invalid_delay"),
        ({"delay": 7 * 86400 + 1}, "invalid_delay"),
        ({"delay": "10"}, "invalid_delay"),
        ({"delay": True}, "invalid_delay"),
        ({"at": "2030-01-01T08:00:00"}, "invalid_at"),
        ({"at": "tomorrow"}, "invalid_at"),
        ({"at": 1893456000}, "invalid_at"),
        ({"at": "2020-01-01T08:00:00Z"}, "invalid_at"),
        ({"at": (datetime.now(UTC) + timedelta(days=8)).isoformat()}, "invalid_at"),
        ({"delay": 10, "at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "invalid_schedule"),
        ({"delay": 10, "depends_on": ["a"]}, "invalid_schedule"),
        ({"delay": 60, "ttl": 60}, "invalid_ttl"),
    ],
    ids=[
        "negative",
        "beyond-max",
        "string",
        "bool",
        "naive",
        "not-iso",
        "number",
        "past",
        "beyond-max",
        "both",
        "with-depends-on",
        "ttl-not-past-delay",
    ],
)
def test_invalid_schedule_is_refused(
    client: FlaskClient, redis: fakeredis.FakeRedis, schedule: dict[str, Any], code: str
) -> None:
    error_of(post(client, {**COUNT, **schedule}), 422, code)

    assert redis.keys("rq:job:*") == []


# --- chains ---


def test_child_is_deferred_until_its_parent_finishes_then_runs(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    parent = enqueue(client, COUNT)
    response = post(client, {**COUNT, "depends_on": [parent]})

    assert response.status_code == 202, response.get_json()
    child = response.get_json()
    assert (child["status"], child["depends_on"]) == ("deferred", [parent])
    waiting = status_of(client, child["job_id"])
    assert (waiting["status"], waiting["depends_on"]) == ("deferred", [parent])
    work()
    done = status_of(client, child["job_id"])
    assert done["status"] == "finished"
    assert "depends_on" not in done
    assert utc(done["started_at"]) >= utc(status_of(client, parent)["ended_at"])


def test_child_of_finished_parents_is_queued_at_once(client: FlaskClient, work: Callable[[], None]) -> None:
    parents = [enqueue(client, COUNT), enqueue(client, COUNT)]
    work()

    response = post(client, {**COUNT, "depends_on": parents})

    assert response.get_json()["status"] == "queued"


def test_child_of_an_unknown_parent_is_refused_naming_it(client: FlaskClient) -> None:
    known = enqueue(client, COUNT)

    error = error_of(post(client, {**COUNT, "depends_on": [known, "no-such-job"]}), 422, "unknown_dependency")

    assert error["job_ids"] == ["no-such-job"]
    assert "no-such-job" in error["message"]


def test_children_of_a_failed_parent_are_canceled_with_the_reason(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    parent = enqueue(client, FAILING)
    child = enqueue(client, {**COUNT, "depends_on": [parent]})
    grandchild = enqueue(client, {**COUNT, "depends_on": [child]})

    work()

    assert status_of(client, parent)["status"] == "failed"
    canceled = status_of(client, child)
    assert canceled["status"] == "canceled"
    assert canceled["error"] == f"Canceled: job {parent}, which it depends on, failed."
    assert (
        status_of(client, grandchild)["error"] == f"Canceled: job {child}, which it depends on, was canceled."
    )
    result = client.get(f"/get_result?job_id={child}")
    assert result.status_code == 409
    assert result.get_json()["error"]["code"] == "job_canceled"


def test_child_allowing_failure_runs_after_its_parent_fails(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    parent = enqueue(client, FAILING)
    child = enqueue(client, {**COUNT, "depends_on": [parent], "allow_failure": True})

    work()

    assert status_of(client, parent)["status"] == "failed"
    assert status_of(client, child)["status"] == "finished"


@pytest.mark.usefixtures("test_functions")
def test_child_waits_through_its_parents_retries(client: FlaskClient, work: Callable[[], None]) -> None:
    parent = enqueue(client, {"function": "flaky", "args": [1], "retry": {"max": 1}})
    child = enqueue(client, {**COUNT, "depends_on": [parent]})

    work()

    assert status_of(client, parent)["attempt"] == 2
    assert status_of(client, child)["status"] == "finished"


def test_child_of_an_already_failed_parent_is_refused_unless_failure_is_allowed(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    parent = enqueue(client, FAILING)
    work()

    error = error_of(post(client, {**COUNT, "depends_on": [parent]}), 422, "dependency_failed")
    allowed = post(client, {**COUNT, "depends_on": [parent], "allow_failure": True})

    assert error["job_ids"] == [parent]
    assert "allow_failure" in error["message"]
    # RQ would defer it for ever behind a parent that has already ended: it is queued at once.
    assert allowed.get_json()["status"] == "queued"
    work()
    assert status_of(client, allowed.get_json()["job_id"])["status"] == "finished"


def test_stopped_parent_cancels_even_children_that_allow_failure(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    parent = enqueue(client, COUNT)
    child = enqueue(client, {**COUNT, "depends_on": [parent], "allow_failure": True})

    # RQ runs on_stopped when a worker stops the job (POST /jobs/<id>/cancel of a running job).
    on_stopped(fetch(redis, parent), redis)

    status = status_of(client, child)
    assert status["status"] == "canceled"
    assert status["error"] == f"Canceled: job {parent}, which it depends on, was stopped."


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"depends_on": "abc"}, "invalid_depends_on"),
        ({"depends_on": [1]}, "invalid_depends_on"),
        ({"depends_on": ["not an id"]}, "invalid_depends_on"),
        ({"depends_on": [f"job-{n}" for n in range(21)]}, "invalid_depends_on"),
        ({"allow_failure": True}, "invalid_allow_failure"),
        ({"depends_on": ["a"], "allow_failure": "yes"}, "invalid_allow_failure"),
    ],
    ids=["string", "number", "bad-id", "too-many", "allow-failure-alone", "allow-failure-string"],
)
def test_invalid_chain_is_refused(client: FlaskClient, body: dict[str, Any], code: str) -> None:
    error_of(post(client, {**COUNT, **body}), 422, code)


# --- multipart ---


def png() -> bytes:
    """Return a small PNG."""
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, format="PNG")
    return out.getvalue()


def test_multipart_takes_the_options_as_form_fields(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    parent = enqueue(client, COUNT)
    fields = {
        "function": "resize_image",
        "image": (io.BytesIO(png()), "a.png", "image/png"),
        "retry": '{"max": 2, "intervals": [5]}',
        "ttl": "600",
        "failure_ttl": "120",
        "depends_on": f'["{parent}"]',
        "allow_failure": "true",
        "job_id": "resize-1",
    }

    response = client.post("/enqueue", data=fields, content_type="multipart/form-data")

    assert response.status_code == 202, response.get_json()
    assert response.get_json()["job_id"] == "resize-1"
    job = fetch(redis, "resize-1")
    assert (job.retries_left, job.retry_intervals) == (2, [5, 5])
    assert (job.ttl, job.failure_ttl, job.allow_dependency_failures) == (600, 120, True)
    assert job.get_status() == "deferred"


def test_multipart_delay_schedules_the_job(client: FlaskClient) -> None:
    fields = {"function": "count", "duration": "0", "delay": "30"}

    response = client.post("/enqueue", data=fields, content_type="multipart/form-data")

    assert response.get_json()["status"] == "scheduled"


@pytest.mark.parametrize(
    ("field", "raw", "code"),
    [
        ("retry", "{max: 2}", "invalid_retry"),
        ("depends_on", "job-1", "invalid_depends_on"),
        ("delay", "soon", "invalid_delay"),
        ("delay", "nan", "invalid_delay"),
        ("ttl", "1.5", "invalid_ttl"),
    ],
)
def test_multipart_option_that_does_not_parse_is_refused(
    client: FlaskClient, field: str, raw: str, code: str
) -> None:
    fields = {"function": "count", "duration": "0", field: raw}

    error_of(client.post("/enqueue", data=fields, content_type="multipart/form-data"), 422, code)
