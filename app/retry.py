"""Retry policies: the `retry` a client or a registered function asks for, as RQ's intervals."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FIXED_KEYS = {"max", "intervals"}
BACKOFF_KEYS = {"max", "backoff", "base", "cap", "jitter"}


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a failed job is tried again, and how long to wait before each retry."""

    max: int
    # Fixed waits in seconds, one per retry; the last one repeats when there are fewer.
    intervals: tuple[int, ...] = (0,)
    # Exponential backoff instead: base * 2**n seconds before retry n + 1, at most cap.
    exponential: bool = False
    base: int = 1
    cap: int | None = None
    jitter: bool = True

    @classmethod
    def from_json(
        cls, value: Any, max_retries: int | None = None, max_interval: int | None = None
    ) -> RetryPolicy:
        """Read `{"max", "intervals"}` or `{"max", "backoff", "base", "cap", "jitter"}`.

        Raise ValueError naming the first wrong field. Without bounds (a registered function's
        own default) only the shape and signs are checked.
        """
        if not isinstance(value, Mapping):
            raise ValueError('retry must be an object such as {"max": 3, "intervals": [10, 60]}')
        exponential = "backoff" in value
        allowed = BACKOFF_KEYS if exponential else FIXED_KEYS
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"retry takes {', '.join(sorted(allowed))}, not {', '.join(unknown)}")
        retries = _integer("retry.max", value.get("max"), 1, max_retries)
        if not exponential:
            intervals = value.get("intervals", [0])
            if not isinstance(intervals, list) or not 1 <= len(intervals) <= retries:
                raise ValueError(f"retry.intervals must be a list of 1 to {retries} (max) waits in seconds")
            waits = tuple(_integer("each of retry.intervals", wait, 0, max_interval) for wait in intervals)
            return cls(max=retries, intervals=waits)
        if value["backoff"] != "exponential":
            raise ValueError('retry.backoff must be "exponential"')
        base = _integer("retry.base", value.get("base", 1), 1, max_interval)
        cap = value.get("cap")
        if cap is not None:
            cap = _integer("retry.cap", cap, base, max_interval)
        jitter = value.get("jitter", True)
        if not isinstance(jitter, bool):
            raise ValueError("retry.jitter must be true or false")
        return cls(max=retries, exponential=True, base=base, cap=cap, jitter=jitter)

    def to_json(self) -> dict[str, Any]:
        """Return the policy in its request form, defaults filled in."""
        if not self.exponential:
            return {"max": self.max, "intervals": list(self.intervals)}
        return {
            "max": self.max,
            "backoff": "exponential",
            "base": self.base,
            "cap": self.cap,
            "jitter": self.jitter,
        }

    def waits(self, max_interval: int) -> list[int]:
        """Return one wait per retry, in whole seconds, for RQ's Retry(max, interval=[...]).

        One per retry, never fewer: RQ reuses the first wait when the list is short, and
        app.status counts the tries from the list's length.
        """
        if not self.exponential:
            return [self.intervals[min(n, len(self.intervals) - 1)] for n in range(self.max)]
        cap = min(self.cap or max_interval, max_interval)
        waits = [min(cap, self.base * 2**n) for n in range(self.max)]
        if self.jitter:
            # RQ 2.12 takes fixed intervals and has no backoff hook, so the jitter is drawn now,
            # once per job: jobs that fail together still retry apart. "Equal jitter" keeps half
            # of each wait, so retries never bunch up at zero; the ceiling keeps whole seconds
            # (RQ's scheduler has one-second resolution) within the cap.
            waits = [math.ceil(random.uniform(wait / 2, wait)) for wait in waits]
        return waits


def _integer(name: str, value: Any, low: int, high: int | None) -> int:
    too_high = high is not None and isinstance(value, int) and value > high
    if isinstance(value, bool) or not isinstance(value, int) or value < low or too_high:
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ValueError(f"{name} must be an integer {bounds}")
    return value
