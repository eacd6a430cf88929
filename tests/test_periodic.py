"""Periodic jobs: PERIODIC_JOBS checked at start-up, ticks shared by schedulers, one job per tick."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue

import app.periodic as periodic
from app.periodic import PeriodicJobsError, PeriodicScheduler, load_periodic_jobs, main
from app.queue import SERIALIZER
from app.sweeper import INFLIGHT_KEY

START = datetime(2030, 1, 1, 12, 0, 0, 400_000, tzinfo=UTC)


class Clock:
    """A settable `now()` for the scheduler."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.moment += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Freeze the scheduler's clock at START."""
    clock = Clock(START)
    monkeypatch.setattr(periodic, "now", clock)
    yield clock


def jobs_in(redis: fakeredis.FakeRedis, queue: str = "default") -> list[Any]:
    """Return the jobs waiting in a queue, oldest first."""
    return Queue(queue, connection=redis, serializer=SERIALIZER).get_jobs()


def load(app: Flask, entries: Any) -> list[periodic.PeriodicJob]:
    """Check PERIODIC_JOBS given as it would be in the environment (JSON text)."""
    return load_periodic_jobs({**app.config, "PERIODIC_JOBS": json.dumps(entries)})


# Configuration ------------------------------------------------------------------------------


def test_no_periodic_jobs_by_default(app: Flask) -> None:
    assert load_periodic_jobs(app.config) == []


def test_periodic_jobs_read_from_json_with_the_functions_defaults(app: Flask) -> None:
    [every_five_minutes, every_minute] = load(
        app,
        [
            {"function": "count", "kwargs": {"duration": 1}, "cron": "*/5 * * * *"},
            {"function": "some_long_function", "args": [1], "interval": 60, "queue": "low", "name": "echo"},
        ],
    )

    assert every_five_minutes.name == "count"
    assert every_five_minutes.function.name == "count"
    assert every_five_minutes.kwargs == {"duration": 1}
    assert every_five_minutes.cron == "*/5 * * * *"
    assert every_five_minutes.interval is None
    assert every_five_minutes.queue == app.config["DEFAULT_QUEUE"]
    assert every_five_minutes.timeout == app.config["JOB_TIMEOUT"]
    assert every_five_minutes.result_ttl == app.config["RESULT_TTL"]
    assert every_minute.name == "echo"
    assert every_minute.args == (1,)
    assert every_minute.interval == 60
    assert every_minute.queue == "low"


def test_periodic_jobs_may_be_a_list_in_the_config(app: Flask) -> None:
    entries = [{"function": "count", "interval": 10, "timeout": 30, "result_ttl": 0}]

    [job] = load_periodic_jobs({**app.config, "PERIODIC_JOBS": entries})

    assert (job.interval, job.timeout, job.result_ttl) == (10, 30, 0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "PERIODIC_JOBS is not valid JSON"),
        ('{"function": "count"}', "PERIODIC_JOBS must be a list of objects, not object"),
        ("[1]", "PERIODIC_JOBS[0] must be an object, not integer"),
        ('[{"interval": 5}]', 'PERIODIC_JOBS[0] needs "function"'),
        ('[{"function": "nope", "interval": 5}]', "PERIODIC_JOBS[0]: no function named 'nope' is registered"),
        ('[{"function": "count", "every": 5}]', "PERIODIC_JOBS[0] has unknown fields ['every']"),
        ('[{"function": "count", "args": {}, "interval": 5}]', '"args" must be an array'),
        ('[{"function": "count", "kwargs": [], "interval": 5}]', '"kwargs" an object'),
        (
            '[{"function": "count", "kwargs": {"nope": 1}, "interval": 5}]',
            "PERIODIC_JOBS[0]: the arguments do not fit count: got an unexpected keyword argument 'nope'",
        ),
        (
            '[{"function": "count", "kwargs": {"duration": "long"}, "interval": 5}]',
            "argument 'duration' must be number, not string",
        ),
        ('[{"function": "send_email", "interval": 5}]', "missing a required argument: 'to'"),
        ('[{"function": "count"}]', 'needs either "cron" or "interval"'),
        ('[{"function": "count", "cron": "* * * * *", "interval": 5}]', 'needs either "cron" or "interval"'),
        ('[{"function": "count", "cron": "every minute"}]', "'every minute' is not a valid cron expression"),
        ('[{"function": "count", "interval": 0}]', '"interval" must be a whole number of seconds'),
        ('[{"function": "count", "interval": 1.5}]', '"interval" must be a whole number of seconds'),
        ('[{"function": "count", "interval": true}]', '"interval" must be a whole number of seconds'),
        ('[{"function": "count", "interval": 5, "queue": "urgent"}]', "queue 'urgent' is not one of high"),
        ('[{"function": "count", "interval": 5, "timeout": 0}]', '"timeout" must be a whole number from 1'),
        ('[{"function": "count", "interval": 5, "result_ttl": -1}]', '"result_ttl" must be a whole number'),
        ('[{"function": "count", "interval": 5, "name": ""}]', '"name" must be a non-empty string'),
        (
            '[{"function": "count", "interval": 5}, {"function": "count", "cron": "0 * * * *"}]',
            "more than one job named 'count': give each its own \"name\"",
        ),
        (
            '[{"function": "count", "interval": 5}, {"function": "nope", "interval": 5}]',
            "PERIODIC_JOBS[1]: no function named 'nope'",
        ),
    ],
)
def test_invalid_periodic_jobs_are_refused_with_a_clear_error(app: Flask, raw: str, message: str) -> None:
    with pytest.raises(PeriodicJobsError) as caught:
        load_periodic_jobs({**app.config, "PERIODIC_JOBS": raw})

    assert message in str(caught.value)


