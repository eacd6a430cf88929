"""Waiting for a job to change: ?wait= long polls and the event streams share this polling.

RQ 2.12 announces nothing when a job changes (no pub/sub message for a status, and progress
is a plain write of the job's meta), and keyspace notifications are a Redis server setting
that managed Redis often refuses. So a waiting request reads two small fields of the job's
hash (HMGET status meta: no arguments, no upload) every EVENTS_POLL_INTERVAL seconds until
they change, the job ends, or its time is up. Each wait is bounded (MAX_WAIT,
EVENTS_MAX_DURATION), so a waiting request holds a gthread thread, never a process, and
never for long.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, request
from redis import Redis
from rq.job import Job, JobStatus
from rq.utils import as_text

from app.errors import APIError
from app.queue import SERIALIZER, get_redis

ENDED = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})
# However EVENTS_POLL_INTERVAL is set, a waiting request never reads Redis in a busy loop.
MIN_POLL_INTERVAL = 0.01


@dataclass(frozen=True)
class JobState:
    """What a watcher compares: the job's status and its meta (progress, errors of retries)."""

    status: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        """Tell whether the job has finished, failed, stopped or been canceled."""
        return self.status in {status.value for status in ENDED}

    @classmethod
    def of(cls, job: Job) -> JobState:
        """Return the state of a job already fetched."""
        status = job.get_status(refresh=False)
        return cls(status.value if status else None, dict(job.meta))


def read_states(connection: Redis, job_ids: list[str]) -> list[JobState | None]:
    """Return each job's state in one round trip; None for a job that no longer exists."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hmget(Job.key_for(job_id), "status", "meta")
        replies = pipe.execute()
    states: list[JobState | None] = []
    for status, meta in replies:
        if status is None:
            states.append(None)
            continue
        try:
            loaded = SERIALIZER.loads(meta) if meta else {}  # type: ignore[no-untyped-call]
        except ValueError:
            loaded = {}
        states.append(JobState(as_text(status), loaded if isinstance(loaded, dict) else {}))
    return states


def read_wait() -> float:
    """Return the request's ?wait= in seconds (0 without one); 400 if not a number, 422 out of range."""
    raw = request.args.get("wait", "").strip()
    if not raw:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds):
        raise APIError(400, "invalid_wait", f"wait must be a number of seconds, not {raw[:20]!r}.")
    limit = current_app.config["MAX_WAIT"]
    if not 0 <= seconds <= limit:
        raise APIError(
            422, "invalid_wait", f"wait must be from 0 to {limit:g} seconds, not {seconds:g}.", max=limit
        )
    return seconds


def wait_until(job_id: str, seconds: float, done: Callable[[JobState | None], bool]) -> None:
    """Return once `done(state)` holds for the job's state (None: gone), or after `seconds`."""
    connection = get_redis()
    interval = poll_interval()
    deadline = time.monotonic() + seconds
    while True:
        if done(read_states(connection, [job_id])[0]):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(interval, remaining))


def wait_for_change(job: Job, seconds: float) -> None:
    """Return once the job's status or meta (its progress) differs from `job`'s, or it ends."""
    before = JobState.of(job)
    if before.ended or seconds <= 0:
        return
    wait_until(job.id, seconds, lambda state: state is None or state.ended or state != before)


def wait_for_end(job: Job, seconds: float) -> None:
    """Return once the job has ended (or is gone), or after `seconds`."""
    if seconds <= 0 or JobState.of(job).ended:
        return
    wait_until(job.id, seconds, lambda state: state is None or state.ended)


def poll_interval() -> float:
    """Return the seconds between two reads of Redis by a waiting request."""
    return max(MIN_POLL_INTERVAL, float(current_app.config["EVENTS_POLL_INTERVAL"]))
