"""The fast worker's machinery: one long-lived work horse, and three Redis round trips per job.

RQ's forking `Worker` forks a work horse per job and spends about 20 round trips to Redis
on each; `SimpleWorker` runs the job in the worker itself, so a crashing job takes the worker
down, and still spends about 15. `FastWorkerBase` keeps what RQ writes (the same keys,
registries, executions, results and worker statistics, so rq-dashboard and every RQ tool see
the same jobs and workers) but writes it in three pipelines:

1. BLPOP on the queues, in priority order;
2. one MULTI/EXEC that reads the job and marks it started (job, execution, StartedJobRegistry,
   worker state);
3. one MULTI/EXEC that records the outcome (status, result, FinishedJobRegistry, worker
   statistics and state, heartbeat) and reads the job's dependents.

The job itself runs in a work horse (app.horse.WorkHorse) forked once and reused: a job that
kills its process fails with the horse's exit status and the worker forks a new horse. The
horse enforces the job's timeout with SIGALRM, as RQ does; a job that does not stop is killed
with its horse HARD_KILL_GRACE seconds later.

Failures, retries and stopped jobs take RQ's own paths (handle_job_failure and the job's
callbacks): they are rare, and they stay exactly RQ's.
"""

from __future__ import annotations

import json
import struct
import sys
import time
import traceback
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

import redis.exceptions
import rq
from redis.client import Pipeline
from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry, _job_stack
from rq.logutils import blue, green
from rq.queue import Queue
from rq.results import Result
from rq.timeouts import JobTimeoutException
from rq.utils import as_text, now, utcformat
from rq.worker import WorkerStatus

from app import sweeper
from app.horse import HorseDied, WorkHorse

# The length in front of each part of a job sent to the horse.
LENGTH = struct.Struct(">I")
# The horse's answers: the first two bytes say how the job ended.
FINISHED = b"ok"
RAISED = b"er"
RETRY = b"rt"  # the job returned an rq.Retry: try it again, as RQ's workers do


