"""GET /jobs on FakeRedis: filters, paging, newest-first order, and one page fetched at a time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

import app.listing as listing
from app.jobs.count import count
from app.jobs.echo import some_long_function
from app.queue import SERIALIZER
from tests.conftest import enqueue

STATUSES = ["queued", "started", "deferred", "scheduled", "finished", "failed", "stopped", "canceled"]
QUEUES = ["high", "default", "low"]
REGISTRIES = {
    "started": StartedJobRegistry,
    "deferred": DeferredJobRegistry,
    "scheduled": ScheduledJobRegistry,
    "finished": FinishedJobRegistry,
    "failed": FailedJobRegistry,
    "stopped": FailedJobRegistry,
    "canceled": CanceledJobRegistry,
}


def store(
    redis: fakeredis.FakeRedis,
    status: str,
    *,
    queue: str = "default",
    score: float | None = None,
    function: Callable[..., Any] = count,
    job_id: str | None = None,
) -> str:
    """Save a job with this status where RQ keeps such jobs; return its id.

    Registry entries get `score` (default: an hour from now, which is live in every registry).
    """
    job = Job.create(
        function,
        kwargs={},
        connection=redis,
        serializer=SERIALIZER,
        origin=queue,
        id=job_id,
        meta={"function": function.__name__},
        status=JobStatus(status),
    )
    job.save()
    if status == "queued":
        redis.rpush(Queue(queue, connection=redis).key, job.id)
    else:
        key = REGISTRIES[status](queue, connection=redis).key
        # The started registry holds one "job_id:execution_id" entry per run.
        member = f"{job.id}:execution" if status == "started" else job.id
        redis.zadd(key, {member: time.time() + 3600 if score is None else score})
    return job.id


def listed(client: FlaskClient, query: str = "") -> dict[str, Any]:
    """Return the body of GET /jobs with a query string, checking it answered 200."""
    response = client.get(f"/jobs{query}")
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def ids_of(body: dict[str, Any]) -> list[str]:
    """Return the job ids of a listing, in order."""
    return [job["job_id"] for job in body["jobs"]]


def snapshot(redis: fakeredis.FakeRedis) -> dict[bytes, Any]:
    """Return every key with its contents, to show that a request changed nothing."""
    dump: dict[bytes, Any] = {}
    for key in redis.keys("*"):
        kind = redis.type(key)
        if kind == b"zset":
            dump[key] = redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"list":
            dump[key] = redis.lrange(key, 0, -1)
        elif kind == b"hash":
            dump[key] = redis.hgetall(key)
        else:
            dump[key] = kind
    return dump


# --- Paging ---


@pytest.mark.parametrize(
    ("counts", "offset", "limit", "ranges"),
    [
        ([3], 0, 2, [(0, 0, 2)]),
        ([3], 2, 2, [(0, 2, 3)]),
        ([2, 0, 3], 1, 3, [(0, 1, 2), (2, 0, 2)]),
        ([2, 3], 2, 10, [(1, 0, 3)]),
        ([2, 3], 5, 2, []),
        ([], 0, 50, []),
        ([50, 50, 50], 100, 50, [(2, 0, 50)]),
    ],
)
def test_page_ranges_cut_one_page_from_the_indexes_in_turn(
    counts: list[int], offset: int, limit: int, ranges: list[tuple[int, int, int]]
) -> None:
    assert listing.page_ranges(counts, offset, limit) == ranges


def test_no_jobs_gives_an_empty_first_page(client: FlaskClient) -> None:
    assert listed(client) == {"total": 0, "page": 1, "per_page": 50, "pages": 0, "scan": None, "jobs": []}


@pytest.mark.parametrize(
    ("page", "expected"),
    [(1, [0, 1, 2]), (2, [3, 4, 5]), (3, [6]), (4, [])],
)
def test_pages_split_the_total_newest_first(client: FlaskClient, page: int, expected: list[int]) -> None:
    job_ids = [enqueue(client, {"function": "count"}) for _ in range(7)]
    newest_first = job_ids[::-1]

    body = listed(client, f"?per_page=3&page={page}")

    assert (body["total"], body["page"], body["per_page"], body["pages"]) == (7, page, 3, 3)
    assert ids_of(body) == [newest_first[position] for position in expected]


def test_a_page_spans_statuses_and_queues_in_listing_order(
    redis: fakeredis.FakeRedis, client: FlaskClient
) -> None:
    queued_high = store(redis, "queued", queue="high")
    queued_low = store(redis, "queued", queue="low")
    finished = store(redis, "finished")

    assert ids_of(listed(client, "?per_page=2&page=1")) == [queued_high, queued_low]
    assert ids_of(listed(client, "?per_page=2&page=2")) == [finished]


# --- Order ---


def test_queued_jobs_come_in_reverse_queue_order(client: FlaskClient) -> None:
    job_ids = [enqueue(client, {"function": "count"}) for _ in range(3)]

    assert ids_of(listed(client, "?status=queued")) == job_ids[::-1]


@pytest.mark.parametrize("status", ["started", "deferred", "scheduled", "finished", "failed", "canceled"])
def test_registry_jobs_come_highest_score_first(
    redis: fakeredis.FakeRedis, client: FlaskClient, status: str
) -> None:
    now = time.time()
    middle = store(redis, status, score=now + 200)
    newest = store(redis, status, score=now + 300)
    oldest = store(redis, status, score=now + 100)

    body = listed(client, f"?status={status}")

    assert ids_of(body) == [newest, middle, oldest]
    assert {job["status"] for job in body["jobs"]} == {status}


def test_unfiltered_listing_groups_by_status_then_queue(
    redis: fakeredis.FakeRedis, client: FlaskClient
) -> None:
    jobs = {(status, queue): store(redis, status, queue=queue) for status in STATUSES for queue in QUEUES}
    # Failed and stopped jobs share RQ's failed registry: one group, newest (here: stopped) first.
    groups = [
        ["queued"],
        ["started"],
        ["deferred"],
        ["scheduled"],
        ["finished"],
        ["stopped", "failed"],
        ["canceled"],
    ]
    expected = [jobs[status, queue] for group in groups for queue in QUEUES for status in group]

    body = listed(client, "?per_page=200")

    assert ids_of(body) == expected
    assert body["total"] == len(expected)


# --- Filters ---


@pytest.mark.parametrize("status", STATUSES)
def test_status_filter_lists_only_that_status(
    redis: fakeredis.FakeRedis, client: FlaskClient, status: str
) -> None:
    by_status = {each: store(redis, each) for each in STATUSES}

    body = listed(client, f"?status={status}")

    assert ids_of(body) == [by_status[status]]
    assert body["total"] == 1


def test_several_statuses_and_queues_can_be_asked_for(
    redis: fakeredis.FakeRedis, client: FlaskClient
) -> None:
    finished_low = store(redis, "finished", queue="low")
    canceled_high = store(redis, "canceled", queue="high")
    store(redis, "finished", queue="default")
    store(redis, "queued", queue="low")

    body = listed(client, "?status=finished,canceled&queue=low&queue=high")

    assert ids_of(body) == [finished_low, canceled_high]


def test_failed_and_stopped_together_are_counted_from_the_index(
    redis: fakeredis.FakeRedis, client: FlaskClient
) -> None:
    now = time.time()
    failed = store(redis, "failed", score=now + 100)
    stopped = store(redis, "stopped", score=now + 200)

    body = listed(client, "?status=failed,stopped")

    assert ids_of(body) == [stopped, failed]
    assert body["scan"] is None


@pytest.mark.parametrize("status", ["failed", "stopped"])
def test_failed_or_stopped_alone_reads_job_statuses_and_says_so(
    redis: fakeredis.FakeRedis, client: FlaskClient, status: str
) -> None:
    by_status = {each: store(redis, each) for each in ("failed", "stopped")}

    body = listed(client, f"?status={status}")

    assert ids_of(body) == [by_status[status]]
    assert body["total"] == 1
    assert body["scan"] == {"scanned": 2, "limit": 10_000, "complete": True}


def test_queue_filter_lists_only_that_queue(redis: fakeredis.FakeRedis, client: FlaskClient) -> None:
    high = store(redis, "finished", queue="high")
    store(redis, "finished", queue="low")

    assert ids_of(listed(client, "?queue=high")) == [high]


def test_function_filter_scans_the_jobs_and_reports_the_scan(
    redis: fakeredis.FakeRedis, client: FlaskClient
) -> None:
    counting = [store(redis, "finished", score=time.time() + 100 + n) for n in range(3)]
    store(redis, "finished", function=some_long_function)
    store(redis, "queued", function=some_long_function)

    body = listed(client, "?function=count&per_page=2")

    assert ids_of(body) == counting[::-1][:2]
    assert (body["total"], body["pages"]) == (3, 2)
    assert body["scan"] == {"scanned": 5, "limit": 10_000, "complete": True}


@pytest.mark.parametrize("config", [{"JOBS_SCAN_LIMIT": 3}])
def test_function_filter_counts_matches_among_the_newest_scanned_only(
    redis: fakeredis.FakeRedis, client: FlaskClient
) -> None:
    now = time.time()
    newest = store(redis, "finished", score=now + 500)
    store(redis, "finished", score=now + 400, function=some_long_function)
    store(redis, "finished", score=now + 300, function=some_long_function)
    store(redis, "finished", score=now + 200)  # beyond the limit

    body = listed(client, "?function=count")

    assert ids_of(body) == [newest]
    assert body["total"] == 1
    assert body["scan"] == {"scanned": 3, "limit": 3, "complete": False}


def test_empty_parameters_mean_no_filter(redis: fakeredis.FakeRedis, client: FlaskClient) -> None:
    job_id = store(redis, "finished")

    body = listed(client, "?status=&queue=&function=&page=&per_page=")

    assert ids_of(body) == [job_id]
    assert (body["page"], body["per_page"], body["scan"]) == (1, 50, None)


# --- Stale entries ---


@pytest.mark.parametrize("status", ["finished", "failed"])
def test_expired_registry_entries_are_neither_counted_nor_listed_nor_removed(
    redis: fakeredis.FakeRedis, client: FlaskClient, status: str
) -> None:
    live = store(redis, status)
    store(redis, status, score=time.time() - 10)
    before = snapshot(redis)

    body = listed(client, f"?status={status}")

    assert ids_of(body) == [live]
    assert body["total"] == 1
    # A GET changes nothing: RQ's workers clean the registries.
    assert snapshot(redis) == before


def test_jobs_gone_from_redis_are_left_out_of_the_page(
    redis: fakeredis.FakeRedis, client: FlaskClient
) -> None:
    kept = store(redis, "finished")
    gone = store(redis, "finished")
    redis.delete(Job.key_for(gone))
    # A hash a late write re-created without the job's data.
    broken = store(redis, "finished")
    redis.hdel(Job.key_for(broken), "data")

    body = listed(client)

    assert ids_of(body) == [kept]
    assert body["total"] == 3  # the index still holds three entries until a worker cleans it


def test_started_job_is_listed_once_with_its_job_id(redis: fakeredis.FakeRedis, client: FlaskClient) -> None:
    job_id = store(redis, "started")

    body = listed(client, "?status=started")

    assert ids_of(body) == [job_id]
    assert body["jobs"][0]["status"] == "started"


@pytest.mark.parametrize("config", [{"EXPOSE_TRACEBACKS": True}])
def test_summaries_show_the_error_but_not_the_traceback(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"function": "count", "kwargs": {"duration": -1}})
    work()

    (job,) = listed(client, "?status=failed")["jobs"]

    assert job["job_id"] == job_id
    assert job["error"] == "ValueError: duration must be between 0 and 3600 seconds, not -1"
    assert "traceback" not in job
    assert "traceback" in client.get(f"/jobs/{job_id}").get_json()


# --- Many jobs ---


def fill_finished(redis: fakeredis.FakeRedis, count: int, stored: int = 2_000) -> None:
    """Put `count` ids in the default FinishedJobRegistry, the newest `stored` with a job hash."""
    template = redis.hgetall(Job.key_for(store(redis, "finished", job_id="template")))
    now = time.time()
    scores = {f"job-{n:05d}": now + 3600 + n for n in range(count)}
    redis.zadd(FinishedJobRegistry("default", connection=redis).key, scores)
    with redis.pipeline(transaction=False) as pipe:
        for job_id in list(scores)[-stored:]:
            pipe.hset(Job.key_for(job_id), mapping=template)
        pipe.execute()


def recording_fetch_many(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch Job.fetch_many to record how many ids each call asks for."""
    sizes: list[int] = []
    original = Job.fetch_many

    def fetch_many(job_ids: Iterable[str], connection: Any, serializer: Any = None) -> list[Job | None]:
        ids = list(job_ids)
        sizes.append(len(ids))
        return original(ids, connection=connection, serializer=serializer)

    monkeypatch.setattr(Job, "fetch_many", fetch_many)
    return sizes


