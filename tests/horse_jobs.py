"""Job functions for the fast worker's tests: they crash, hang or misbehave on purpose.

Not registered: the tests queue them with RQ directly, as only the HTTP API is limited to
registered functions.
"""

from __future__ import annotations

import os
import signal
import time

from rq import Retry, get_current_job

from app.jobs.progress import report_progress


def whoami() -> int:
    """Return the pid of the process that runs the job."""
    return os.getpid()


def fail() -> None:
    """Raise, as a buggy job does."""
    raise ValueError("this job fails on purpose")


def crash() -> None:
    """Kill the process running the job, as a segfault or the OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


def report_then_crash() -> None:
    """Report progress, then die as crash() does."""
    report_progress(1, 2, "half way")
    crash()


def exit_process() -> None:
    """Leave the process at once, skipping every handler."""
    os._exit(3)


def sleep_for(seconds: float) -> float:
    """Sleep, then return how long."""
    time.sleep(seconds)
    return seconds


def ignore_timeout(seconds: float) -> None:
    """Ignore SIGALRM (the job timeout), then sleep."""
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(seconds)


def succeed_on_second_try() -> str:
    """Fail the first time, succeed the second (a counter in Redis tells which)."""
    job = get_current_job()
    assert job is not None
    tries = job.connection.incr(f"test:tries:{job.id}")
    report_progress(tries, 2, f"try {tries}")
    if tries < 2:
        raise RuntimeError("first try fails")
    return f"succeeded on try {tries}"


def with_progress() -> str:
    """Report progress twice, then return."""
    report_progress(1, 2, "halfway")
    report_progress(2, 2, "done")
    return "done"


def echo(value: object) -> object:
    """Return what it was given."""
    return value


def retry_once_then_succeed() -> Retry | str:
    """Ask for a retry by returning an rq.Retry the first time; then return how many it had."""
    job = get_current_job()
    assert job is not None
    if not job.number_of_retries:
        return Retry(max=2)
    return f"done after {job.number_of_retries} retry"


def always_ask_for_a_retry() -> Retry:
    """Return an rq.Retry every time: RQ fails the job once its retries are spent."""
    return Retry(max=1)
