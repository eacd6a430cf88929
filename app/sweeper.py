"""Requeue jobs a worker took off a queue but died before it could start them.

An RQ worker listening on several queues takes a job with BLPOP, then marks it started. If it
is killed between the two, the job is in no queue and no registry: it would stay `queued`
for ever. Every job the server queues is tracked in a sorted set until it ends; workers sweep
it during maintenance and put such a job back on its queue, once two sweeps 30 s apart have
seen it missing (a live worker starts a job it took within milliseconds).
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import as_text

log = logging.getLogger(__name__)

INFLIGHT_KEY = "rq-job-server:inflight"
LOCK_KEY = "rq-job-server:sweep-lock"
SUSPECT_PREFIX = "rq-job-server:missing:"
ENDED = {
    status.value for status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
}


def track(pipeline: Pipeline | Redis, job_id: str) -> None:
    """Watch a job until it ends (call it in the pipeline that queues the job)."""
    pipeline.zadd(INFLIGHT_KEY, {job_id: time.time()})


def untrack(pipeline: Pipeline | Redis, job_id: str) -> None:
    """Stop watching a job that has ended (call it in the pipeline that records the end)."""
    pipeline.zrem(INFLIGHT_KEY, job_id)


def sweep(connection: Redis, grace: float = 30.0, batch: int = 1000) -> list[str]:
    """Forget ended jobs, requeue lost ones; return the ids requeued. One sweeper at a time."""
    if not connection.set(LOCK_KEY, "1", nx=True, ex=60):
        return []
    try:
        return _sweep(connection, grace, batch)
    finally:
        connection.delete(LOCK_KEY)


def _sweep(connection: Redis, grace: float, batch: int) -> list[str]:
    now = time.time()
    stale = connection.zrangebyscore(INFLIGHT_KEY, "-inf", now - grace, 0, batch)
    ids = [as_text(raw) for raw in stale]  # type: ignore[arg-type]
    if not ids:
        return []
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(Job.key_for(job_id), "status", "origin")
        replies = pipe.execute()
    ended, waiting, queued = [], [], {}
    for job_id, (status, origin) in zip(ids, replies, strict=True):
        if status is None or status.decode() in ENDED:
            ended.append(job_id)
        elif status.decode() == JobStatus.QUEUED.value and origin:
            queued[job_id] = origin.decode()
        else:
            # Started, scheduled or deferred: look again later, after the jobs behind it.
            waiting.append(job_id)
    present = _queued_ids(connection, set(queued.values()))
    missing = {job_id: origin for job_id, origin in queued.items() if job_id not in present}
    waiting.extend(job_id for job_id in queued if job_id in present)
    requeued = _requeue_confirmed(connection, missing, now, grace)
    with connection.pipeline(transaction=False) as pipe:
        if ended:
            pipe.zrem(INFLIGHT_KEY, *ended)
        rotate = waiting + list(missing)
        if rotate:
            pipe.zadd(INFLIGHT_KEY, dict.fromkeys(rotate, now), xx=True)
        pipe.execute()
    return requeued


def _queued_ids(connection: Redis, origins: set[str]) -> set[str]:
    """Return the ids in these queues' lists (and RQ's intermediate lists of one-queue workers)."""
    if not origins:
        return set()
    with connection.pipeline(transaction=False) as pipe:
        for origin in origins:
            queue = Queue(origin, connection=connection)
            pipe.lrange(queue.key, 0, -1)
            pipe.lrange(queue.intermediate_queue_key, 0, -1)
        lists = pipe.execute()
    return {raw.decode() for entries in lists for raw in entries}


def _requeue_confirmed(connection: Redis, missing: dict[str, str], now: float, grace: float) -> list[str]:
    """Requeue the jobs seen missing by an earlier sweep at least `grace` seconds ago."""
    requeued = []
    for job_id, origin in missing.items():
        key = SUSPECT_PREFIX + job_id
        if connection.set(key, str(now), nx=True, ex=max(60, int(grace * 10))):
            continue
        first_seen = float(connection.get(key) or now)
        if now - first_seen < grace:
            continue
        # Still queued and in no list: put it back where a worker will find it.
        with connection.pipeline() as pipe:
            pipe.rpush(Queue(origin, connection=connection).key, job_id)
            pipe.delete(key)
            pipe.execute()
        log.warning("Job %s was taken by a worker that died before starting it; queued it again.", job_id)
        requeued.append(job_id)
    return requeued
