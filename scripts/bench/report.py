"""What a benchmark run measured, as text tables, and the targets it is held to."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bench.enqueue import Rate, Round, ratio_interval
from bench.latency import LatencyRun
from bench.load import LoadResult
from bench.memory import Footprint
from bench.workers import FAST, FORK, RQ_SIMPLE, RQ_WORKER, Mode, WorkerRun

# The targets: batch jobs/s over one-job-a-request jobs/s; the fast worker's jobs/s over RQ's
# workers'; its median latency; an idle job worker's RSS.
ENQUEUE_VS_BARE = 1.0
BATCH_SPEEDUP = 5.0
FAST_VS_RQ_WORKER = 6.0
FAST_VS_RQ_SIMPLE_WORKER = 1.3
LATENCY_TARGET_MS = 6.0
IDLE_WORKER_RSS_MIB = 45.0


@dataclass
class Results:
    """Everything one run measured; a scenario that did not run leaves its part empty."""

    bare: Rate | None = None  # the bare Flask app's POST /enqueue
    single: Rate | None = None  # the job server's POST /enqueue, one job a request
    batch: Rate | None = None  # the job server's POST /enqueue, a JSON array of jobs
    in_process: Rate | None = None  # Queue.enqueue called in-process
    enqueue_rounds: list[Round] = field(default_factory=list)  # bare and ours, turn by turn
    workers: list[WorkerRun] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)
    check_status: LoadResult | None = None
    web_worker: Footprint | None = None
    web_server: Footprint | None = None
    web_requests: int = 0
    job_workers: dict[str, WorkerRun] = field(default_factory=dict)  # by mode name, with memory

    def worker_rate(self, mode: Mode) -> float | None:
        """Return a mode's jobs per second, or None when it did not run."""
        return next((run.rate for run in self.workers if run.mode == mode), None)

    def enqueue_rates(self) -> list[Rate]:
        """Return the enqueue measurements made, bare app first."""
        return [rate for rate in (self.bare, self.single, self.batch, self.in_process) if rate is not None]


# Formatting ---------------------------------------------------------------------------------


