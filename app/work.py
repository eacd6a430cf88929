"""Run one RQ worker of the app: `python -m app.work [--mode fork|fast] [--burst]`.

What `rq worker --config app.rqconfig --worker-class ... --connection-class
app.queue.WorkerRedis --serializer json --with-scheduler` does, without the rq command line:
its imports (croniter, dateutil) cost each worker about 1 MiB. worker.sh runs this.

The mode is --mode, else WORKER_MODE (.env or the environment), else fork.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import redis.exceptions
from rq import Queue
from rq.suspension import is_suspended

from app.config import build_config, load_environment
from app.queue import SERIALIZER, worker_connection

MODES = {"fork": "Worker", "fast": "FastWorker"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line; the mode defaults to WORKER_MODE."""
    parser = argparse.ArgumentParser(prog="python -m app.work", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=sorted(MODES),
        default=None,
        help="fork: a new process per job; fast: one long-lived work horse (default: WORKER_MODE, or fork)",
    )
    parser.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    parser.add_argument("--max-jobs", type=int, default=None, help="exit after this many jobs")
    parser.add_argument("--name", default=None, help="the worker's name (default: random)")
    parser.add_argument(
        "--without-scheduler", action="store_true", help="do not run RQ's scheduler for delayed jobs"
    )
    return parser.parse_args(argv)


def worker_mode(chosen: str | None) -> str:
    """Return the mode: the command line's, else WORKER_MODE's; raise ValueError for others."""
    mode = chosen or os.environ.get("WORKER_MODE") or "fork"
    if mode not in MODES:
        raise ValueError(f"WORKER_MODE must be one of {', '.join(sorted(MODES))}, not {mode!r}")
    return mode


def main(argv: list[str] | None = None) -> int:
    """Run a worker until it is told to stop (or runs out of jobs, with --burst)."""
    args = parse_args(argv)
    load_environment()
    try:
        mode = worker_mode(args.mode)
        config = build_config()
    except ValueError as error:
        print(f"python -m app.work: {error}", file=sys.stderr)
        return 2
    # Imported after the arguments are read: --help need not load the app.
    from app import worker as workers

    connection = worker_connection(config)
    try:
        if is_suspended(connection):
            print('RQ is suspended: run "rq resume" to let workers take jobs again.', file=sys.stderr)
            return 1
        queues = [Queue(name, connection=connection, serializer=SERIALIZER) for name in config["QUEUES"]]
        worker_class = getattr(workers, MODES[mode])
        worker = worker_class(queues, connection=connection, name=args.name)
        worker.work(
            burst=args.burst,
            # RQ's DEBUG lines (every heartbeat and maintenance pass) would drown the jobs' lines
            # in development, whose LOG_LEVEL is DEBUG: RQ logs at INFO there, as `rq worker` does.
            logging_level="INFO" if config["LOG_LEVEL"] == "DEBUG" else config["LOG_LEVEL"],
            max_jobs=args.max_jobs,
            with_scheduler=not args.without_scheduler,
        )
    except redis.exceptions.ConnectionError as error:
        logging.getLogger(__name__).error("Redis did not answer: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
