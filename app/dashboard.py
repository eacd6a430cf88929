"""rq-dashboard, mounted at /rq inside the app: behind a login, escaped, and fixed for RQ 2.

rq-dashboard 0.9.0 has faults with RQ 2 and with JSON jobs, fixed here and in the templates
of app/templates/rq_dashboard/ (the app's templates come before a blueprint's):

- its templates put job descriptions, metadata, tracebacks and call strings into the page
  as HTML, and a queue name from the URL into a script: a client's arguments or a crafted
  link would run in an operator's browser. The overrides escape every value, and a
  Content-Security-Policy with a nonce stops any script the page did not bring;
- its job data fails for jobs with dependencies (RQ 2 gives ids as str, not bytes) and
  for results it cannot read or encode; its workers data fails while a worker runs a JSON
  job (it reads it as pickle); its requeue saves a JSON job back as pickle. Those views are
  replaced by ones that read jobs with the app's serializer;
- it opens a new Redis connection for every request (without the app's timeouts): it uses
  the app's instead.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from typing import Any

import rq_dashboard
from flask import Flask, Response, current_app, g, jsonify, request, url_for
from flask.typing import RouteCallable
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.utils import get_call_string
from rq.worker import BaseWorker, Worker
from rq_dashboard import web as dashboard_web
from rq_dashboard.web import config as dashboard_config
from rq_dashboard.web import setup_rq_connection
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, MethodNotAllowed, NotFound, Unauthorized

from app import control
from app.auth import keys_configured
from app.errors import APIError
from app.jobs.registry import FILE_KEY, is_file_json
from app.queue import SERIALIZER, get_redis
from app.status import fetch_job

log = logging.getLogger(__name__)

URL_PREFIX = "/rq"
BLUEPRINT = "rq_dashboard"
# The version whose templates app/templates/rq_dashboard/ overrides: check them on an upgrade.
SUPPORTED_VERSION = "0.9.0"
REALM = "rq-dashboard"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Results larger than this (as JSON) are shown as a link to /get_result, not inline.
MAX_RESULT_CHARS = 100_000
CALL_STRING_ARGUMENT_CHARS = 60


def init_app(app: Flask) -> None:
    """Mount the dashboard at /rq: the app's Redis and serializer, a login, escaped pages."""
    if not app.config["DASHBOARD_ENABLED"]:
        return
    dashboard_config.serializer = SERIALIZER
    app.config.setdefault("RQ_DASHBOARD_REDIS_URL", app.config["REDIS_URL"])
    app.config.setdefault("RQ_DASHBOARD_POLL_INTERVAL", 2500)
    setup_rq_connection(app)
    with app.app_context():
        # rq-dashboard keeps its connection on the app; make it the app's own.
        app.redis_conn = get_redis()  # type: ignore[attr-defined]
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    # In place of its own hook, which connects to Redis anew on every request.
    app.before_request_funcs[BLUEPRINT] = [check_login, refuse_cross_site_writes, check_instance, make_nonce]
    app.after_request_funcs.setdefault(BLUEPRINT, []).append(secure_headers)
    app.template_context_processors[BLUEPRINT].append(inject_nonce)
    for endpoint, view in REPLACED_VIEWS.items():
        app.view_functions[f"{BLUEPRINT}.{endpoint}"] = view
    warn_if_open(app)


def warn_if_open(app: Flask) -> None:
    """Say loudly at start-up when a production dashboard has no password."""
    if app.config["DASHBOARD_PASSWORD"] or app.config["APP_ENV"] != "production":
        return
    if app.config["API_KEYS"] not in ("", "[]"):
        return
    log.warning(
        "DASHBOARD_PASSWORD is not set: the dashboard at %s is open to anyone who can reach this "
        "server, and lets them requeue, delete and empty jobs. Set DASHBOARD_USERNAME and "
        "DASHBOARD_PASSWORD (or DASHBOARD_ENABLED=false).",
        URL_PREFIX,
    )


