"""The no-op job: measures the queue itself (the benchmark's jobs), and checks a worker answers."""

from __future__ import annotations

from app.jobs.registry import registry


@registry.register()
def noop() -> None:
    """Do nothing and return null at once."""
