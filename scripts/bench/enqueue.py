"""Scenarios 1 and 2: how fast jobs get into Redis, over HTTP (one or a batch a request) and in-process."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from bench.load import LoadResult, Request, Tally, request_once, run_load, run_parallel, split
from bench.stack import Stack, Web

NOOP = "app.jobs.noop.noop"
SINGLE = Request("POST", "/enqueue", json.dumps({"function": "noop"}).encode(), expect=202, jobs=1)
IN_PROCESS_PROCESSES = 2
# Turns bare and ours take at the single-job enqueue, each with new connections: how gunicorn's
# workers happen to share the connections moves a round's rate by a third, so many short
# rounds, added up, are fairer to both than a few long ones.
ROUNDS = 20


def batch_request(size: int) -> Request:
    """Return a POST /enqueue of a JSON array of `size` no-op jobs."""
    return Request(
        "POST", "/enqueue", json.dumps([{"function": "noop"}] * size).encode(), expect=202, jobs=size
    )


@dataclass
class Rate:
    """A throughput measurement: calls made, how many failed, jobs made, wall time."""

    label: str
    calls: int
    errors: int
    jobs: int
    seconds: float
    note: str = ""

    @property
    def job_rate(self) -> float:
        """Return the jobs made per second."""
        return self.jobs / self.seconds if self.seconds else 0.0

    @property
    def call_rate(self) -> float:
        """Return the successful calls per second."""
        return (self.calls - self.errors) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Round:
    """One turn of the single-job comparison: the bare app and ours, each on the same number of requests."""

    bare: LoadResult
    ours: LoadResult


def combined_ratio(rounds: list[Round]) -> float:
    """Return ours' requests/s over the bare app's, the rounds added up as the run adds them."""
    ours = combined([turn.ours for turn in rounds]).rate
    bare = combined([turn.bare for turn in rounds]).rate
    return ours / bare if bare else 0.0


def ratio_interval(rounds: list[Round], level: float = 0.9, resamples: int = 2000) -> tuple[float, float]:
    """Return a bootstrap interval of combined_ratio: the rounds drawn again with replacement.

    A round's rate moves by a fifth or more with how the machine shares its CPUs at that moment;
    the interval says how far the ratio of one run can be from what more rounds would give.
    """
    draw = random.Random(0)  # the same rounds give the same interval
    ratios = sorted(combined_ratio(draw.choices(rounds, k=len(rounds))) for _ in range(resamples))
    tail = (1 - level) / 2
    return ratios[int(tail * resamples)], ratios[min(resamples - 1, int((1 - tail) * resamples))]


def unavailable(label: str, note: str) -> Rate:
    """Return a Rate for something that could not be measured."""
    return Rate(label, 0, 0, 0, 0.0, note)


def rate_of(label: str, result: LoadResult) -> Rate:
    """Return a load run's Rate, its errors in the note."""
    note = ""
    if result.error_count:
        counts = ", ".join(f"{count} {kind}" for kind, count in result.tally.errors.most_common())
        note = f"errors: {counts}; first: {result.tally.sample.strip()[:160]}"
    jobs = result.tally.ok * result.request.jobs
    return Rate(label, result.requests, result.error_count, jobs, result.seconds, note)


def measure_http(
    stack: Stack, web: Web, request: Request, total: int, connections: int, warmup: int
) -> LoadResult:
    """Warm the server up, then time `total` requests; flush the jobs they made."""
    if warmup:
        run_load(web.host, web.port, request, warmup, connections)
        stack.flush()
    result = run_load(web.host, web.port, request, total, connections)
    stack.flush()
    return result


def enqueue_in_process(redis_url: str, total: int, processes: int = IN_PROCESS_PROCESSES) -> Rate:
    """Time `Queue.enqueue(noop)` called `total` times from a few processes."""

    def prepare(count: int) -> Callable[[], int]:
        connection = Redis.from_url(redis_url)
        connection.ping()
        queue = Queue("default", connection=connection, serializer=JSONSerializer)

        def run() -> int:
            for _ in range(count):
                queue.enqueue(NOOP)
            return count

        return run

    seconds, counts = run_parallel(prepare, split(total, processes), timeout=600)
    return Rate(f"Queue.enqueue in-process ({processes} processes)", total, 0, sum(counts), seconds)


def run_single(
    stack: Stack, ours: Web, requests: int, connections: int, warmup: int, rounds: int = ROUNDS
) -> tuple[Rate, Rate, Rate, list[Round]]:
    """Scenario 1: the bare Flask app, the job server (one job a request) and Queue.enqueue in-process.

    Bare and ours take turns, `rounds` times each, and each total is the sum of its rounds: a
    slow moment of a shared machine then falls on both, not on whichever ran second. Who goes
    first alternates.
    """
    bare = stack.start_web("bench_bare:app", "bare")
    try:
        for web in (bare, ours):
            if warmup:
                run_load(web.host, web.port, SINGLE, warmup, connections)
        stack.flush()
        bare_rounds, ours_rounds = [], []
        for turn, share in enumerate(split(requests, rounds)):
            pairs = [(bare, bare_rounds), (ours, ours_rounds)]
            for web, results in pairs if turn % 2 == 0 else reversed(pairs):
                results.append(measure_http(stack, web, SINGLE, share, connections, 0))
    finally:
        stack.stop([bare.child])
    in_process = enqueue_in_process(stack.redis_url, requests)
    stack.flush()
    return (
        rate_of("bare Flask app: Queue.enqueue (same gunicorn config)", combined(bare_rounds)),
        rate_of("job server: POST /enqueue, 1 job", combined(ours_rounds)),
        in_process,
        [Round(bare, ours) for bare, ours in zip(bare_rounds, ours_rounds, strict=True)],
    )


def combined(results: list[LoadResult]) -> LoadResult:
    """Return the rounds of one load as one run: their requests, outcomes and times added up."""
    tally = Tally()
    for result in results:
        tally.add(result.tally)
    return LoadResult(
        results[0].request,
        sum(result.requests for result in results),
        tally,
        sum(result.seconds for result in results),
    )


def run_batch(stack: Stack, ours: Web, size: int, requests: int, connections: int, warmup: int) -> Rate:
    """Scenario 2: POST /enqueue with a JSON array of `size` jobs; unavailable when the server refuses it."""
    label = f"job server: POST /enqueue, {size} jobs a request"
    status, body = request_once(ours.host, ours.port, batch_request(2))
    stack.flush()
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if status == 202 and isinstance(answer, dict) and len(answer.get("jobs") or []) == 2:
        result = measure_http(stack, ours, batch_request(size), requests, connections, warmup)
        return rate_of(label, result)
    if status == 202 and isinstance(answer, dict):
        made = f"one job of {answer.get('function')!r}"
        return unavailable(label, f'not available: an array of 2 jobs got 202 without "jobs" ({made})')
    error = answer.get("error") if isinstance(answer, dict) else None
    text = (
        f"{error.get('code')}: {error.get('message')}"
        if isinstance(error, dict)
        else body.decode(errors="replace")
    )
    return unavailable(label, f"not available: an array of 2 jobs got {status} {text.strip()[:100]}")