def number(value: float | None, digits: int = 0) -> str:
    """Format a number with thousands separators ("-" for None)."""
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> str:
    """Format a ratio as "2.50x" ("-" when either side is missing)."""
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def table(title: str, headers: list[str], rows: list[list[str]]) -> str:
    """Return a text table: the first column and a "note" column left-aligned, the others right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    left = {0} | {index for index, header in enumerate(headers) if header == "note"}

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if index in left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(padded).rstrip()

    rule = "  " + "  ".join("-" * width for width in widths)
    return "\n".join([title, line(headers), rule, *(line(row) for row in rows)]) + "\n"


# Sections -----------------------------------------------------------------------------------


def machine_facts(redis_binary: str, web_concurrency: int, python: Path) -> list[list[str]]:
    """Describe the machine and the software measured, as (what, value) rows."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), ""
            )
    except OSError:
        pass
    answer = subprocess.run([redis_binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    redis_version = next((part[2:] for part in answer.split() if part.startswith("v=")), "?")
    threads = os.environ.get("WEB_THREADS", "8")
    return [
        ["CPUs", f"{os.cpu_count()} {f'({model})' if model else ''}".strip()],
        ["Python", f"{platform.python_version()} on {platform.system()} {platform.release()}"],
        ["redis-server", f"{redis_version} ({redis_binary})"],
        ["rq, redis-py, flask", f"{version('rq')}, {version('redis')}, {version('flask')}"],
        ["gunicorn", f"{version('gunicorn')}: {web_concurrency} gthread workers x {threads} threads"],
        ["servers and workers run by", server_python(python)],
    ]


def server_python(python: Path) -> str:
    """Describe the Python the servers and workers run with: its version, and whether dev packages are there.

    Development packages change what is measured: RQ imports greenlet (Playwright's) when it can.
    """
    probe = (
        "import sys, importlib.util as u; print(sys.version.split()[0], u.find_spec('pytest') is not None)"
    )
    answer = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, timeout=30
    ).stdout.split()
    if len(answer) != 2:
        return f"{python} (does not run)"
    packages = "development packages too" if answer[1] == "True" else "Pipfile's packages only"
    return f"Python {answer[0]}, {packages} ({python})"


def machine_summary(facts: list[list[str]]) -> str:
    """Return the machine on one line: CPUs, Python, redis-server (without paths)."""
    return ", ".join(f"{what} {value.split(' (/')[0]}" for what, value in facts[:3])


def machine_table(facts: list[list[str]]) -> str:
    """Return the Machine table."""
    return table("Machine", ["", "value"], facts)


def enqueue_table(results: Results, requests: int, batches: int, connections: int) -> str:
    """Scenarios 1 and 2: jobs/s of each way in, and its ratio to the bare app."""
    bare = results.bare.job_rate if results.bare is not None else None
    rows = [
        [
            rate.label,
            number(rate.calls),
            number(rate.errors),
            number(rate.seconds, 2) if rate.seconds else "-",
            number(rate.call_rate) if rate.seconds else "-",
            number(rate.job_rate) if rate.seconds else "-",
            ratio(rate.job_rate, bare),
            rate.note,
        ]
        for rate in results.enqueue_rates()
    ]
    title = (
        f"Enqueue throughput: {requests:,} requests ({batches:,} batches) over {connections} keep-alive "
        f"connections from 2 client processes; {requests:,} in-process calls; no worker runs"
    )
    headers = ["way in", "calls", "errors", "seconds", "calls/s", "jobs/s", "vs bare", "note"]
    return table(title, headers, rows)


def workers_table(results: Results, jobs: int) -> str:
    """Scenario 3: jobs/s per mode, Redis commands per job, ratios to RQ's workers."""
    plain = results.worker_rate(RQ_WORKER)
    simple = results.worker_rate(RQ_SIMPLE)
    rows = [
        [
            run.mode.name,
            run.mode.function,
            number(run.jobs),
            number(run.seconds, 2) if run.seconds else "-",
            number(run.rate),
            number(run.commands_per_job, 1),
            ratio(run.rate, plain),
            ratio(run.rate, simple),
            run.note,
        ]
        for run in results.workers
    ]
    title = f"Worker throughput: {jobs:,} no-op jobs queued at once (one pipeline), 2 workers"
    headers = [
        "mode",
        "job",
        "jobs",
        "seconds",
        "jobs/s",
        "Redis cmds/job",
        "vs rq.Worker",
        "vs rq.SimpleWorker",
        "note",
    ]
    return table(title, headers, rows)


def latency_table(results: Results) -> str:
    """Scenario 4: POST-to-ended latency per mode, and GET /check_status throughput."""
    rows = [
        [
            run.mode.name,
            number(len(run.latencies)),
            number(run.p50, 2),
            number(run.p99, 2),
            number(max(run.latencies), 2) if run.latencies else "-",
            number(run.post_p50, 2),
            run.note,
        ]
        for run in results.latency
    ]
    title = "Latency: POST /enqueue sent -> job's ended_at, one job at a time, 1 idle worker (ms)"
    text = table(title, ["mode", "jobs", "p50", "p99", "max", "POST alone p50", "note"], rows)
    check = results.check_status
    if check is not None:
        errors = ", ".join(f"{n} {kind}" for kind, n in check.tally.errors.most_common()) or "0"
        text += "\n" + table(
            "GET /check_status on a finished job",
            ["requests", "errors", "seconds", "requests/s"],
            [[number(check.requests), errors, number(check.seconds, 2), number(check.rate)]],
        )
    return text


def memory_table(results: Results) -> str:
    """Scenario 5: idle RSS of a web worker and of each mode's job worker (and its horse), and PSS."""
    rows = []
    if results.web_worker is not None:
        rows.append(
            [
                f"gunicorn web worker (after {results.web_requests:,} requests)",
                number(results.web_worker.rss, 1),
                "-",
                number(results.web_worker.pss_total, 1),
                "",
            ]
        )
    if results.web_server is not None:
        rows.append(
            [
                "gunicorn in all (master + web workers)",
                number(results.web_server.rss, 1),
                number(results.web_server.children_rss, 1),
                number(results.web_server.pss_total, 1),
                "master's RSS; its workers' RSS",
            ]
        )
    for name, run in results.job_workers.items():
        memory = run.memory
        if memory is None:
            rows.append([f"job worker, {name}", "-", "-", "-", run.note])
            continue
        note = "runs bench_noop (imports nothing)" if not run.mode.ours else ""
        rows.append(
            [
                f"job worker, {name} (after {run.jobs:,} jobs)",
                number(memory.rss, 1),
                number(memory.children_rss, 1),
                number(memory.pss_total, 1),
                note,
            ]
        )
    headers = ["idle process", "RSS MiB", "children RSS MiB", "PSS MiB, with children", "note"]
    return table("Memory (VmRSS; PSS from smaps_rollup: shared pages split among sharers)", headers, rows)


# Targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal: a measured value (None: not measured) against a bound."""

    name: str
    measured: float | None
    goal: float
    unit: str = "x"
    at_least: bool = True
    detail: str = ""

    @property
    def result(self) -> str:
        """Return PASS, FAIL, or n/a when it was not measured."""
        if self.measured is None:
            return "n/a"
        met = self.measured >= self.goal if self.at_least else self.measured <= self.goal
        return "PASS" if met else "FAIL"

    def row(self) -> list[str]:
        """Return the target's table row."""
        digits = 2 if self.unit in {"x", "ms"} else 1
        shown = (
            "-" if self.measured is None else f"{self.measured:,.{digits}f} {self.unit}".replace(" x", "x")
        )
        bound = f"{'>=' if self.at_least else '<='} {self.goal:g} {self.unit}".replace(" x", "x")
        return [self.name, shown, bound, self.result, self.detail]


def _over(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def targets(results: Results) -> list[Target]:
    """Return the targets with what this run measured (and why not, for what it could not)."""
    batch = results.batch.job_rate if results.batch is not None else None
    single = results.single.job_rate if results.single is not None else None
    fast = results.worker_rate(FAST)
    fast_run = next((run for run in results.workers if run.mode == FAST), None)
    fast_latency = next((run for run in results.latency if run.mode == FAST), None)
    batch_note = results.batch.note if results.batch is not None and not results.batch.jobs else ""
    fast_note = fast_run.note if fast_run is not None and fast_run.rate is None else ""
    bare = results.bare.job_rate if results.bare is not None else None
    enqueue_note = ""
    if len(results.enqueue_rounds) > 1:
        low, high = ratio_interval(results.enqueue_rounds)
        enqueue_note = f"90% interval {low:.2f}x-{high:.2f}x over {len(results.enqueue_rounds)} rounds"
    found = [
        Target("POST /enqueue vs bare Flask + RQ", _over(single, bare), ENQUEUE_VS_BARE, detail=enqueue_note),
        Target("batch jobs/s vs one job a request", _over(batch, single), BATCH_SPEEDUP, detail=batch_note),
        Target(
            "fast mode jobs/s vs rq.Worker",
            _over(fast, results.worker_rate(RQ_WORKER)),
            FAST_VS_RQ_WORKER,
            detail=fast_note,
        ),
        Target(
            "fast mode jobs/s vs rq.SimpleWorker",
            _over(fast, results.worker_rate(RQ_SIMPLE)),
            FAST_VS_RQ_SIMPLE_WORKER,
            detail=fast_note,
        ),
        Target(
            "fast mode latency p50",
            fast_latency.p50 if fast_latency is not None else None,
            LATENCY_TARGET_MS,
            "ms",
            at_least=False,
            detail=fast_latency.note if fast_latency is not None else "",
        ),
    ]
    for mode in (FORK, FAST):
        run = results.job_workers.get(mode.name)
        memory = run.memory if run is not None else None
        detail = run.note if run is not None and memory is None else ""
        if memory is not None and memory.children_rss is not None:
            detail = f"with its horse: PSS {memory.pss_total:.1f} MiB"
        rss = memory.rss if memory else None
        name = f"idle job worker RSS, {mode.name} mode"
        found.append(Target(name, rss, IDLE_WORKER_RSS_MIB, "MiB", at_least=False, detail=detail))
    return found


def targets_table(found: list[Target]) -> str:
    """Return the Targets table."""
    return table(
        "Targets", ["target", "measured", "goal", "result", "note"], [target.row() for target in found]
    )
