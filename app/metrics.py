"""Prometheus metrics at /metrics, safe under gunicorn's several processes.

Counters and histograms are kept per process. Under gunicorn and the RQ workers they live in
files in PROMETHEUS_MULTIPROC_DIR (default instance/metrics), shared by the web server and the
workers of one machine, and /metrics adds them up, whatever process answers. Queue lengths,
oldest job ages and workers are read from Redis at each scrape.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus

from app.config import PROJECT_ROOT
from app.monitor import REGISTRIES, describe_queues
from app.queue import SERIALIZER, get_queue, get_redis

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_MULTIPROC_DIR = PROJECT_ROOT / "instance" / "metrics"
# Names a process's files: the machine too, as containers sharing the directory reuse pids.
HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"
_FILE_OWNER = re.compile(rf"_{re.escape(HOST)}-(\d+)\.db$")
# Jobs run from milliseconds to an hour (MAX_JOB_TIMEOUT).
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# Our metrics, apart from prometheus_client's default registry (process and GC metrics).
REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts), by method, route and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
JOBS_ENQUEUED = Counter(
    "rq_jobs_enqueued",
    "Jobs accepted by POST /enqueue (queued, scheduled or deferred), by function and queue.",
    ["function", "queue"],
    registry=REGISTRY,
)
JOBS_FINISHED = Counter(
    "rq_jobs_finished",
    "Jobs a worker ran to the end, by function and queue.",
    ["function", "queue"],
    registry=REGISTRY,
)
JOBS_FAILED = Counter(
    "rq_jobs_failed",
    "Jobs that failed with no retry left, by function and queue.",
    ["function", "queue"],
    registry=REGISTRY,
)
JOBS_RETRIED = Counter(
    "rq_jobs_retried",
    "Tries that failed and were retried, by function and queue.",
    ["function", "queue"],
    registry=REGISTRY,
)
JOBS_STOPPED = Counter(
    "rq_jobs_stopped",
    "Running jobs stopped on request, by function and queue.",
    ["function", "queue"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "rq_job_duration_seconds",
    "Time a worker spent on a try of a job, by function, queue and outcome "
    "(finished, failed, retried, stopped).",
    ["function", "queue", "status"],
    buckets=JOB_BUCKETS,
    registry=REGISTRY,
)
# How a worker's try of a job ended, by the status the job has afterwards.
OUTCOMES = {
    JobStatus.FINISHED: ("finished", JOBS_FINISHED),
    JobStatus.FAILED: ("failed", JOBS_FAILED),
    JobStatus.STOPPED: ("stopped", JOBS_STOPPED),
    # Back on its queue, or waiting for its retry interval.
    JobStatus.QUEUED: ("retried", JOBS_RETRIED),
    JobStatus.SCHEDULED: ("retried", JOBS_RETRIED),
}

_multiprocess_dir: str | None = None
# When the request came in (perf_counter), in its WSGI environ.
STARTED_ENVIRON = "app.metrics.started"


def process_id(pid: int | None = None) -> str:
    """Return the name of a process's metric files: this machine and the pid."""
    return _process_id(pid or os.getpid())


@functools.cache
def _process_id(pid: int) -> str:
    # prometheus_client asks at every count, to notice a fork.
    return f"{HOST}-{pid}"


def use_multiprocess(directory: str | os.PathLike[str] | None = None) -> str:
    """Keep this process's metrics in the shared directory, from now on; return the directory.

    The directory is PROMETHEUS_MULTIPROC_DIR, else `directory`, else instance/metrics; the
    variable is set for the processes this one starts. Call it before the first metric is
    recorded (gunicorn.conf.py does, and each worker). Files of this machine's processes that
    have exited are removed: their counts restart, as a restarted process's would.
    """
    global _multiprocess_dir
    path = os.environ.setdefault(MULTIPROC_ENV, str(directory or DEFAULT_MULTIPROC_DIR))
    if _multiprocess_dir == path:
        return path
    Path(path).mkdir(parents=True, exist_ok=True)
    remove_dead_files(path)
    values.ValueClass = values.MultiProcessValue(process_identifier=process_id)  # type: ignore[no-untyped-call]
    _multiprocess_dir = path
    return path


