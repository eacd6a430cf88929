"""The browser page at /: submit jobs, watch them live, see results."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, make_response, render_template, request, url_for

from app import __version__
from app.jobs.registry import JobFunction, registry

bp = Blueprint("web", __name__)

# The page runs only its own script and style files, and talks only to this server. Results
# are shown as text or as blob: images; nothing a job returns can become markup or script.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
# A placeholder url_for fills in, replaced by a job id in the page's script.
ID = "JOB_ID"


def wants_page() -> bool:
    """Tell whether the client prefers HTML to JSON: a browser does; curl, requests and fetch() do not."""
    # On a tie (Accept: */*, or no Accept) the first one wins: API clients keep their JSON.
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def page() -> Response:
    """Return the HTML page: the submit form, the live job table and its settings."""
    config = current_app.config
    dashboard = url_for("rq_dashboard.queues_overview") if config["DASHBOARD_ENABLED"] else None
    settings = {
        "functions": [describe(function, config) for function in registry],
        "queues": list(config["QUEUES"]),
        # More than /events takes would leave the table empty.
        "page_jobs": min(config["PAGE_JOBS"], config["MAX_JOBS_PER_PAGE"]),
        "max_timeout": config["MAX_JOB_TIMEOUT"],
        "max_delay": config["MAX_DELAY"],
        "tracebacks": bool(config["EXPOSE_TRACEBACKS"]),
        "server_time": datetime.now(UTC).isoformat(),
        "urls": {
            "enqueue": url_for("api.enqueue"),
            "jobs": url_for("listing.list_jobs"),
            "events": url_for("events.list_events"),
            "job": url_for("control.show_job", job_id=ID),
            "cancel": url_for("control.cancel_job", job_id=ID),
            "requeue": url_for("control.requeue_job", job_id=ID),
        },
    }
    html = render_template(
        "page.html",
        settings=settings,
        service=config["SERVICE_NAME"],
        version=__version__,
        dashboard=dashboard,
    )
    response = make_response(html)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def describe(function: JobFunction, config: dict[str, Any]) -> dict[str, Any]:
    """Return what /functions says of a function, with the queue and timeout it gets by default."""
    return {
        **function.describe(),
        "queue": function.queue or config["DEFAULT_QUEUE"],
        "timeout": function.timeout or config["JOB_TIMEOUT"],
    }
