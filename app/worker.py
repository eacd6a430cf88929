"""RQ workers that run each job inside the Flask app: `rq worker -w app.worker.Worker`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import rq
from flask import Flask
from rq.job import Job
from rq.queue import Queue

from app import create_app
from app.queue import SERIALIZER


class AppWorkerMixin:
    """Build the app once per worker and run every job in its application context.

    The job's `base_url` (the server that enqueued it) becomes the request context, so
    `url_for(..., _external=True)` gives that server's absolute URLs inside a job.
    """

    app: Flask

    def __init__(self, *args: Any, app: Flask | None = None, **kwargs: Any) -> None:
        # Jobs are JSON whatever the command line says: the server never writes pickle.
        kwargs["serializer"] = SERIALIZER
        super().__init__(*args, **kwargs)
        for queue in self.queues:  # type: ignore[attr-defined]
            queue.serializer = self.serializer  # type: ignore[attr-defined]
        self.app = app or create_app(connection=self.connection)  # type: ignore[attr-defined]

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """Perform the job inside the app (and the enqueuing request's URL context)."""
        with self.app.app_context(), self._request_context(job):
            return super().perform_job(job, queue)  # type: ignore[misc,no-any-return]

    def _request_context(self, job: Job) -> AbstractContextManager[Any]:
        base_url = job.meta.get("base_url")
        if not base_url:
            return nullcontext()
        return self.app.test_request_context("/", base_url=base_url)


class Worker(AppWorkerMixin, rq.Worker):
    """RQ's forking worker: each job runs in a fresh child process."""


class SimpleWorker(AppWorkerMixin, rq.SimpleWorker):
    """RQ's in-process worker: no fork per job (used by the unit tests)."""