# Before and after every dashboard request ---------------------------------------------------


def check_login() -> None:
    """Ask for the dashboard's HTTP Basic login when DASHBOARD_PASSWORD is set."""
    password = current_app.config["DASHBOARD_PASSWORD"]
    # With API keys, the dashboard takes an admin key instead (app.auth checks it).
    if not password or keys_configured():
        return
    given = request.authorization
    valid = (
        given is not None
        and given.type == "basic"
        # Both compared in full, in constant time: no early exit tells which part was wrong.
        and _same(given.username or "", current_app.config["DASHBOARD_USERNAME"])
        & _same(given.password or "", password)
    )
    if not valid:
        raise Unauthorized(
            "Log in to the dashboard with DASHBOARD_USERNAME and DASHBOARD_PASSWORD.",
            www_authenticate=WWWAuthenticate("basic", {"realm": REALM, "charset": "UTF-8"}),
        )


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def refuse_cross_site_writes() -> None:
    """Refuse a POST another site's page makes: the browser would send the Basic login along."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if (site is not None and site not in {"same-origin", "none"}) or (
        origin is not None and origin != request.host_url.rstrip("/")
    ):
        raise Forbidden("The dashboard takes changes from its own pages only.")


def check_instance() -> None:
    """Answer 404 for other Redis instances: this dashboard shows the app's only."""
    if (request.view_args or {}).get("instance_number", 0) != 0:
        raise NotFound()


def make_nonce() -> None:
    """Draw the nonce that lets the page's own inline script, and no other, run."""
    g.csp_nonce = secrets.token_urlsafe(16)


def inject_nonce() -> dict[str, str]:
    """Give the templates the nonce of their one inline script."""
    return {"csp_nonce": g.get("csp_nonce", "")}


def secure_headers(response: Response) -> Response:
    """Run only the dashboard's own scripts, whatever a job's data holds."""
    nonce = g.get("csp_nonce", "")
    # 'unsafe-eval': the dashboard's templates are compiled by underscore's _.template.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}' 'unsafe-eval'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


# Views replaced -----------------------------------------------------------------------------


def job_view(instance_number: int, job_id: str) -> Any:
    """Show the job page; 400 or 404 for a malformed or unknown id (rq-dashboard fails with 500)."""
    fetch_job(job_id)
    return dashboard_web.job_view(instance_number=instance_number, job_id=job_id)


def job_info(instance_number: int, job_id: str) -> tuple[Response, dict[str, str]]:
    """Return the job page's data, the job read as JSON, whatever its result or dependencies."""
    job = fetch_job(job_id)
    latest = job.latest_result()
    status = job.get_status(refresh=False)
    body: dict[str, Any] = {
        "id": job.id,
        "created_at": dashboard_web.serialize_date(job.created_at),
        "enqueued_at": dashboard_web.serialize_date(job.enqueued_at),
        "started_at": dashboard_web.serialize_date(job.started_at),
        "ended_at": dashboard_web.serialize_date(job.ended_at),
        "origin": job.origin,
        "status": status.value if status else None,
        "result": displayable_result(job),
        "exc_info": latest.exc_string if latest else None,
        "description": job.description,
        "metadata": json.dumps(job.meta, default=repr),
    }
    parents = sorted(job.dependency_ids)
    if parents:
        with get_redis().pipeline(transaction=False) as pipe:
            for parent in parents:
                pipe.exists(Job.key_for(parent))
            kept = pipe.execute()
        body["depends_on"] = parents
        body["depends_on_status"] = ["active" if exists else "expired" for exists in kept]
    return jsonify(body), {"Cache-Control": "no-store"}