def remove_dead_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the metric files of this machine's processes that no longer run; return them."""
    removed = []
    for path in Path(directory).glob("*.db"):
        owner = _FILE_OWNER.search(path.name)
        if owner and not _alive(int(owner.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a process that exited (gunicorn's child_exit hook)."""
    if _multiprocess_dir:
        multiprocess.mark_process_dead(process_id(pid), _multiprocess_dir)  # type: ignore[no-untyped-call]


def record_job(job: Job, seconds: float, *, refresh: bool = True) -> None:
    """Count a try of a job a worker has just made, by how it ended, and observe its duration.

    refresh=False takes the status the job object has (a worker that set it knows it).
    """
    try:
        status = job.get_status(refresh=refresh)
    except InvalidJobOperation:
        # Gone: a job with result_ttl 0 is deleted as soon as it finishes.
        status = JobStatus.FINISHED
    except RedisError as error:
        log.warning("Job %s: no metrics recorded, Redis did not answer: %s", job.id, error)
        return
    if status not in OUTCOMES:
        return  # still started: the worker was stopped in the middle
    outcome, counter = OUTCOMES[status]
    labels = {"function": job.meta.get("function") or job.func_name, "queue": job.origin}
    counter.labels(**labels).inc()
    JOB_DURATION.labels(**labels, status=outcome).observe(seconds)


class QueueCollector(Collector):
    """Queue lengths, oldest job ages, registry sizes and workers, read from Redis at the scrape."""

    def collect(self) -> Iterable[Metric]:
        """Return the queue and worker gauges, and rq_redis_up (0 when Redis does not answer)."""
        up = GaugeMetricFamily("rq_redis_up", "1 when Redis answered this scrape, 0 when it did not.")
        try:
            queues = describe_queues([get_queue(name) for name in current_app.config["QUEUES"]])
            workers = Worker.all(connection=get_redis(), serializer=SERIALIZER)
        except RedisError as error:
            log.warning("Metrics: Redis did not answer: %s", error)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        length = GaugeMetricFamily("rq_queue_length", "Jobs waiting in the queue.", labels=["queue"])
        age = GaugeMetricFamily(
            "rq_queue_oldest_job_age_seconds",
            "Seconds the oldest waiting job has waited (0 when the queue is empty).",
            labels=["queue"],
        )
        registries = GaugeMetricFamily(
            "rq_registry_jobs",
            f"Jobs in the queue's registries ({', '.join(REGISTRIES)}).",
            labels=["queue", "registry"],
        )
        for queue in queues:
            length.add_metric([queue["name"]], queue["length"])
            age.add_metric([queue["name"]], queue["oldest_job_age"] or 0)
            for name, count in queue["registries"].items():
                registries.add_metric([queue["name"], name], count)
        states = GaugeMetricFamily("rq_workers", "Live RQ workers, by state.", labels=["state"])
        counts: dict[str, int] = {}
        for worker in workers:
            state = str(worker.get_state())
            counts[state] = counts.get(state, 0) + 1
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        return [up, length, age, registries, states]


class _Registered(Collector):
    """The metrics this process recorded itself (outside multiprocess mode)."""

    def collect(self) -> Iterable[Metric]:
        """Return the metrics of REGISTRY."""
        return REGISTRY.collect()


@bp.get("/metrics")
def scrape() -> Response:
    """Return every metric in the Prometheus text format (OpenMetrics when asked for)."""
    registry = CollectorRegistry(auto_describe=False)
    if _multiprocess_dir:
        multiprocess.MultiProcessCollector(registry, path=_multiprocess_dir)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Registered())
    registry.register(QueueCollector())
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = Response(encoder(registry), content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


class _Timer:
    """WSGI middleware: note when a request came in, for HTTP_LATENCY."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[STARTED_ENVIRON] = time.perf_counter()
        return self.app(environ, start_response)


# The series of each method, route and status seen: prometheus_client's labels() checks and
# joins the labels anew at each call, for a good part of what recording a request costs.
_request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    key = (method, route, status)
    series = _request_series.get(key)
    if series is None:
        labels = {"method": method, "route": route, "status": str(status)}
        series = _request_series[key] = (HTTP_REQUESTS.labels(**labels), HTTP_LATENCY.labels(**labels))
    return series


# The series of each function and queue, kept like the requests' above.
_enqueued_series: dict[tuple[str, str], Counter] = {}


def count_enqueued(function: str, queue: str, jobs: int = 1) -> None:
    """Count jobs accepted for a function on a queue."""
    series = _enqueued_series.get((function, queue))
    if series is None:
        series = _enqueued_series[function, queue] = JOBS_ENQUEUED.labels(function=function, queue=queue)
    series.inc(jobs)


def _record_request(response: Response) -> Response:
    rule = request.url_rule
    # The route's pattern, not the path: /jobs/<job_id>, not one series per job.
    route = rule.rule if rule is not None else "<unmatched>"
    count, latency = _series(request.method, route, response.status_code)
    count.inc()
    started = request.environ.get(STARTED_ENVIRON)
    if started is not None:
        latency.observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Record request metrics, serve /metrics, and use the shared directory when it is set up."""
    if not app.testing and os.environ.get(MULTIPROC_ENV):
        use_multiprocess()
    app.wsgi_app = _Timer(app.wsgi_app)  # type: ignore[method-assign]
    app.after_request(_record_request)
    app.register_blueprint(bp)
