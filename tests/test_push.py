"""The Lua script that queues a job writes what RQ writes, on a real redis-server."""

from __future__ import annotations

import pytest
from redis import Redis
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus

from app import callbacks, create_app, sweeper
from app.idempotency import Claim
from app.push import push_job
from app.queue import SERIALIZER
from app.worker import SimpleWorker

# Set anew by every enqueue: when, and (job_id) the job's own id.
MOMENTS = {"created_at", "enqueued_at"}


@pytest.fixture
def redis(real_redis: Redis) -> Redis:
    """Return the real Redis, for the app and the workers alike."""
    return real_redis


@pytest.fixture
def queue(redis: Redis) -> Queue:
    """Return the high queue, with the app's JSON serializer."""
    return Queue("high", connection=redis, serializer=SERIALIZER)


def make_job(queue: Queue) -> Job:
    """Return a job with most of the options /enqueue sets, not yet saved."""
    return queue.create_job(
        "tests.horse_jobs.echo",
        args=[{"text": "café ✓"}],
        timeout=45,
        result_ttl=300,
        ttl=900,
        failure_ttl=3600,
        description="echo",
        meta={"function": "echo", "base_url": "http://example.test/"},
        retry=Retry(2, [5, 10]),
        on_failure=Callback(callbacks.on_failure),
        on_stopped=Callback(callbacks.on_stopped),
    )


def stored(redis: Redis, job: Job) -> dict[bytes, bytes]:
    """Return the job's hash without the fields each enqueue sets anew."""
    return {field: value for field, value in redis.hgetall(job.key).items() if field.decode() not in MOMENTS}


def test_the_job_s_hash_is_the_one_rq_writes(redis: Redis, queue: Queue) -> None:
    ours, rqs = make_job(queue), make_job(queue)

    push_job(redis, queue, ours, None, 60)
    queue.enqueue_job(rqs)

    assert stored(redis, ours) == stored(redis, rqs)
    assert redis.hget(ours.key, "status") == b"queued"
    assert set(redis.hkeys(ours.key)) == set(redis.hkeys(rqs.key))
    assert 890 < redis.ttl(ours.key) <= 900
    assert redis.lrange(queue.key, 0, -1) == [ours.id.encode(), rqs.id.encode()]
    assert queue.key.encode() in redis.smembers("rq:queues")
    assert redis.zscore(sweeper.INFLIGHT_KEY, ours.id)


def test_a_job_without_a_ttl_does_not_expire(redis: Redis, queue: Queue) -> None:
    job = queue.create_job("app.jobs.noop.noop")

    push_job(redis, queue, job, None, 60)

    assert redis.ttl(job.key) == -1


def test_the_claim_points_at_the_job_with_its_ttl(redis: Redis, queue: Queue) -> None:
    claim = Claim("mine", "fingerprint", ("rq-job-server:idempotency:a", "rq-job-server:idempotency:b"))
    job = queue.create_job("app.jobs.noop.noop", job_id=claim.job_id)

    push_job(redis, queue, job, claim, 120)

    for key in claim.keys:
        assert redis.get(key) == claim.done_record().encode()
        assert 110 < redis.ttl(key) <= 120


def test_a_redis_that_lost_the_script_gets_it_again(redis: Redis, queue: Queue) -> None:
    first, second = queue.create_job("app.jobs.noop.noop"), queue.create_job("app.jobs.noop.noop")
    push_job(redis, queue, first, None, 60)

    redis.script_flush()  # as a restarted Redis, or a replica after a failover
    push_job(redis, queue, second, None, 60)

    assert redis.lrange(queue.key, 0, -1) == [first.id.encode(), second.id.encode()]


def test_a_worker_runs_the_job(redis: Redis, queue: Queue) -> None:
    job = queue.create_job("tests.horse_jobs.echo", args=[{"text": "café ✓"}], description="echo")
    push_job(redis, queue, job, None, 60)

    SimpleWorker([queue], connection=redis, app=create_app({"APP_ENV": "testing"}, connection=redis)).work(
        burst=True
    )

    done = Job.fetch(job.id, connection=redis, serializer=SERIALIZER)
    assert done.get_status() == JobStatus.FINISHED
    assert done.return_value() == {"text": "café ✓"}