class FastWorkerBase(rq.Worker):
    """An RQ worker that runs jobs in one reused work horse, with pipelined bookkeeping."""

    # A job still running this long after its timeout (it ignored SIGALRM) is killed with its horse.
    HARD_KILL_GRACE = 10.0
    # Checks RQ makes before every job, made at most this often instead.
    HEARTBEAT_EVERY = 1.0
    SUSPENSION_CHECK_EVERY = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.horse: WorkHorse | None = None
        self._suspension_checked = 0.0
        self._started_at: datetime | None = None
        self._job_fields: dict[bytes, bytes] = {}

    # The work loop: RQ's work(), with these parts replaced --------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        """Fork the work horse, then register the worker as RQ does.

        First, while the worker has no threads yet (RQ's command listener starts in bootstrap).
        """
        self._spawn_horse()
        super().bootstrap(*args, **kwargs)

    def teardown(self) -> None:
        """Let the horse exit, then deregister the worker."""
        if self.horse is not None:
            self.horse.close()
        super().teardown()  # type: ignore[no-untyped-call]

    def check_for_suspension(self, burst: bool) -> None:
        """Honour `rq suspend`, looking at most once a second rather than before every job."""
        moment = time.monotonic()
        if moment - self._suspension_checked >= self.SUSPENSION_CHECK_EVERY:
            super().check_for_suspension(burst)
            self._suspension_checked = time.monotonic()

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """Renew the worker's key; the routine renewal after each job at most once a second.

        The worker's key lives worker_ttl (420 s) + 60 s; every job's last pipeline renews it too.
        """
        routine = timeout is None and pipeline is None
        last = self.last_heartbeat
        if routine and last is not None and (now() - last).total_seconds() < self.HEARTBEAT_EVERY:
            return
        super().heartbeat(timeout, pipeline)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Take the next job and mark it started: two round trips when a job is waiting."""
        if self.get_state() != WorkerStatus.IDLE:
            self.set_state(WorkerStatus.IDLE)
        qnames = ",".join(self.queue_names())
        self.procline("Listening on " + qnames)  # type: ignore[no-untyped-call]
        idle_since = time.monotonic()
        connection_wait_time = 1.0
        while True:
            try:
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()  # type: ignore[no-untyped-call]
                wait = timeout
                if wait is not None and max_idle_time is not None:
                    wait = max(1, min(wait, int(max_idle_time - (time.monotonic() - idle_since))))
                popped = self.queue_class.lpop(
                    [queue.key for queue in self._ordered_queues], wait, self.connection
                )
                if popped is None:
                    return None  # burst mode: every queue is empty
                queue_key, job_id = (as_text(part) for part in popped)
                queue = next(queue for queue in self._ordered_queues if queue.key == queue_key)
                job = self._start(job_id, queue)
                if job is None:
                    continue
                self.reorder_queues(reference_queue=queue)
                return job, queue
            except DequeueTimeout:
                self.heartbeat()
                if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                    return None
            except redis.exceptions.ConnectionError as error:
                self.log.error(
                    "Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
                    self.name,
                    error,
                    connection_wait_time,
                )
                time.sleep(connection_wait_time)
                connection_wait_time = min(
                    connection_wait_time * self.exponential_backoff_factor, self.max_connection_wait_time
                )

    def _start(self, job_id: str, queue: Queue) -> Job | None:
        """Read the job and mark it started, in one transaction; None if it no longer exists."""
        job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
        job.origin = queue.name
        ttl = self.get_heartbeat_ttl(job)
        with self.connection.pipeline() as pipe:
            pipe.hgetall(job.key)
            # A queued job's ttl stops counting once it starts (RQ's Job.perform does the same).
            pipe.persist(job.key)
            self.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            job.prepare_for_execution(self.name, pipeline=pipe)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.set_current_job_id(job.id, pipeline=pipe)
            self.set_current_job_working_time(0, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            raw: dict[bytes, bytes] = pipe.execute()[0]
        started = job.started_at or now()
        try:
            job.restore(raw)
        except NoSuchJobError:
            # Deleted while it waited in the queue: undo what the transaction wrote.
            with self.connection.pipeline() as pipe:
                pipe.delete(job.key)
                self.cleanup_execution(job, pipeline=pipe)
                self.set_state(WorkerStatus.IDLE, pipeline=pipe)
                pipe.execute()
            self.log.warning("Worker %s: job %s was deleted before it started; skipped", self.name, job_id)
            return None
        job.started_at = job.last_heartbeat = started
        job.worker_name = self.name
        job._status = JobStatus.STARTED
        self._started_at = started
        # What prepare_for_execution wrote, for the horse's copy of the job.
        raw.update(
            {
                b"status": JobStatus.STARTED.value.encode(),
                b"started_at": utcformat(started).encode(),
                b"last_heartbeat": utcformat(started).encode(),
                b"worker_name": self.name.encode(),
            }
        )
        self._job_fields = raw
        if self.log_job_description:
            self.log.info(
                "Worker %s: %s: %s (%s)", self.name, green(queue.name), blue(job.description), job.id
            )
        else:
            self.log.info("Worker %s: %s: %s", self.name, green(queue.name), job.id)
        return job

    # Running the job in the horse ----------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job in the horse, renewing heartbeats while it runs; record how it ended."""
        try:
            answer = self._run_in_horse(job)
        except HorseDied as death:
            self._horse_died(job, queue, death)
            self._spawn_horse()
        else:
            if answer is None:
                self._timed_out(job, queue)
                self._spawn_horse()
            elif answer[:2] == FINISHED:
                self._finished(job, queue, answer[2:])
            elif answer[:2] == RETRY:
                self._retry(job, queue, answer[2:])
            else:
                self._raised(job, queue, answer[2:].decode("utf-8", "replace"))
        finally:
            self._stopped_job_id = None if self._stopped_job_id == job.id else self._stopped_job_id
            self.procline("Listening on " + ",".join(self.queue_names()))  # type: ignore[no-untyped-call]

    def _run_in_horse(self, job: Job) -> bytes | None:
        """Send the job to the horse and wait; None if it overran its timeout and was killed."""
        if self.horse is None or not self.horse.running:
            self._spawn_horse()
        assert self.horse is not None
        self.horse.send(encode_job(job.id, self._job_fields))
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")  # type: ignore[no-untyped-call]
        began = time.monotonic()
        limit = job.timeout or self.queue_class.DEFAULT_TIMEOUT
        while not self.horse.poll(self.job_monitoring_interval):
            working = time.monotonic() - began
            self.set_current_job_working_time(working)
            if limit != -1 and working > limit + self.HARD_KILL_GRACE:
                self.kill_horse()
                self.horse.reap()
                return None
            self.maintain_heartbeats(job)
        return self.horse.receive()

    def _spawn_horse(self) -> None:
        if self.horse is not None:
            self.horse.close(timeout=0)
        self.horse = WorkHorse(self._perform_in_horse).start()
        self.log.debug("Worker %s: work horse %d started", self.name, self.horse.pid)

    @property
    def horse_pid(self) -> int:
        """Return the pid of the horse (RQ kills it on a cold shutdown or a stop-job command)."""
        return self.horse.pid if self.horse is not None and self.horse.status is None else 0

    def kill_horse(self, sig: int = 9) -> None:
        """Kill the horse (and the job it runs); the worker forks a new one."""
        if self.horse is not None:
            self.horse.kill(sig)
            self.log.info("Worker %s: killed horse pid %s", self.name, self.horse.pid)

    def wait_for_horse(self) -> tuple[int | None, int | None, None]:
        """Wait for the horse to exit (after kill_horse)."""
        if self.horse is None:
            return None, None, None
        pid = self.horse.pid
        return pid, self.horse.reap(), None

    # In the horse --------------------------------------------------------------------------

    def job_context(self, job: Job) -> AbstractContextManager[Any]:
        """Return the context a job runs in (the app's, in app.worker.FastWorker)."""
        return nullcontext()

    def _perform_in_horse(self, request: bytes) -> bytes:
        """Run one job in the horse: the function, its callbacks; return how it ended."""
        job = decode_job(request, self.job_class, self.connection, self.serializer)
        try:
            with self.job_context(job):
                _job_stack.push(job)  # type: ignore[no-untyped-call]
                try:
                    timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
                    with self.death_penalty_class(timeout, JobTimeoutException, job_id=job.id):
                        value = job._execute()
                finally:
                    _job_stack.pop()  # type: ignore[no-untyped-call]
                job.ended_at = now()
                if isinstance(value, Retry):  # no success callback, as in RQ's perform_job
                    return RETRY + encode_retry(value)
                job.execute_success_callback(self.death_penalty_class, value)
            try:
                payload = self.serializer.dumps(value) if value is not None else b""
            except Exception:  # as RQ stores a result it cannot serialize
                payload = self.serializer.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
            return FINISHED + payload
        except BaseException:  # a job may raise anything, even SystemExit
            job.ended_at = now()
            job._status = JobStatus.FAILED
            exc_info = sys.exc_info()
            exc_string = "".join(traceback.format_exception(*exc_info))
            try:
                with self.job_context(job):
                    job.execute_failure_callback(self.death_penalty_class, *exc_info)
            except BaseException:  # RQ reports the callback's error instead
                exc_info = sys.exc_info()
                exc_string = "".join(traceback.format_exception(*exc_info))
            self.handle_exception(job, *exc_info)
            return RAISED + exc_string.encode("utf-8", "replace")

    # Outcomes, in the worker ---------------------------------------------------------------

    def _finished(self, job: Job, queue: Queue, payload: bytes) -> None:
        """Record a success in one transaction; then enqueue the dependents, if the job has any."""
        job.ended_at = now()
        job._status = JobStatus.FINISHED
        value = self.serializer.loads(payload) if payload else None
        job._result = value
        started = self._started_at or job.started_at or job.ended_at
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        with self.connection.pipeline() as pipe:
            pipe.smembers(job.dependents_key)
            pipe.hset(job.key, mapping={"status": JobStatus.FINISHED, "ended_at": utcformat(job.ended_at)})
            if result_ttl != 0:
                Result.create(
                    job,
                    Result.Type.SUCCESSFUL,
                    return_value=value,
                    ttl=result_ttl,
                    worker_name=self.name,
                    pipeline=pipe,
                    execution_id=self.execution.id if self.execution else None,
                    execution_started_at=self.execution.created_at if self.execution else None,
                    execution_ended_at=job.ended_at,
                )
                job.finished_job_registry.add(job, result_ttl, pipe)
            if job.repeats_left is not None and job.repeats_left > 0:
                from rq.repeat import Repeat

                Repeat.schedule(job, queue, pipeline=pipe)
            else:
                job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=pipe)
            sweeper.untrack(pipe, job.id)
            self.increment_successful_job_count(pipeline=pipe)
            self.increment_total_working_time(job.ended_at - started, pipe)
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)
            super().heartbeat(pipeline=pipe)
            dependents = pipe.execute()[0]
        if dependents:
            queue.enqueue_dependents(job)
        job.send_webhooks(JobStatus.FINISHED)
        self.log.info(
            "Worker %s: %s: %s (%s) in %.1f ms",
            self.name,
            green(job.origin),
            blue("Job OK"),
            job.id,
            (job.ended_at - started).total_seconds() * 1000,
        )

    def _retry(self, job: Job, queue: Queue, payload: bytes) -> None:
        """Try again a job that returned an rq.Retry, through RQ's own handling of one."""
        job.ended_at = now()
        retry = decode_retry(payload)
        refresh_meta(job)
        assert self.execution is not None  # set by _start
        self.handle_job_retry(job, queue, retry, queue.started_job_registry, self.execution)
        self.set_state(WorkerStatus.IDLE)

    def _raised(self, job: Job, queue: Queue, exc_string: str) -> None:
        """Fail (or retry) a job that raised, through RQ's own failure handling."""
        job.ended_at = now()
        job._status = JobStatus.FAILED
        refresh_meta(job)
        self.handle_job_failure(job, queue=queue, exc_string=exc_string)
        self.set_state(WorkerStatus.IDLE)

    def _timed_out(self, job: Job, queue: Queue) -> None:
        """Fail a job that ignored its timeout and was killed with its horse."""
        job.ended_at = now()
        timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
        exc_string = (
            f"JobTimeoutException: Task exceeded maximum timeout value ({timeout} seconds) and did not "
            f"stop; its work horse was killed {self.HARD_KILL_GRACE:g} s later"
        )
        self.log.warning("Worker %s: job %s: %s", self.name, job.id, exc_string)
        refresh_meta(job)
        # As RQ's forking worker does for a job it kills past its timeout.
        pid, status = (self.horse.pid, self.horse.status) if self.horse else (None, None)
        self.handle_work_horse_killed(job, pid, status, None)  # type: ignore[no-untyped-call]
        self.handle_job_failure(job, queue=queue, exc_string=exc_string)
        self.set_state(WorkerStatus.IDLE)

    def _horse_died(self, job: Job, queue: Queue, death: HorseDied) -> None:
        """Fail a job whose horse died under it, or mark it stopped if a stop-job command killed it."""
        job.ended_at = now()
        refresh_meta(job)
        if self._stopped_job_id == job.id:
            self.log.warning("Worker %s: job %s stopped by user", self.name, job.id)
            if job.stopped_callback:
                job.execute_stopped_callback(self.death_penalty_class)
            self.handle_job_failure(
                job, queue=queue, exc_string="Job stopped by user, work-horse terminated."
            )
        else:
            exc_string = f"Work horse died while running the job ({death}); the worker started a new one."
            self.log.warning("Worker %s: job %s failed: %s", self.name, job.id, exc_string)
            self.handle_work_horse_killed(job, self.horse.pid if self.horse else None, death.status, None)  # type: ignore[no-untyped-call]
            self.handle_job_failure(job, queue=queue, exc_string=exc_string)
        self.set_state(WorkerStatus.IDLE)


