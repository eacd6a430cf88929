"""Scenario 3: how fast workers of each mode run no-op jobs, their Redis commands per job and memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.memory import Footprint, footprint
from bench.stack import Child, Stack, WorkerStartError, idle_workers, wait_until

NOOP = "app.jobs.noop.noop"
# RQ's own workers import the job's module in each work horse: one that imports nothing.
BARE_NOOP = "bench_noop.noop"
WORKERS = 2
POLL_INTERVAL = 0.02
IDLE_SETTLE = 6.0


@dataclass(frozen=True)
class Mode:
    """A kind of worker: its class, the no-op it runs, and whether it is the job server's."""

    name: str
    worker_class: str
    function: str
    ours: bool

    def command(self, python: str, redis_url: str) -> list[str]:
        """Return the command of one worker: ours as worker.sh runs them, RQ's with `rq worker`."""
        if self.ours:
            # The scheduler is left out: it is one process per Redis, not per worker.
            return [python, "-m", "app.work", "--mode", self.name, "--without-scheduler"]
        rq = str(Path(python).parent / "rq")
        return [rq, "worker", "--url", redis_url, "--worker-class", self.worker_class, "--serializer", "json",
                "--logging_level", "WARNING", "default"]  # fmt: skip


FAST = Mode("fast", "app.worker.FastWorker", NOOP, ours=True)
FORK = Mode("fork", "app.worker.Worker", NOOP, ours=True)
RQ_WORKER = Mode("rq.Worker", "rq.worker.Worker", BARE_NOOP, ours=False)
RQ_SIMPLE = Mode("rq.SimpleWorker", "rq.worker.SimpleWorker", BARE_NOOP, ours=False)
MODES = (FAST, FORK, RQ_WORKER, RQ_SIMPLE)


@dataclass
class WorkerRun:
    """A throughput run of one mode: wall time, Redis commands, and the idle workers' memory after."""

    mode: Mode
    jobs: int = 0
    seconds: float = 0.0
    failed: int = 0
    commands_per_job: float | None = None
    memory: Footprint | None = None
    note: str = ""

    @property
    def rate(self) -> float | None:
        """Return the jobs run per second, or None when the mode did not run."""
        return self.jobs / self.seconds if self.seconds else None


def run_workers(stack: Stack, mode: Mode, jobs: int, count: int = WORKERS) -> WorkerRun:
    """Start idle workers of the mode, queue `jobs` no-ops in one pipeline, time until all finished."""
    stack.flush()
    try:
        children = stack.start_workers(mode.name, mode, count)
    except WorkerStartError as error:
        return WorkerRun(mode, note=f"not available: {one_line(error)}")
    try:
        return _time_jobs(stack, mode, jobs, children)
    except (RuntimeError, TimeoutError) as error:  # a worker died, or never came back to idle
        return WorkerRun(mode, note=f"failed: {one_line(error)}")
    finally:
        stack.stop(children)
        stack.flush()


def _time_jobs(stack: Stack, mode: Mode, jobs: int, children: list[Child]) -> WorkerRun:
    redis = stack.redis
    queue = Queue("default", connection=redis, serializer=JSONSerializer)
    finished_key = FinishedJobRegistry(queue=queue).key
    failed_key = FailedJobRegistry(queue=queue).key
    pipe = redis.pipeline()
    queue.enqueue_many([Queue.prepare_data(mode.function, timeout=60) for _ in range(jobs)], pipeline=pipe)
    # The commands this benchmark sends from here on: the pipeline (in MULTI ... EXEC), the polls.
    producer_commands = len(pipe) + 2
    polls = 0
    redis.config_resetstat()
    started = time.monotonic()
    pipe.execute()
    deadline = started + 60 + jobs * 0.1
    while True:
        with redis.pipeline(transaction=False) as poll:
            poll.zcard(finished_key)
            poll.zcard(failed_key)
            finished, failed = poll.execute()
        polls += 1
        if finished + failed >= jobs:
            break
        if time.monotonic() > deadline:
            return WorkerRun(mode, note=f"timed out: {finished} of {jobs} jobs finished")
        for child in children:
            child.check_alive()
        time.sleep(POLL_INTERVAL)
    seconds = time.monotonic() - started
    # Not our INFO and CONFIG RESETSTAT ("cmdstat_config|resetstat" since Redis 7).
    calls = sum(
        stat["calls"]
        for name, stat in redis.info("commandstats").items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    )
    worker_commands = calls - producer_commands - 2 * polls
    names = {child.name for child in children}
    wait_until(lambda: idle_workers(redis, names) == names, 30, "the workers to be idle")
    # Idle means idle for a while: long enough for our workers' maintenance (every 5 s), which
    # hands back to the system the memory the burst of jobs freed.
    time.sleep(IDLE_SETTLE)
    memory = max((footprint(child.pid) for child in children), key=lambda found: found.pss_total)
    note = f"{failed} jobs failed" if failed else ""
    return WorkerRun(mode, jobs, seconds, failed, worker_commands / jobs, memory, note)


def one_line(error: BaseException) -> str:
    """Return an error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__