def test_unknown_function_error_lists_the_available_ones(app: Flask) -> None:
    with pytest.raises(PeriodicJobsError, match=r"available: count, .*some_long_function"):
        load(app, [{"function": "nope", "interval": 5}])


def test_main_refuses_to_start_on_invalid_periodic_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    status = main({"APP_ENV": "testing", "PERIODIC_JOBS": '[{"function": "nope", "interval": 5}]'})

    assert status == 2
    assert "app.periodic: PERIODIC_JOBS[0]: no function named 'nope'" in capsys.readouterr().err


# Ticks --------------------------------------------------------------------------------------


def test_interval_ticks_fall_on_multiples_of_the_interval_not_on_the_start_time(
    app: Flask, redis: fakeredis.FakeRedis, clock: Clock
) -> None:
    [job] = PeriodicScheduler(redis, load(app, [{"function": "count", "interval": 60}])).periodic_jobs

    # Unlike RQ's own interval jobs, nothing runs at start: the first tick is the next full minute.
    assert not job.should_run()
    assert job.next_enqueue_time == datetime(2030, 1, 1, 12, 1, tzinfo=UTC)


def test_cron_ticks_follow_the_schedule_in_utc(app: Flask, redis: fakeredis.FakeRedis, clock: Clock) -> None:
    [job] = PeriodicScheduler(redis, load(app, [{"function": "count", "cron": "*/5 * * * *"}])).periodic_jobs

    assert job.next_enqueue_time == datetime(2030, 1, 1, 12, 5, tzinfo=UTC)


def test_schedulers_started_at_different_times_agree_on_the_ticks(
    app: Flask, redis: fakeredis.FakeRedis, clock: Clock
) -> None:
    jobs = load(app, [{"function": "count", "interval": 10}])
    first = PeriodicScheduler(redis, jobs, name="first")
    clock.advance(3.3)
    second = PeriodicScheduler(redis, jobs, name="second")

    assert first.periodic_jobs[0].next_enqueue_time == second.periodic_jobs[0].next_enqueue_time


# One job per tick ---------------------------------------------------------------------------


def test_two_schedulers_enqueue_one_job_per_tick(
    app: Flask, redis: fakeredis.FakeRedis, clock: Clock
) -> None:
    jobs = load(app, [{"function": "count", "kwargs": {"duration": 0}, "interval": 1}])
    schedulers = [PeriodicScheduler(redis, jobs, name="one"), PeriodicScheduler(redis, jobs, name="two")]

    for tick in range(5):
        clock.advance(1)
        # Either may come first; the other finds the tick taken.
        for scheduler in schedulers if tick % 2 else reversed(schedulers):
            scheduler.enqueue_jobs()
        assert len(jobs_in(redis)) == tick + 1

    ticks = [job.meta["tick"] for job in jobs_in(redis)]
    assert ticks == [f"2030-01-01T12:00:0{second}+00:00" for second in range(1, 6)]


def test_a_tick_is_not_enqueued_twice_by_one_scheduler(
    app: Flask, redis: fakeredis.FakeRedis, clock: Clock
) -> None:
    scheduler = PeriodicScheduler(redis, load(app, [{"function": "count", "interval": 1}]))
    clock.advance(1)

    scheduler.enqueue_jobs()
    scheduler.enqueue_jobs()

    assert len(jobs_in(redis)) == 1


def test_a_scheduler_that_wakes_after_the_next_tick_is_due_skips_the_missed_one(
    app: Flask, redis: fakeredis.FakeRedis, clock: Clock
) -> None:
    scheduler = PeriodicScheduler(redis, load(app, [{"function": "count", "interval": 10}]))
    [job] = scheduler.periodic_jobs
    clock.advance(25)  # slept through the ticks at :10 and :20

    assert scheduler.enqueue_jobs() == [job]

    # The tick at :10 is too late to fire (its claim might have expired); the next is at :30.
    assert jobs_in(redis) == []
    assert job.next_enqueue_time == datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC)


def test_periodic_job_is_json_and_runs_like_an_enqueued_one(
    app: Flask, client: FlaskClient, redis: fakeredis.FakeRedis, clock: Clock, work: Callable[[], None]
) -> None:
    scheduler = PeriodicScheduler(
        redis, load(app, [{"function": "count", "kwargs": {"duration": 0}, "interval": 5, "queue": "high"}])
    )
    clock.advance(5)
    scheduler.enqueue_jobs()
    [job] = jobs_in(redis, "high")
    # Watched by the sweeper, like a job from /enqueue.
    assert redis.zscore(INFLIGHT_KEY, job.id) is not None
    work()

    status = client.get("/check_status", query_string={"job_id": job.id}).get_json()
    assert status["status"] == "finished"
    assert status["function"] == "count"
    assert status["queue"] == "high"
    result = client.get("/get_result", query_string={"job_id": job.id}).get_json()
    assert result["result"]["counted"] == 1
    # Recorded where RQ keeps a cron job's history.
    assert scheduler.periodic_jobs[0].get_job_ids(redis) == [job.id]
