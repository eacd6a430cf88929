"""The sweeper: a job a dying worker took off its queue is queued again, nothing else is."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
from flask.testing import FlaskClient

from app.sweeper import INFLIGHT_KEY, sweep
from tests.conftest import enqueue

QUEUE_KEY = "rq:queue:default"


def take_off_the_queue(redis: fakeredis.FakeRedis, job_id: str) -> None:
    """Do what a worker killed right after BLPOP leaves behind: the id is in no list."""
    assert redis.lrem(QUEUE_KEY, 1, job_id) == 1


def test_every_queued_job_is_watched(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    job_id = enqueue(client, {"hello": "world"})

    assert redis.zscore(INFLIGHT_KEY, job_id) is not None


def test_a_lost_job_is_queued_again_on_the_second_sighting_and_then_runs(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"hello": "world"})
    take_off_the_queue(redis, job_id)

    assert sweep(redis, grace=0) == []  # first sighting: a live worker may be starting it
    assert sweep(redis, grace=0) == [job_id]
    work()

    assert client.get(f"/check_status?job_id={job_id}").get_json()["status"] == "finished"


def test_a_job_waiting_in_its_queue_is_not_queued_twice(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, {"hello": "world"})

    assert sweep(redis, grace=0) == []
    assert sweep(redis, grace=0) == []
    assert redis.lrange(QUEUE_KEY, 0, -1) == [job_id.encode()]


def test_a_missing_job_is_requeued_only_after_the_grace_period(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, {"hello": "world"})
    take_off_the_queue(redis, job_id)
    redis.zadd(INFLIGHT_KEY, {job_id: 0})

    sweep(redis, grace=30)
    redis.zadd(INFLIGHT_KEY, {job_id: 0})

    assert sweep(redis, grace=30) == []  # seen missing just now, not 30 s ago
    assert redis.lrange(QUEUE_KEY, 0, -1) == []


def test_ended_jobs_are_forgotten(
    client: FlaskClient, redis: fakeredis.FakeRedis, work: Callable[[], None]
) -> None:
    finished = enqueue(client, {"hello": "world"})
    failed = enqueue(client, {"function": "count", "kwargs": {"duration": -1}})
    work()

    sweep(redis, grace=0)

    assert redis.zscore(INFLIGHT_KEY, finished) is None
    assert redis.zscore(INFLIGHT_KEY, failed) is None


def test_only_one_sweeper_runs_at_a_time(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    job_id = enqueue(client, {"hello": "world"})
    take_off_the_queue(redis, job_id)
    sweep(redis, grace=0)
    redis.set("rq-job-server:sweep-lock", "1")

    assert sweep(redis, grace=0) == []
    assert redis.lrange(QUEUE_KEY, 0, -1) == []
