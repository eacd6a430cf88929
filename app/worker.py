"""RQ workers that run each job inside the Flask app: `rq worker -w app.worker.Worker`."""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import rq
from flask import Flask
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue

from app import create_app, metrics, sweeper
from app.fastworker import FastWorkerBase, refresh_meta
from app.horse import HorseDied
from app.queue import SERIALIZER


def release_free_memory() -> None:
    """Hand back to the system the memory freed since start-up (glibc keeps it otherwise).

    Importing the app leaves a few MiB of freed memory in malloc's heap; an idle worker would
    keep them for the rest of its life.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to hand back
        pass


class QuietMaintenanceFilter(logging.Filter):
    """Log RQ's "cleaning registries" lines at DEBUG: maintenance every few seconds repeats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Lower the level of the maintenance lines; let every record through."""
        if record.levelno == logging.INFO and str(record.msg).startswith("Worker %s: cleaning registries"):
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


class AppWorkerMixin:
    """Build the app once per worker and run every job in its application context.

    The job's `base_url` (the server that enqueued it) becomes the request context, so
    `url_for(..., _external=True)` gives that server's absolute URLs inside a job.

    The worker counts each job it runs, by how it ended, and times it (app.metrics); outside
    tests, in the directory gunicorn's /metrics reads.
    """

    app: Flask
    _stop_requested: bool
    # Whether the job object in the worker knows how each job ended (else metrics read it back).
    knows_job_outcome = False

    def __init__(self, *args: Any, app: Flask | None = None, **kwargs: Any) -> None:
        # Jobs are JSON whatever the command line says: the server never writes pickle.
        kwargs["serializer"] = SERIALIZER
        super().__init__(*args, **kwargs)
        for queue in self.queues:  # type: ignore[attr-defined]
            queue.serializer = self.serializer  # type: ignore[attr-defined]
        self.app = app or create_app(connection=self.connection, serving=False)  # type: ignore[attr-defined]
        if not self.app.testing:
            metrics.use_multiprocess()
        # Likewise the app's intervals, not RQ's (30 s and 10 minutes): see Worker below.
        self.job_monitoring_interval: int = self.app.config["JOB_MONITORING_INTERVAL"]
        self.maintenance_interval: int = self.app.config["MAINTENANCE_INTERVAL"]
        release_free_memory()
        rq_log = logging.getLogger("rq.worker")
        if not any(isinstance(existing, QuietMaintenanceFilter) for existing in rq_log.filters):
            rq_log.addFilter(QuietMaintenanceFilter())

    @property
    def dequeue_timeout(self) -> int:
        """Return how long an idle worker waits for a job before it runs its maintenance again."""
        # RQ waits worker_ttl - 15 = 405 s, so an idle worker would clean registries that rarely.
        rq_timeout: int = super().dequeue_timeout  # type: ignore[misc]
        return max(1, min(rq_timeout, self.maintenance_interval))

    def _shutdown(self) -> None:
        """Stop after the running job, or at once when idle; note the request in either case.

        When idle, RQ only raises StopRequested from the signal handler. A signal that lands
        while Python runs a finalizer (a connection pool's __del__) has that exception
        ignored: the worker forgot it was told to stop, started its scheduler again and ran
        until it was killed. With the request noted, its next maintenance stops it.
        """
        self._stop_requested = True
        super()._shutdown()  # type: ignore[misc]

    def run_maintenance_tasks(self) -> None:
        """Stop if told to while idle (see _shutdown); else RQ's maintenance, every few seconds."""
        if self._stop_requested:
            raise StopRequested()
        super().run_maintenance_tasks()  # type: ignore[misc]

    def clean_registries(self) -> None:
        """Run RQ's maintenance, requeue jobs a dying worker took but never started, trim the heap."""
        super().clean_registries()  # type: ignore[misc]
        sweeper.sweep(self.connection)  # type: ignore[attr-defined]
        # The maintenance runs every few seconds, and in an idle worker: a good time to hand
        # back what the last burst of jobs allocated and freed.
        release_free_memory()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job (in a work horse, for the forking Worker), then record its metrics here.

        Here, in the worker itself, not in perform_job: a forking worker's work horse is a new
        process per job, and each process would leave metric files of its own.
        """
        started = time.monotonic()
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
        finally:
            metrics.record_job(job, time.monotonic() - started, refresh=not self.knows_job_outcome)

    def handle_work_horse_killed(
        self, job: Job, retpid: int | None, ret_val: int | None, rusage: Any
    ) -> None:
        """Run the job's failure callback, which RQ skips when the work horse dies under a job.

        Killed by the OOM killer, a segfault or a timeout it ignored, the job would otherwise
        leave what depends on it deferred for ever, and a try to be retried no error to show
        (app.callbacks). RQ fails or retries the job right after, as for any failure.
        """
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[misc]
        # What the horse noted (progress): the callback and RQ's retry save the meta whole.
        refresh_meta(job)
        death = HorseDied(ret_val)
        try:
            with self.job_context(job):
                job.execute_failure_callback(self.death_penalty_class, HorseDied, death, None)  # type: ignore[attr-defined]
        except Exception:  # RQ has logged it; the job still fails or is retried
            pass

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """Perform the job inside the app (and the enqueuing request's URL context)."""
        with self.job_context(job):
            return super().perform_job(job, queue)  # type: ignore[misc,no-any-return]

    @contextmanager
    def job_context(self, job: Job) -> Iterator[None]:
        """Run the job in the app's context, and in its enqueuing request's URL context if known."""
        base_url = job.meta.get("base_url")
        with (
            self.app.app_context(),
            self.app.test_request_context("/", base_url=base_url) if base_url else nullcontext(),
        ):
            yield


class Worker(AppWorkerMixin, rq.Worker):
    """RQ's forking worker: each job runs in a fresh child process.

    A job whose worker dies (kill -9 of the worker and its work horse, a lost machine) is
    failed with AbandonedJobError, or requeued when its Retry has retries left, 10-20 s later:

    - While the work horse runs, the worker renews the job's entry in the StartedJobRegistry
      every JOB_MONITORING_INTERVAL (5 s), scored now + get_heartbeat_ttl(). RQ's TTL adds a
      fixed 60 s; ours adds JOB_HEARTBEAT_GRACE (10 s), so a dead worker's entry expires
      5 + 10 = 15 s after its last renewal, that is 10-15 s after it died.
    - RQ's maintenance (StartedJobRegistry.cleanup) fails or requeues expired entries. Idle
      workers run it every MAINTENANCE_INTERVAL (5 s), not every 10 minutes, and wake from
      waiting for jobs that often (dequeue_timeout): the job fails at most 5 s after expiry.

    A live worker's renewal may be up to 10 s late (a slow or restarting Redis) before its
    job counts as abandoned. Busy workers run no maintenance: when every surviving worker is
    busy, the job fails as soon as one of them is done with its own.
    """

    def get_heartbeat_ttl(self, job: Job) -> int:
        """Return the seconds a running job's heartbeat lasts: the next renewal plus the grace."""
        return self.job_monitoring_interval + int(self.app.config["JOB_HEARTBEAT_GRACE"])


class SimpleWorker(AppWorkerMixin, rq.SimpleWorker):
    """RQ's in-process worker: no fork per job (used by the unit tests)."""


class FastWorker(AppWorkerMixin, FastWorkerBase):
    """The fast worker for short jobs: one reused work horse, three Redis round trips per job.

    Each job still runs in another process than the worker, with its timeout enforced, and a
    job that crashes its process fails without taking the worker down (app.fastworker). The
    horse is reused, so a job sees what earlier jobs left in its process (module state,
    memory): use the forking Worker for jobs that need a fresh process each time.
    """

    knows_job_outcome = True

    def get_heartbeat_ttl(self, job: Job) -> int:
        """Return the seconds a running job's heartbeat lasts: the next renewal plus the grace."""
        return self.job_monitoring_interval + int(self.app.config["JOB_HEARTBEAT_GRACE"])
