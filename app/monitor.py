"""Queues and workers as operators see them: GET /queues and GET /workers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from rq import Queue, Worker
from rq.job import Job
from rq.registry import BaseRegistry
from rq.utils import now, str_to_date
from rq.worker import BaseWorker

from app.queue import SERIALIZER, get_queue, get_redis

bp = Blueprint("monitor", __name__)

REGISTRIES = ("started", "deferred", "scheduled", "finished", "failed", "canceled")


@bp.get("/queues")
def queues() -> Response:
    """List each queue's length, the age of its oldest queued job and its registries' sizes."""
    return jsonify(queues=describe_queues([get_queue(name) for name in current_app.config["QUEUES"]]))


def describe_queues(queues: list[Queue]) -> list[dict[str, Any]]:
    """Return the queues' counts in two round trips, whatever their number, without loading jobs."""
    connection = get_redis()
    with connection.pipeline(transaction=False) as pipeline:
        for queue in queues:
            pipeline.llen(queue.key)
            # The head of the list is the job that has waited longest.
            pipeline.lindex(queue.key, 0)
            for name in REGISTRIES:
                pipeline.zcard(_registry(queue, name).key)
        replies = pipeline.execute()
    width = 2 + len(REGISTRIES)
    rows = [replies[start : start + width] for start in range(0, len(replies), width)]
    heads = [_text(row[1]) for row in rows]
    with connection.pipeline(transaction=False) as pipeline:
        for head in heads:
            if head:
                pipeline.hget(Job.key_for(head), "enqueued_at")
        # No round trip when every queue is empty.
        stamps = iter(pipeline.execute())
    enqueued = [_date(next(stamps)) if head else None for head in heads]
    moment = now()
    return [
        {
            "name": queue.name,
            "length": row[0],
            "oldest_job_id": head,
            "oldest_job_age": round((moment - since).total_seconds(), 3) if since else None,
            "registries": dict(zip(REGISTRIES, row[2:], strict=True)),
        }
        for queue, row, head, since in zip(queues, rows, heads, enqueued, strict=True)
    ]


@bp.get("/workers")
def workers() -> Response:
    """List the workers with their state, current job, heartbeat and job counts."""
    found = Worker.all(connection=get_redis(), serializer=SERIALIZER)
    return jsonify(workers=[describe_worker(worker) for worker in sorted(found, key=lambda w: w.name)])


def describe_worker(worker: BaseWorker) -> dict[str, Any]:
    """Return what an operator wants to know about one worker."""
    return {
        "name": worker.name,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "state": worker.get_state(),
        "queues": worker.queue_names(),
        "current_job_id": worker.get_current_job_id(),
        "last_heartbeat": _iso(worker.last_heartbeat),
        "birth_date": _iso(worker.birth_date),
        "successful_job_count": worker.successful_job_count,
        "failed_job_count": worker.failed_job_count,
        "total_working_time": worker.total_working_time,
    }


def _registry(queue: Queue, name: str) -> BaseRegistry:
    registry: BaseRegistry = getattr(queue, f"{name}_job_registry")
    return registry


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _date(value: bytes | str | None) -> datetime | None:
    text = _text(value)
    return str_to_date(text) if text else None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
