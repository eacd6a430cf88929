"""A bare Flask app with one route, POST /enqueue: the floor the job server's /enqueue is measured against.

    PYTHONPATH=scripts REDIS_URL=redis://... gunicorn --config gunicorn.conf.py bench_bare:app

No validation, registry, idempotency, metrics or logging: it queues the no-op job with RQ's
JSON serializer on the same Redis and answers 202 with the job id.
"""

from __future__ import annotations

import os

from flask import Flask, Response, jsonify
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

NOOP = "app.jobs.noop.noop"


def create_app() -> Flask:
    """Return the app, its queue on REDIS_URL."""
    app = Flask(__name__)
    queue = Queue("default", connection=Redis.from_url(os.environ["REDIS_URL"]), serializer=JSONSerializer)

    @app.post("/enqueue")
    def enqueue() -> tuple[Response, int]:
        """Queue the no-op job; answer 202 with its id."""
        job = queue.enqueue(NOOP)
        return jsonify(job_id=job.id), 202

    return app


app = create_app()
