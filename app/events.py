"""Live updates: Server-Sent Events streams for one job and for the job list.

A stream reads Redis every EVENTS_POLL_INTERVAL seconds (see app.longpoll for why it polls)
and sends an event only when something changed. It is bounded: it ends when its job ends,
and in any case after EVENTS_MAX_DURATION seconds, with a `retry:` that makes the browser's
EventSource reconnect a second later. Under gunicorn's gthread worker an open stream holds one
thread of one worker, mostly asleep; the other threads keep answering.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request, stream_with_context
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from app import listing
from app.listing import Filters
from app.longpoll import JobState, poll_interval, read_states
from app.queue import SERIALIZER, get_queue, get_redis
from app.status import describe_job, fetch_job

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

# What EventSource waits before reconnecting once a stream ends (ms), and after an outage.
RETRY_MS = 1000
UNAVAILABLE_RETRY_MS = 5000
# A comment line on a quiet stream keeps proxies from closing it, and finds closed clients.
HEARTBEAT_SECONDS = 15.0
# The job list costs a few round trips a tick, a scan of every job (function=, failed or
# stopped alone) many more: list streams look half as often, scanning ones a tenth as often.
LIST_INTERVAL_FACTOR = 2
SCAN_INTERVAL_FACTOR = 10
# A list stream builds its list anew this often even when nothing seemed to change.
FULL_REFRESH_SECONDS = 5.0

# A watcher returns the events to send since its last call, and whether the stream is over.
Update = tuple[list[str], bool]


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    """Stream the job's status body each time it changes; end once the job has ended."""
    job = fetch_job(job_id)  # 400 or 404 before the stream starts
    return event_stream(JobWatcher(job.id), poll_interval())


@bp.get("/events")
def list_events() -> Response:
    """Stream the job list, GET /jobs' body for the same query, each time it changes."""
    filters = listing.read_filters(current_app.config)  # 400 or 422 before the stream starts
    factor = SCAN_INTERVAL_FACTOR if needs_scan(filters) else LIST_INTERVAL_FACTOR
    return event_stream(ListWatcher(filters), poll_interval() * factor)


def event(name: str, data: Any) -> str:
    """Return one Server-Sent Event: its name and its data as one line of JSON."""
    return f"event: {name}\ndata: {current_app.json.dumps(data)}\n\n"


def event_stream(watch: Callable[[], Update], interval: float) -> Response:
    """Answer a stream that calls `watch` every `interval` seconds until it is over or time is up."""
    limit = current_app.config["EVENTS_MAX_DURATION"]
    environ = request.environ

    def generate() -> Iterator[str]:
        started = time.monotonic()
        last_sent = started
        yield f"retry: {RETRY_MS}\n\n"
        while True:
            try:
                events, over = watch()
            except RedisError as error:
                log.warning("Event stream ended: Redis is unreachable: %s", error)
                message = "The job store (Redis) is unreachable; reconnecting shortly."
                yield f"retry: {UNAVAILABLE_RETRY_MS}\n\n"
                yield event("unavailable", {"code": "redis_unavailable", "message": message})
                return
            now = time.monotonic()
            if events:
                yield "".join(events)
                last_sent = now
            if over:
                return
            if now - started >= limit:
                yield ": the stream's time is up; reconnect for more\n\n"
                return
            if client_left(environ):
                return
            if now - last_sent >= HEARTBEAT_SECONDS:
                yield ": keep-alive\n\n"
                last_sent = now
            time.sleep(min(interval, max(0.0, started + limit - now)))

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    # nginx and similar proxies would otherwise hold the events back in a buffer.
    response.headers["X-Accel-Buffering"] = "no"
    return response


def client_left(environ: dict[str, Any]) -> bool:
    """Tell whether the client closed the connection: its thread is then free at once.

    Without this a stream would only find out at its next write (a keep-alive, 15 s later).
    gunicorn hands the app the connection's socket; other servers do not, and then the
    stream runs until its next write fails or its time is up.
    """
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return False
    try:
        poller = select.poll()  # not select.select: it fails on descriptors past 1023
        poller.register(sock, select.POLLIN)
        # Readable with nothing to read: the other end has closed.
        return bool(poller.poll(0)) and sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionError:
        return True
    except (OSError, ValueError):
        return False  # unsure: the stream runs on to its next write or its time limit


class JobWatcher:
    """The events of one job: its status body when it changes, then `end` (or `gone`)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.state: JobState | None = None
        self.body: dict[str, Any] | None = None

    def __call__(self) -> Update:
        """Return the events since the last call, and whether the stream is over."""
        connection = get_redis()
        state = read_states(connection, [self.job_id])[0]
        if state is None:
            return [self.gone()], True
        if state == self.state:
            return [], False
        self.state = state
        try:
            job = Job.fetch(self.job_id, connection=connection, serializer=SERIALIZER)
        except NoSuchJobError:
            return [self.gone()], True
        body = describe_job(job)
        events = [] if body == self.body else [event("job", body)]
        self.body = body
        if JobState.of(job).ended:
            events.append(event("end", {"job_id": self.job_id, "status": body["status"]}))
            return events, True
        return events, False

    def gone(self) -> str:
        """Return the event that says the job no longer exists."""
        message = f"No job {self.job_id}: it was deleted or has expired."
        return event("gone", {"job_id": self.job_id, "code": "job_not_found", "message": message})


def needs_scan(filters: Filters) -> bool:
    """Tell whether the listing must read jobs one by one (function=, failed or stopped alone)."""
    indexes = listing.select_indexes([get_queue(name) for name in filters.queues], filters.statuses)
    return filters.function is not None or any(index.checks_status for index in indexes)


class ListWatcher:
    """The events of a job list: GET /jobs' body for the stream's own query, when it changes.

    Building the list reads every job on the page, so each tick first reads a cheap sign of
    change: the length of each index listed and the status and meta of the jobs shown. The
    list is built again (by app.listing itself, with its filters and rules) only when that
    sign moved, and at least every FULL_REFRESH_SECONDS for changes it cannot see.
    """

    def __init__(self, filters: Filters) -> None:
        self.indexes = listing.select_indexes([get_queue(name) for name in filters.queues], filters.statuses)
        self.sign: tuple[list[int], list[JobState | None]] | None = None
        self.body: dict[str, Any] | None = None
        self.built_at = 0.0

    def __call__(self) -> Update:
        """Return the events since the last call; a list stream is over only when time is up."""
        connection = get_redis()
        shown = [job["job_id"] for job in self.body["jobs"]] if self.body else []
        # Read before the list is built: a change made meanwhile shows up on the next tick.
        sign = (listing.count_entries(connection, self.indexes), read_states(connection, shown))
        now = time.monotonic()
        if sign == self.sign and now - self.built_at < FULL_REFRESH_SECONDS:
            return [], False
        body: dict[str, Any] = listing.list_jobs().get_json()
        self.built_at = now
        # Other jobs shown now: their sign is not known yet, so look again on the next tick.
        self.sign = sign if [job["job_id"] for job in body["jobs"]] == shown else None
        if body == self.body:
            return [], False
        self.body = body
        return [event("jobs", body)], False
