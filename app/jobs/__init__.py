"""Job functions: the registry and everything registered in it."""

from app.jobs import count, echo, images, mail, noop, reports
from app.jobs.progress import report_progress
from app.jobs.registry import FileData, JobFunction, registry

__all__ = [
    "FileData",
    "JobFunction",
    "count",
    "echo",
    "images",
    "mail",
    "noop",
    "registry",
    "report_progress",
    "reports",
]
