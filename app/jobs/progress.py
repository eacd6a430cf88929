"""Progress reporting for job code: lands in the job's meta and in /check_status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rq import get_current_job

PROGRESS_KEY = "progress"


def report_progress(current: float, total: float = 100, message: str | None = None) -> dict[str, Any] | None:
    """Save the running job's progress (`current` of `total`, with a message) to Redis.

    Outside a job (a plain function call) it does nothing and returns None.
    """
    job = get_current_job()
    if job is None:
        return None
    if total <= 0:
        raise ValueError("total must be positive")
    progress = {
        "current": current,
        "total": total,
        "percent": round(min(max(current / total, 0.0), 1.0) * 100, 1),
        "message": message,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    job.meta[PROGRESS_KEY] = progress
    job.save_meta()  # type: ignore[no-untyped-call]
    return progress