def test_a_page_of_a_huge_registry_fetches_only_that_page(
    redis: fakeredis.FakeRedis, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_finished(redis, 20_000)
    sizes = recording_fetch_many(monkeypatch)

    body = listed(client, "?status=finished&per_page=50&page=3")

    assert sizes == [50]
    assert (body["total"], body["pages"]) == (20_001, 401)
    assert ids_of(body) == [f"job-{n:05d}" for n in range(19_899, 19_849, -1)]


@pytest.mark.parametrize("config", [{"JOBS_SCAN_LIMIT": 2_000}])
def test_a_function_filter_on_a_huge_registry_stops_at_the_scan_limit(
    redis: fakeredis.FakeRedis, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_finished(redis, 20_000)
    sizes = recording_fetch_many(monkeypatch)

    body = listed(client, "?function=count&per_page=20")

    assert sizes == [20]
    assert body["scan"] == {"scanned": 2_000, "limit": 2_000, "complete": False}
    assert body["total"] == 2_000


# --- Errors ---


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("per_page=0", 422, "invalid_per_page"),
        ("per_page=201", 422, "invalid_per_page"),
        ("per_page=abc", 400, "invalid_per_page"),
        ("per_page=1.5", 400, "invalid_per_page"),
        ("page=0", 422, "invalid_page"),
        ("page=-3", 422, "invalid_page"),
        ("page=two", 400, "invalid_page"),
        ("page=99999999999", 400, "invalid_page"),
        ("status=done", 422, "invalid_status"),
        ("status=queued,bogus", 422, "invalid_status"),
        ("queue=urgent", 422, "invalid_queue"),
        ("function=nope", 422, "unknown_function"),
        ("sort=newest", 422, "unknown_parameters"),
    ],
)
def test_bad_query_is_refused_with_a_json_error(
    client: FlaskClient, query: str, status: int, code: str
) -> None:
    response = client.get(f"/jobs?{query}")

    assert response.status_code == status
    error = response.get_json()["error"]
    assert (error["status"], error["code"]) == (status, code)
    assert error["message"]


@pytest.mark.parametrize(
    ("query", "field", "valid"),
    [
        ("status=done", "statuses", STATUSES),
        ("queue=urgent", "queues", QUEUES),
        (
            "function=nope",
            "available",
            ["count", "noop", "render_report", "resize_image", "send_email", "some_long_function"],
        ),
        ("sort=newest", "allowed", ["status", "queue", "function", "page", "per_page"]),
    ],
)
def test_unknown_values_are_answered_with_the_valid_ones(
    client: FlaskClient, query: str, field: str, valid: list[str]
) -> None:
    error = client.get(f"/jobs?{query}").get_json()["error"]

    assert error[field] == valid


def test_jobs_answers_405_to_a_post(client: FlaskClient) -> None:
    response = client.post("/jobs")

    assert response.status_code == 405
    assert response.get_json()["error"]["status"] == 405
    assert "GET" in response.headers["Allow"]
