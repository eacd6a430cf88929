"""The report job: renders an HTML report whose links point back at this server."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import render_template
from rq import get_current_job

from app.jobs.progress import report_progress
from app.jobs.registry import FileData, registry


@registry.register()
def render_report(title: str = "Job report", job_ids: list[str] | None = None) -> FileData:
    """Render an HTML report with absolute links to this job and the jobs named."""
    report_progress(0, 1, "rendering")
    job = get_current_job()
    html = render_template(
        "report.html",
        title=title,
        job_id=job.id if job else None,
        job_ids=job_ids or [],
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    report_progress(1, 1, "done")
    return FileData(html.encode("utf-8"), "text/html; charset=utf-8", "report.html")