def refresh_meta(job: Job) -> None:
    """Read back the meta a work horse wrote (progress, callbacks): RQ's retry saves the job whole."""
    try:
        job.get_meta(refresh=True)
    except redis.exceptions.RedisError as error:
        job.log.warning("Job %s: could not read back its meta: %s", job.id, error)


def encode_retry(retry: Retry) -> bytes:
    """Return an rq.Retry a job returned, for the horse to send to the worker."""
    asked = {"max": retry.max, "intervals": retry.intervals, "front": retry.enqueue_at_front}
    return json.dumps(asked).encode()


def decode_retry(payload: bytes) -> Retry:
    """Return the rq.Retry encode_retry sent."""
    asked = json.loads(payload)
    return Retry(max=asked["max"], interval=asked["intervals"], enqueue_at_front=asked["front"])


def encode_job(job_id: str, fields: dict[bytes, bytes]) -> bytes:
    """Encode a started job for the horse: its id, then its Redis hash's fields and values.

    Each part with its length in front: the job's data is zlib-compressed bytes, which a text
    format would have to escape (JSON: up to six bytes for one).
    """
    parts = [job_id.encode(), *(part for pair in fields.items() for part in pair)]
    return b"".join(LENGTH.pack(len(part)) + part for part in parts)


def decode_job(request: bytes, job_class: type[Job], connection: Any, serializer: Any) -> Job:
    """Rebuild in the horse the job the worker sent (nothing is read from Redis)."""
    parts, offset = [], 0
    while offset < len(request):
        (size,) = LENGTH.unpack_from(request, offset)
        offset += LENGTH.size
        parts.append(request[offset : offset + size])
        offset += size
    job = job_class(parts[0].decode(), connection=connection, serializer=serializer)
    job.restore(dict(zip(parts[1::2], parts[2::2], strict=True)))
    return job
