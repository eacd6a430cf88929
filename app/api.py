"""The HTTP API: enqueue a registered function, follow its status, fetch its result."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from rq.job import JobStatus

from app import __version__
from app.errors import APIError
from app.jobs.registry import FileData, is_file_json, registry
from app.queue import get_queue
from app.status import ENDED_UNSUCCESSFULLY, describe_job, fetch_job, job_error, job_links
from app.submissions import read_submission

bp = Blueprint("api", __name__)


@bp.get("/")
def index() -> Response:
    """Return the service's name, version and the routes a client uses."""
    return jsonify(
        service=current_app.config["SERVICE_NAME"],
        version=__version__,
        links={
            "enqueue": url_for("api.enqueue", _external=True),
            "check_status": url_for("api.check_status", _external=True) + "?job_id={job_id}",
            "get_result": url_for("api.get_result", _external=True) + "?job_id={job_id}",
            "functions": url_for("api.functions", _external=True),
            "dashboard": url_for("api.index", _external=True) + "rq"
            if current_app.config["DASHBOARD_ENABLED"]
            else None,
        },
    )


@bp.get("/functions")
def functions() -> Response:
    """List the registered functions with their parameters and one-line docs."""
    return jsonify(functions=[function.describe() for function in registry])


@bp.post("/enqueue")
def enqueue() -> tuple[Response, int, dict[str, str]]:
    """Queue a registered function with the posted arguments; answer 202 with the job id."""
    submission = read_submission(request, current_app.config)
    function = submission.function
    job = get_queue(submission.queue).enqueue_call(
        func=function.func,
        args=submission.args,
        kwargs=submission.kwargs,
        timeout=submission.timeout,
        result_ttl=submission.result_ttl,
        failure_ttl=current_app.config["FAILURE_TTL"],
        description=function.name,
        # base_url lets the job build absolute URLs of this server (url_for(..., _external=True)).
        meta={"function": function.name, "base_url": request.host_url},
    )
    links = job_links(job.id)
    body = {
        "job_id": job.id,
        "status": str(job.get_status(refresh=False).value),
        "function": function.name,
        "queue": submission.queue,
        **links,
    }
    return jsonify(body), 202, {"Location": links["status_url"]}


@bp.get("/check_status")
def check_status() -> Response:
    """Return the job's status, timing, progress and error."""
    return jsonify(describe_job(fetch_job(request.args.get("job_id"))))


@bp.get("/get_result")
def get_result() -> Response | tuple[Response, int, dict[str, str]]:
    """Return the job's result; 202 while it runs, 409 when it failed or was stopped."""
    job = fetch_job(request.args.get("job_id"))
    status = job.get_status(refresh=False)  # fetch_job just read it
    if status == JobStatus.FINISHED:
        return result_response(job.id, job.return_value())
    if status in ENDED_UNSUCCESSFULLY:
        details = job_error(job, status)
        raise APIError(
            409,
            f"job_{status.value}",
            f"Job {job.id} {status.value}: {details['error']}",
            job_id=job.id,
            job_status=status.value,
            **details,
        )
    retry_after = str(current_app.config["RETRY_AFTER_SECONDS"])
    return jsonify(describe_job(job, status)), 202, {"Retry-After": retry_after}


def result_response(job_id: str, result: Any) -> Response:
    """Serve a file result with its own content type, anything else as JSON."""
    if is_file_json(result):
        file = FileData.from_json(result)
        response = Response(file.data, content_type=file.content_type)
        response.headers["Content-Disposition"] = f'inline; filename="{file.filename}"'
        response.headers["X-Content-Type-Options"] = "nosniff"
        # A result page may show text a client sent: it runs no script and loads nothing.
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
        )
        return response
    return jsonify(job_id=job_id, status=JobStatus.FINISHED.value, result=result)
