"""Periodic jobs: registered functions enqueued on a cron schedule or an interval.

`python -m app.periodic` runs RQ's cron scheduler on the PERIODIC_JOBS setting. Any number
of these may run (one per machine, say): each tick of a job is claimed in Redis by one of
them, which enqueues it; the others skip it.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, cron_job_registry
from rq.cron import CronJob, CronScheduler
from rq.defaults import DEFAULT_CRON_JOB_HISTORY_LIMIT, DEFAULT_CRON_JOB_HISTORY_TTL
from rq.exceptions import StopRequested
from rq.job import Job
from rq.utils import now

from app import sweeper
from app.config import build_config
from app.jobs.registry import ArgumentsError, JobFunction, UnknownFunction, json_type, registry
from app.queue import SERIALIZER, worker_connection

FIELDS = ("function", "args", "kwargs", "cron", "interval", "queue", "timeout", "result_ttl", "name")
# A claimed tick stays claimed this long after the job's next tick, for clocks that disagree.
CLAIM_MARGIN = 60
# Seconds between attempts to restart the scheduler after Redis failed it.
RESTART_DELAY = 5.0
# Each scheduler renews its entry in this sorted set (name: time of the heartbeat) at least every
# HEARTBEAT_INTERVAL seconds; GET /ready counts the entries renewed within HEARTBEAT_TTL.
HEARTBEAT_KEY = "periodic:heartbeats"
HEARTBEAT_INTERVAL = 10
HEARTBEAT_TTL = 3 * HEARTBEAT_INTERVAL


class PeriodicJobsError(ValueError):
    """PERIODIC_JOBS does not describe valid periodic jobs."""


@dataclass(frozen=True)
class PeriodicJob:
    """One checked entry of PERIODIC_JOBS."""

    name: str
    function: JobFunction
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str
    timeout: int
    result_ttl: int
    failure_ttl: int
    cron: str | None = None
    interval: int | None = None


def load_periodic_jobs(config: Mapping[str, Any]) -> list[PeriodicJob]:
    """Read PERIODIC_JOBS (JSON text or a list) and check every entry; raise PeriodicJobsError."""
    entries = config["PERIODIC_JOBS"]
    if isinstance(entries, str):
        try:
            entries = json.loads(entries.strip() or "[]")
        except ValueError as error:
            raise PeriodicJobsError(f"PERIODIC_JOBS is not valid JSON: {error}") from None
    if not isinstance(entries, list | tuple):
        raise PeriodicJobsError(f"PERIODIC_JOBS must be a list of objects, not {json_type(entries)}")
    jobs = [_read_entry(f"PERIODIC_JOBS[{index}]", entry, config) for index, entry in enumerate(entries)]
    names = [job.name for job in jobs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise PeriodicJobsError(
            f"PERIODIC_JOBS has more than one job named {', '.join(map(repr, repeated))}: "
            'give each its own "name"'
        )
    return jobs


def _read_entry(where: str, entry: Any, config: Mapping[str, Any]) -> PeriodicJob:
    if not isinstance(entry, dict):
        raise PeriodicJobsError(f"{where} must be an object, not {json_type(entry)}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise PeriodicJobsError(f"{where} has unknown fields {unknown}; the fields are {', '.join(FIELDS)}")
    name = entry.get("function")
    if not isinstance(name, str):
        raise PeriodicJobsError(f'{where} needs "function", the name of a registered function')
    try:
        function = registry.get(name)
    except UnknownFunction:
        raise PeriodicJobsError(
            f"{where}: no function named {name!r} is registered; available: {', '.join(registry.names())}"
        ) from None
    args, kwargs = entry.get("args", []), entry.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise PeriodicJobsError(f'{where}: "args" must be an array and "kwargs" an object')
    try:
        function.check_arguments(args, kwargs)
    except ArgumentsError as error:
        raise PeriodicJobsError(f"{where}: the arguments do not fit {function.name}: {error}") from None
    cron, interval = entry.get("cron"), entry.get("interval")
    if (cron is None) == (interval is None):
        raise PeriodicJobsError(f'{where} needs either "cron" or "interval" (seconds), not both or neither')
    if cron is not None and not (isinstance(cron, str) and croniter.is_valid(cron)):
        raise PeriodicJobsError(f"{where}: {cron!r} is not a valid cron expression")
    if interval is not None and not (type(interval) is int and interval >= 1):
        raise PeriodicJobsError(f'{where}: "interval" must be a whole number of seconds, 1 or more')
    queue = entry.get("queue", function.queue or config["DEFAULT_QUEUE"])
    if queue not in config["QUEUES"]:
        raise PeriodicJobsError(f"{where}: queue {queue!r} is not one of {', '.join(config['QUEUES'])}")
    job_name = entry.get("name", function.name)
    if not isinstance(job_name, str) or not job_name.strip():
        raise PeriodicJobsError(f'{where}: "name" must be a non-empty string')
    return PeriodicJob(
        name=job_name,
        function=function,
        args=tuple(args),
        kwargs=kwargs,
        queue=queue,
        timeout=_bounded(
            where,
            "timeout",
            entry.get("timeout", function.timeout or config["JOB_TIMEOUT"]),
            1,
            config["MAX_JOB_TIMEOUT"],
        ),
        result_ttl=_bounded(
            where, "result_ttl", entry.get("result_ttl", config["RESULT_TTL"]), 0, config["MAX_RESULT_TTL"]
        ),
        failure_ttl=config["FAILURE_TTL"],
        cron=cron,
        interval=interval,
    )


def _bounded(where: str, field: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise PeriodicJobsError(
            f'{where}: "{field}" must be a whole number from {low} to {high}, not {value!r}'
        )
    return value


class PeriodicCronJob(CronJob):
    """A periodic job in RQ's cron scheduler, ticking on the same instants in every scheduler.

    Cron ticks are the schedule's (in UTC); interval ticks fall on multiples of the interval
    since the epoch (an hourly job at every full hour), not on "start time + interval", so
    that schedulers started at different times agree on which tick is which.
    """

    def __init__(self, job: PeriodicJob) -> None:
        super().__init__(
            queue_name=job.queue,
            func=job.function.func,
            args=job.args,
            kwargs=job.kwargs,
            interval=job.interval,
            cron=job.cron,
            job_timeout=job.timeout,
            result_ttl=job.result_ttl,
            failure_ttl=job.failure_ttl,
            name=job.name,
        )
        self.spec = job
        # RQ runs an interval job at once on start; ours waits for its first tick.
        self.next_enqueue_time = self.tick_after(now())

    def tick_after(self, moment: datetime) -> datetime:
        """Return the job's first tick after `moment`."""
        if self.cron:
            tick: datetime = croniter(self.cron, moment).get_next(datetime)
            return tick
        assert self.interval
        return datetime.fromtimestamp((moment.timestamp() // self.interval + 1) * self.interval, UTC)

    def get_next_enqueue_time(self) -> datetime:
        """Return the next tick after the latest run (ticks missed meanwhile are skipped)."""
        return self.tick_after(self.latest_enqueue_time or now())

    def should_run(self) -> bool:
        """Tell whether the job's next tick has come."""
        return self.next_enqueue_time is not None and now() >= self.next_enqueue_time

    def claim(self, connection: Redis, tick: datetime, scheduler: str) -> bool:
        """Claim this tick of the job for one scheduler; False when another has it or it is past.

        A tick can be claimed only until the next one is due, and its claim outlives that,
        so no second scheduler can claim it after the first claim expires.
        """
        period = (self.tick_after(tick) - tick).total_seconds()
        if (now() - tick).total_seconds() >= period:
            return False
        key = f"rq:cron_job:{self.name}:tick:{int(tick.timestamp())}"
        return bool(connection.set(key, scheduler, nx=True, ex=math.ceil(period) + CLAIM_MARGIN))

    def enqueue(self, connection: Redis, tick: datetime | None = None) -> Job:
        """Enqueue the function as JSON and record it in the cron job's history.

        (RQ's CronJob.enqueue pickles the job, which this server's workers do not read.)
        """
        queue = Queue(self.queue_name, connection=connection, serializer=SERIALIZER)
        meta = {"function": self.spec.function.name, "periodic": self.name}
        if tick is not None:
            meta["tick"] = tick.isoformat()
        with connection.pipeline() as pipeline:
            job = queue.enqueue_call(
                func=self.spec.function.func,
                args=self.args,
                kwargs=self.kwargs,
                timeout=self.spec.timeout,
                result_ttl=self.spec.result_ttl,
                failure_ttl=self.spec.failure_ttl,
                description=self.spec.function.name,
                meta=meta,
                pipeline=pipeline,
            )
            assert job.enqueued_at is not None
            enqueued = job.enqueued_at.timestamp()
            sweeper.track(pipeline, job.id)
            pipeline.zadd(self.job_history_key, {job.id: enqueued})
            pipeline.zremrangebyrank(self.job_history_key, 0, -(DEFAULT_CRON_JOB_HISTORY_LIMIT + 1))
            pipeline.expire(self.job_history_key, DEFAULT_CRON_JOB_HISTORY_TTL)
            cron_job_registry.add(self.name, pipeline, enqueue_timestamp=enqueued)
            pipeline.execute()
        return job


class PeriodicScheduler(CronScheduler):
    """RQ's cron scheduler for PERIODIC_JOBS: of all the running ones, one enqueues each tick."""

    def __init__(
        self,
        connection: Redis,
        jobs: list[PeriodicJob],
        logging_level: str | int = logging.INFO,
        name: str = "",
    ) -> None:
        super().__init__(connection, logging_level=logging_level, name=name)
        self.config_file = "PERIODIC_JOBS"
        self.periodic_jobs = [PeriodicCronJob(job) for job in jobs]
        self._cron_jobs = list(self.periodic_jobs)

    def enqueue_jobs(self) -> list[CronJob]:
        """Enqueue each job whose tick has come, unless another scheduler did; return those jobs."""
        due = [job for job in self.periodic_jobs if job.should_run()]
        for job in due:
            assert job.next_enqueue_time is not None
            tick = job.next_enqueue_time
            if job.claim(self.connection, tick, self.name):
                enqueued = job.enqueue(self.connection, tick)
                self.log.info("Periodic job %s: enqueued %s for %s", job.name, enqueued.id, tick.isoformat())
            else:
                self.log.debug(
                    "Periodic job %s: tick %s taken by another scheduler", job.name, tick.isoformat()
                )
            job.set_enqueue_time(now())
        return list(due)

    def heartbeat(self) -> None:
        """Renew RQ's registration of the scheduler and its entry in HEARTBEAT_KEY."""
        super().heartbeat()  # type: ignore[no-untyped-call]
        moment = time.time()
        with self.connection.pipeline() as pipeline:
            pipeline.zadd(HEARTBEAT_KEY, {self.name: moment})
            # Entries of schedulers that stopped without a word (kill -9) do not pile up.
            pipeline.zremrangebyscore(HEARTBEAT_KEY, "-inf", moment - 86400)
            pipeline.execute()

    def register_death(self, pipeline: Any = None) -> None:
        """Unregister the scheduler, from HEARTBEAT_KEY too: it stops now."""
        super().register_death(pipeline)
        self.connection.zrem(HEARTBEAT_KEY, self.name)

    def calculate_sleep_interval(self) -> float:
        """Return the seconds until the next tick, at most HEARTBEAT_INTERVAL."""
        return min(float(super().calculate_sleep_interval()), HEARTBEAT_INTERVAL)  # type: ignore[no-untyped-call]


def main(overrides: Mapping[str, Any] | None = None) -> int:
    """Run a scheduler for PERIODIC_JOBS until SIGTERM or Ctrl-C; return the exit status."""
    config = build_config(overrides)
    try:
        jobs = load_periodic_jobs(config)
    except PeriodicJobsError as error:
        print(f"app.periodic: {error}", file=sys.stderr)
        return 2
    connection = worker_connection(config)
    scheduler = PeriodicScheduler(connection, jobs, logging_level=config["LOG_LEVEL"])
    for job in jobs:
        when = f"on cron '{job.cron}' (UTC)" if job.cron else f"every {job.interval}s"
        scheduler.log.info("Periodic job %s: %s on %s %s", job.name, job.function.name, job.queue, when)
    if not jobs:
        scheduler.log.info("No PERIODIC_JOBS: nothing to enqueue")
    while True:
        try:
            scheduler.start()  # type: ignore[no-untyped-call]
            return 0
        except RedisError as error:
            # WorkerRedis already retried for about 30 seconds: a longer outage.
            scheduler.log.error(
                "Periodic scheduler stopped by Redis (%s); restarting in %gs", error, RESTART_DELAY
            )
        try:
            time.sleep(RESTART_DELAY)
        except (StopRequested, KeyboardInterrupt):
            return 0


if __name__ == "__main__":
    sys.exit(main())
