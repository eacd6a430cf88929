"""Two `python -m app.periodic` schedulers on one Redis: a 1-second job is enqueued once per tick."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.cron import CronScheduler, get_cron_job_history_key
from rq.job import Job

from app.queue import SERIALIZER
from tests.integration.conftest import (
    HTTP_TIMEOUT,
    START_TIMEOUT,
    Child,
    log_path,
    service_env,
    wait_for,
)

# A queue no worker listens on: the jobs stay there to be counted, away from other tests.
QUEUE = "periodic-test"
JOB_NAME = "every-second"
# Ticks to see while both schedulers run, and how long that may take.
TICKS = 5
TICKS_DEADLINE = 30.0
STOP_DEADLINE = 10.0


@contextmanager
def running_scheduler(redis_url: str, logs: Path, periodic_jobs: str) -> Iterator[Child]:
    """Run `python -m app.periodic` with these PERIODIC_JOBS; SIGTERM it afterwards."""
    env = service_env(redis_url, QUEUES=f"high,default,low,{QUEUE}", PERIODIC_JOBS=periodic_jobs)
    child = Child("periodic", [sys.executable, "-m", "app.periodic"], env, log_path(logs, "periodic"))
    try:
        yield child
    finally:
        child.stop(STOP_DEADLINE)


def scheduler_pids(connection: Redis) -> set[int]:
    """Return the pids of the cron schedulers registered in Redis."""
    return {scheduler.pid for scheduler in CronScheduler.all(connection=connection)}


def enqueued_ticks(queue: Queue) -> list[int]:
    """Return the tick (Unix time) of each periodic job in the queue, in enqueue order."""
    jobs = Job.fetch_many(queue.get_job_ids(), connection=queue.connection, serializer=SERIALIZER)
    return [int(datetime.fromisoformat(job.meta["tick"]).timestamp()) for job in jobs if job is not None]


def test_two_schedulers_enqueue_a_one_second_job_once_per_tick(redis_url: str, logs_dir: Path) -> None:
    periodic_jobs = json.dumps(
        [{"function": "count", "kwargs": {"duration": 0}, "interval": 1, "queue": QUEUE, "name": JOB_NAME}]
    )
    with Redis.from_url(redis_url, socket_timeout=HTTP_TIMEOUT) as connection:
        queue = Queue(QUEUE, connection=connection, serializer=SERIALIZER)
        try:
            with (
                running_scheduler(redis_url, logs_dir, periodic_jobs) as first,
                running_scheduler(redis_url, logs_dir, periodic_jobs) as second,
            ):
                wait_for(
                    lambda: (
                        first.check_alive()
                        and second.check_alive()
                        and {first.pid, second.pid} <= scheduler_pids(connection)
                    ),
                    START_TIMEOUT,
                    message="both schedulers to register in Redis",
                )
                both_running = len(enqueued_ticks(queue))
                wait_for(
                    lambda: (
                        first.check_alive()
                        and second.check_alive()
                        and len(enqueued_ticks(queue)) >= both_running + TICKS
                    ),
                    TICKS_DEADLINE,
                    message=f"{TICKS} ticks with both schedulers running",
                )
            assert first.process.returncode == 0
            assert second.process.returncode == 0
            ticks = enqueued_ticks(queue)
        finally:
            queue.delete(delete_jobs=True)
            connection.delete(get_cron_job_history_key(JOB_NAME))

    assert len(ticks) == len(set(ticks)), f"a tick was enqueued more than once: {ticks}"
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), f"ticks missed or out of order: {ticks}"
