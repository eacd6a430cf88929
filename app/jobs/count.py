"""The sleep/count job: counts through a duration, the short/medium/long task."""

from __future__ import annotations

import time
from typing import Any

from app.jobs.progress import report_progress
from app.jobs.registry import registry

LENGTHS = {"short": 5.0, "medium": 15.0, "long": 60.0}
MAX_DURATION = 3600.0


@registry.register()
def count(duration: float = 5.0, length: str | None = None) -> dict[str, Any]:
    """Count one step a second for `duration` seconds (or a short/medium/long preset)."""
    if length is not None:
        if length not in LENGTHS:
            raise ValueError(f"length must be one of {', '.join(LENGTHS)}, not {length!r}")
        duration = LENGTHS[length]
    if not 0 <= duration <= MAX_DURATION:
        raise ValueError(f"duration must be between 0 and {MAX_DURATION:g} seconds, not {duration:g}")
    steps = max(1, round(duration))
    started = time.monotonic()
    for step in range(1, steps + 1):
        time.sleep(max(0.0, started + duration * step / steps - time.monotonic()))
        report_progress(step, steps, f"counted {step} of {steps}")
    return {"counted": steps, "duration": duration, "elapsed": round(time.monotonic() - started, 3)}
