"""Scenario 4: from POST /enqueue to the job's end, one job at a time, and GET /check_status throughput."""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rq.job import Job
from rq.serializers import JSONSerializer

from bench.load import LoadResult, Request, run_load
from bench.stack import Stack, Web, WorkerStartError
from bench.workers import Mode, one_line

BODY = json.dumps({"function": "noop"}).encode()
HEADERS = {"Content-Type": "application/json"}
WARMUP = 5
JOB_TIMEOUT = 10.0
POLL_INTERVAL = 0.002


@dataclass
class LatencyRun:
    """Latencies of sequential jobs with one idle worker of a mode, in milliseconds."""

    mode: Mode
    latencies: list[float] = field(default_factory=list)  # POST sent -> job ended (ended_at)
    posts: list[float] = field(default_factory=list)  # POST sent -> 202 read
    note: str = ""

    @property
    def p50(self) -> float | None:
        """Return the median latency in ms."""
        return percentile(self.latencies, 50)

    @property
    def p99(self) -> float | None:
        """Return the 99th percentile latency in ms."""
        return percentile(self.latencies, 99)

    @property
    def post_p50(self) -> float | None:
        """Return the median time of the POST itself in ms."""
        return percentile(self.posts, 50)


def percentile(values: list[float], percent: int) -> float | None:
    """Return a percentile of the values (None without values)."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def run_latency(stack: Stack, web: Web, mode: Mode, samples: int) -> tuple[LatencyRun, str | None]:
    """Post `samples` jobs one after the other to one idle worker; return the run and a finished job's id."""
    stack.flush()
    run = LatencyRun(mode)
    try:
        children = stack.start_workers(f"latency-{mode.name}", mode, 1)
    except WorkerStartError as error:
        run.note = f"not available: {one_line(error)}"
        return run, None
    client = http.client.HTTPConnection(web.host, web.port, timeout=30)
    job_id = None
    try:
        for number in range(WARMUP + samples):
            sent = time.time()
            client.request("POST", "/enqueue", body=BODY, headers=HEADERS)
            response = client.getresponse()
            answer = response.read()
            answered = time.time()
            if response.status != 202:
                raise RuntimeError(f"POST /enqueue answered {response.status}: {answer[:200]!r}")
            job_id = json.loads(answer)["job_id"]
            ended = wait_for_end(stack, job_id, children[0].check_alive)
            if number >= WARMUP:
                run.latencies.append((ended - sent) * 1000)
                run.posts.append((answered - sent) * 1000)
    except (RuntimeError, TimeoutError) as error:
        run.note = f"failed: {one_line(error)}"
        job_id = None
    finally:
        client.close()
        stack.stop(children)
    return run, job_id


def wait_for_end(stack: Stack, job_id: str, alive: Callable[[], bool]) -> float:
    """Wait until the job has finished; return its ended_at as a Unix time."""
    key = Job.key_for(job_id)
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        status = stack.redis.hget(key, "status")
        if status == b"finished":
            break
        if status in (b"failed", b"stopped", b"canceled"):
            raise RuntimeError(f"job {job_id} ended {status.decode()}")
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished after {JOB_TIMEOUT:g}s (status {status!r})")
        time.sleep(POLL_INTERVAL)
    ended_at = Job.fetch(job_id, connection=stack.redis, serializer=JSONSerializer).ended_at
    if ended_at is None:
        raise RuntimeError(f"job {job_id} finished without ended_at")
    return ended_at.timestamp()


def run_check_status(web: Web, job_id: str, requests: int, connections: int) -> LoadResult:
    """Time GET /check_status on a finished job from concurrent keep-alive clients."""
    request = Request("GET", f"/check_status?job_id={job_id}", expect=200)
    run_load(web.host, web.port, request, min(requests, 200), connections)
    return run_load(web.host, web.port, request, requests, connections)
