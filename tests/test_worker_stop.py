"""A worker told to stop while idle stops, even when the signal lands in a finalizer."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import pytest
from redis import Redis

from app import create_app
from app.worker import FastWorker, Worker

# Far more than the few seconds the worker needs: past it, the worker ran on regardless.
DEADLINE = 30.0


# The StopRequested the finalizer swallows is the point: pytest reports it as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("worker_class", [Worker, FastWorker])
def test_a_stop_lost_in_a_finalizer_still_stops_the_idle_worker(
    real_redis: Redis, worker_class: type[Worker] | type[FastWorker]
) -> None:
    app = create_app({"APP_ENV": "testing", "MAINTENANCE_INTERVAL": 1}, connection=real_redis)
    worker = worker_class(["default"], connection=real_redis, app=app)
    maintenance = worker.clean_registries
    runs = 0

    class Finalized:
        def __del__(self) -> None:
            # RQ's handler raises StopRequested here; Python ignores it in a finalizer.
            worker.request_stop(signal.SIGTERM, None)

    def maintenance_with_a_signal_in_a_finalizer() -> None:
        nonlocal runs
        runs += 1
        maintenance()
        if runs == 2:  # the second maintenance runs in the idle loop, waiting for jobs
            Finalized()

    worker.clean_registries = maintenance_with_a_signal_in_a_finalizer  # type: ignore[method-assign]
    watchdog = threading.Timer(DEADLINE, _thread.interrupt_main)
    watchdog.start()
    started = time.monotonic()
    try:
        worker.work(with_scheduler=False)
    finally:
        watchdog.cancel()

    assert time.monotonic() - started < DEADLINE / 2, "the worker ran on after it was told to stop"
    assert runs >= 2
    assert worker.name.encode() not in real_redis.smembers("rq:workers")