def displayable_result(job: Job) -> Any:
    """Return the job's result as the dashboard can show it: a file or a large one as a link."""
    link = url_for("api.get_result", job_id=job.id)
    try:
        result = job.return_value()
    except (DeserializationError, ValueError):
        return f"(a result this dashboard cannot read: {link})"
    if result is not None and is_file_json(result):
        fields = result[FILE_KEY]
        size = len(fields["base64"]) * 3 // 4
        return {
            "file": fields.get("filename"),
            "content_type": fields.get("content_type"),
            "bytes": size,
            "url": link,
        }
    try:
        text = json.dumps(result)
    except (TypeError, ValueError):
        return repr(result)[:MAX_RESULT_CHARS]
    if len(text) > MAX_RESULT_CHARS:
        return f"(a result of {len(text)} characters: {link})"
    return result


def list_workers(instance_number: int) -> tuple[Response, dict[str, str]]:
    """Return the workers and their current jobs, read as JSON (rq-dashboard reads them as pickle)."""
    workers = []
    for worker in Worker.all(connection=get_redis(), serializer=SERIALIZER):
        state = worker.get_state()
        workers.append(
            {
                "name": worker.name,
                "pid": worker.pid,
                "queues": [queue.name for queue in worker.queues],
                "state": getattr(state, "value", str(state)),
                "current_job": current_job(worker),
                "last_heartbeat": worker.last_heartbeat,
                "birth_date": worker.birth_date,
                "successful_job_count": worker.successful_job_count,
                "failed_job_count": worker.failed_job_count,
                "total_working_time": worker.total_working_time,
                "version": getattr(worker, "version", ""),
                "python_version": getattr(worker, "python_version", ""),
            }
        )
    workers.sort(key=lambda entry: (entry["state"], entry["queues"], entry["name"]))
    return jsonify(workers=workers), {"Cache-Control": "no-store"}


def current_job(worker: BaseWorker) -> dict[str, Any] | str:
    """Return the job a worker runs, its arguments cut short (an upload would fill the page)."""
    try:
        job = worker.get_current_job()
    except NoSuchJobError:
        job = None
    if job is None:
        return "idle"
    try:
        call = get_call_string(job.func_name, job.args, job.kwargs, max_length=CALL_STRING_ARGUMENT_CHARS)
    except DeserializationError:
        call = job.description
    return {
        "job_id": job.id,
        "description": job.description,
        "created_at": dashboard_web.serialize_date(job.created_at),
        "call_string": call,
    }


def requeue_job_view(job_id: str) -> tuple[Response, dict[str, str]]:
    """Requeue a failed, stopped or canceled job as POST /jobs/<id>/requeue does (as JSON)."""
    control.requeue_job(job_id)
    return jsonify(status="OK"), {"Cache-Control": "no-store"}


def requeue_all(queue_name: str) -> tuple[Response, dict[str, str]]:
    """Requeue every failed job of a queue; POST only (rq-dashboard also takes a GET)."""
    if request.method != "POST":
        raise MethodNotAllowed(valid_methods=["POST"])
    registry = FailedJobRegistry(queue_name, connection=get_redis(), serializer=SERIALIZER)
    count = 0
    for job_id in registry.get_job_ids(cleanup=False):
        try:
            control.requeue_job(job_id)
        except APIError:
            continue  # gone or requeued meanwhile
        count += 1
    return jsonify(status="OK", count=count), {"Cache-Control": "no-store"}


def delete_job_view(job_id: str) -> tuple[Response, dict[str, str]]:
    """Delete a job as DELETE /jobs/<id> does: with its results, and never while it runs."""
    if current_app.config.get("RQ_DASHBOARD_DISABLE_DELETE"):
        return jsonify(status="DISABLED"), {"Cache-Control": "no-store"}
    control.delete_job(job_id)
    return jsonify(status="OK"), {"Cache-Control": "no-store"}


REPLACED_VIEWS: dict[str, RouteCallable] = {
    "job_view": job_view,
    "job_info": job_info,
    "list_workers": list_workers,
    "requeue_job_view": requeue_job_view,
    "requeue_all": requeue_all,
    "delete_job_view": delete_job_view,
}
