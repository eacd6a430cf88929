"""Health and readiness: GET /health (process up) and GET /ready (Redis, workers, scheduler)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from redis.exceptions import RedisError
from rq import Worker
from rq.worker import WorkerStatus

from app import __version__
from app.errors import error_response
from app.periodic import HEARTBEAT_KEY, HEARTBEAT_TTL, PeriodicJobsError, load_periodic_jobs
from app.queue import SERIALIZER, get_redis

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    """Answer 200 while the process serves requests; Redis is not asked."""
    response = jsonify(status="ok", service=current_app.config["SERVICE_NAME"], version=__version__)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/ready")
def ready() -> Response:
    """Answer 200 when jobs can run: Redis answers, every queue has a live worker, the scheduler
    runs (when there are PERIODIC_JOBS); else 503 with the reasons."""
    checks, reasons = readiness()
    if reasons:
        response = error_response(
            503,
            "not_ready",
            "Not ready: " + "; ".join(reasons) + ".",
            reasons=reasons,
            checks=checks,
        )
        response.headers["Retry-After"] = "5"
    else:
        response = jsonify(status="ready", checks=checks)
    response.headers["Cache-Control"] = "no-store"
    return response


def readiness() -> tuple[dict[str, Any], list[str]]:
    """Return what was checked, and why the server is not ready (no reasons: it is)."""
    config = current_app.config
    connection = get_redis()
    checks: dict[str, Any] = {"redis": "ok"}
    try:
        connection.ping()
        workers = Worker.all(connection=connection, serializer=SERIALIZER)
        schedulers = live_schedulers()
    except RedisError as error:
        checks["redis"] = "unreachable"
        return checks, [f"Redis does not answer ({type(error).__name__}: {error})"]
    listening = dict.fromkeys(config["QUEUES"], 0)
    for worker in workers:
        if worker.get_state() == WorkerStatus.SUSPENDED:
            continue
        for name in worker.queue_names():
            if name in listening:
                listening[name] += 1
    checks["workers"] = listening
    checks["schedulers"] = schedulers
    reasons = [f"no live worker listens on queue {name!r}" for name, count in listening.items() if not count]
    reason = scheduler_reason(config, schedulers)
    if reason:
        reasons.append(reason)
    return checks, reasons


def live_schedulers() -> int:
    """Return how many periodic-job schedulers sent a heartbeat lately."""
    return int(get_redis().zcount(HEARTBEAT_KEY, time.time() - HEARTBEAT_TTL, "+inf"))


def scheduler_reason(config: Mapping[str, Any], alive: int) -> str | None:
    """Return why the periodic jobs do not run, when there are any; None when they do."""
    try:
        jobs = load_periodic_jobs(config)
    except PeriodicJobsError as error:
        return f"PERIODIC_JOBS is not valid, so no scheduler runs it ({error})"
    if jobs and not alive:
        return f"no periodic-job scheduler has sent a heartbeat in the last {HEARTBEAT_TTL}s"
    return None
