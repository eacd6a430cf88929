"""The benchmark's command line: options, the scenarios in order, the report and the chart."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from bench import enqueue, latency, report, workers
from bench.chart import write_chart
from bench.enqueue import SINGLE
from bench.load import run_load
from bench.memory import footprint
from bench.report import Results
from bench.stack import ROOT, Stack, Web

SCENARIOS = ("enqueue", "batch", "worker", "latency", "memory")
LATENCY_MODES = (workers.FAST, workers.FORK, workers.RQ_SIMPLE)
DEFAULT_CHART = ROOT / "docs" / "benchmark.png"


def size(text: str, default: int) -> Any:
    """Return a Sizes field: its default, and its --option's help."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does."""

    requests: int = size("POST /enqueue requests of one job (and in-process enqueues)", 4000)
    connections: int = size("concurrent keep-alive HTTP connections", 8)
    batch_size: int = size("jobs in each batch request", 100)
    batch_requests: int = size("batch requests", 100)
    jobs: int = size("no-op jobs for each worker mode", 2000)
    latency_jobs: int = size("jobs posted one at a time for each latency mode", 200)
    status_requests: int = size("GET /check_status requests", 4000)
    warmup: int = size("requests before each timed HTTP run", 200)


QUICK = Sizes(requests=300, batch_requests=10, jobs=200, latency_jobs=20, status_requests=300, warmup=50)


def positive(text: str) -> int:
    """Read a count of at least 1 from the command line."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py",
        description="Benchmark the job server on a private Redis, gunicorn and workers.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small counts (a smoke run of every scenario, under a minute)"
    )
    parser.add_argument(
        "--chart", type=Path, default=DEFAULT_CHART, help="the PNG to write (default docs/benchmark.png)"
    )
    parser.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(sys.executable),
        help="the Python of a virtualenv to run gunicorn and the workers with (default: this one; "
        "make bench gives one with Pipfile's packages only, as production installs them)",
    )
    for option in dataclasses.fields(Sizes):
        defaults = f"default {option.default}; --quick {getattr(QUICK, option.name)}"
        parser.add_argument(
            f"--{option.name.replace('_', '-')}",
            type=positive,
            metavar="N",
            help=f"{option.metadata['help']} ({defaults})",
        )
    args = parser.parse_args(argv)
    if not args.python.is_file():
        parser.error(f"--python: no such file: {args.python}")
    return args


def say(message: str) -> None:
    """Print a progress line."""
    print(f"... {message}", flush=True)


def show(text: str) -> None:
    """Print a table with a blank line before it."""
    print(f"\n{text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return 0 when it measured (targets met or not), 1 when it could not run."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    given = {option.name: getattr(args, option.name) for option in dataclasses.fields(Sizes)}
    sizes = dataclasses.replace(sizes, **{name: value for name, value in given.items() if value is not None})
    only = set(args.only or SCENARIOS)
    web_concurrency = int(os.environ.get("WEB_CONCURRENCY", "2"))
    # A SIGTERM (a test's timeout, a supervisor) stops the stack as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    results = Results()
    measured = False
    try:
        with Stack(workdir, web_concurrency, args.python) as stack:
            facts = report.machine_facts(stack.server.binary, web_concurrency, args.python)
            show(report.machine_table(facts))
            print(
                "Absolute numbers depend on this machine (and on everything sharing its CPUs with the "
                "server, the workers and this load generator): compare the ratios, measured side by "
                "side in this run.",
                flush=True,
            )
            say(f"starting gunicorn (app.wsgi:app, {web_concurrency} workers)")
            web = stack.start_web("app.wsgi:app", "web")
            run_scenarios(stack, web, sizes, only, results)
        measured = True
    except KeyboardInterrupt:
        print(f"\nbench: interrupted; processes stopped; logs in {workdir}", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError, OSError, RedisError) as error:
        print(f"\nbench: could not run: {error}\nlogs in {workdir}", file=sys.stderr)
        return 1
    finally:
        if measured:
            shutil.rmtree(workdir, ignore_errors=True)
    show(report.targets_table(report.targets(results)))
    subtitle = f"{report.machine_summary(facts)}; {time.strftime('%Y-%m-%d')}"
    write_chart(results, args.chart, subtitle)
    print(f"Chart: {args.chart}", flush=True)
    return 0


def run_scenarios(stack: Stack, web: Web, sizes: Sizes, only: set[str], results: Results) -> None:
    """Run the chosen scenarios in order, printing each one's table as it is done."""
    if "enqueue" in only:
        say(f"enqueue: bare app, job server, in-process; {sizes.requests} each")
        results.bare, results.single, results.in_process, results.enqueue_rounds = enqueue.run_single(
            stack, web, sizes.requests, sizes.connections, sizes.warmup
        )
        results.web_requests += sizes.requests + sizes.warmup
    if "batch" in only:
        say(f"batch: {sizes.batch_requests} requests of {sizes.batch_size} jobs")
        results.batch = enqueue.run_batch(
            stack, web, sizes.batch_size, sizes.batch_requests, sizes.connections, max(1, sizes.warmup // 20)
        )
        results.web_requests += sizes.batch_requests
    if only & {"enqueue", "batch"}:
        show(report.enqueue_table(results, sizes.requests, sizes.batch_requests, sizes.connections))
    if "worker" in only:
        for mode in workers.MODES:
            say(f"worker: {mode.name}, {sizes.jobs} jobs")
            run = workers.run_workers(stack, mode, sizes.jobs)
            results.workers.append(run)
            results.job_workers[mode.name] = run
        show(report.workers_table(results, sizes.jobs))
    if "latency" in only:
        for mode in LATENCY_MODES:
            say(f"latency: {mode.name}, {sizes.latency_jobs} jobs")
            timed, job_id = latency.run_latency(stack, web, mode, sizes.latency_jobs)
            results.latency.append(timed)
            results.web_requests += len(timed.latencies) + latency.WARMUP
            if job_id is not None and results.check_status is None:
                say(f"latency: GET /check_status, {sizes.status_requests} requests")
                results.check_status = latency.run_check_status(
                    web, job_id, sizes.status_requests, sizes.connections
                )
                results.web_requests += sizes.status_requests + min(sizes.status_requests, 200)
        stack.flush()
        show(report.latency_table(results))
    if "memory" in only:
        measure_memory(stack, web, sizes, results)
        show(report.memory_table(results))


def measure_memory(stack: Stack, web: Web, sizes: Sizes, results: Results) -> None:
    """Read the idle web workers' memory, and each mode's idle job worker's (running a few jobs first)."""
    if results.web_requests < sizes.warmup:
        say(f"memory: {sizes.warmup} requests to the web server first")
        run_load(web.host, web.port, SINGLE, sizes.warmup, sizes.connections)
        stack.flush()
        results.web_requests += sizes.warmup
    pids = web.worker_pids()
    if pids:
        results.web_worker = max((footprint(pid) for pid in pids), key=lambda found: found.rss)
    results.web_server = footprint(web.child.pid)
    for mode in workers.MODES:
        if mode.name not in results.job_workers:
            jobs = min(sizes.jobs, 200)
            say(f"memory: {mode.name} workers, {jobs} jobs first")
            results.job_workers[mode.name] = workers.run_workers(stack, mode, jobs)
