"""The benchmark's chart: one PNG with enqueue, worker, latency and memory bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from bench.report import IDLE_WORKER_RSS_MIB, LATENCY_TARGET_MS, Results

matplotlib.use("Agg")  # no display: files only (before the first figure)

OURS = "tab:blue"
BASELINE = "tab:gray"


def write_chart(results: Results, path: Path, subtitle: str) -> None:
    """Draw the four panels and save them as a PNG at `path` (its folder made if missing)."""
    figure, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    figure.suptitle(f"rq-job-server benchmark\n{subtitle}", fontsize=11)
    _enqueue(axes[0][0], results)
    _workers(axes[0][1], results)
    _latency(axes[1][0], results)
    _memory(axes[1][1], results)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _bars(axis: Any, title: str, unit: str, bars: list[tuple[str, float, str]]) -> None:
    """Horizontal bars, top to bottom in the given order, each labelled with its value."""
    axis.set_title(title, fontsize=10)
    axis.set_xlabel(unit)
    if not bars:
        axis.text(0.5, 0.5, "not measured", ha="center", va="center", transform=axis.transAxes)
        axis.set_yticks([])
        return
    labels = [label for label, _, _ in bars]
    values = [value for _, value, _ in bars]
    drawn = axis.barh(labels, values, color=[color for _, _, color in bars])
    axis.bar_label(
        drawn, labels=[f"{value:,.0f}" if value >= 100 else f"{value:.1f}" for value in values], padding=3
    )
    axis.invert_yaxis()
    axis.margins(x=0.35)


def _enqueue(axis: Any, results: Results) -> None:
    named = [
        ("bare Flask app", results.bare, BASELINE),
        ("ours, 1 job a request", results.single, OURS),
        ("ours, batch", results.batch, OURS),
        ("in-process Queue.enqueue", results.in_process, BASELINE),
    ]
    bars = [(name, rate.job_rate, color) for name, rate, color in named if rate is not None and rate.jobs]
    _bars(axis, "Enqueue throughput (higher is better)", "jobs/s", bars)


def _workers(axis: Any, results: Results) -> None:
    bars = [
        (run.mode.name, run.rate, OURS if run.mode.ours else BASELINE)
        for run in results.workers
        if run.rate is not None
    ]
    _bars(axis, "Worker throughput, 2 workers, no-op jobs (higher is better)", "jobs/s", bars)


def _latency(axis: Any, results: Results) -> None:
    runs = [run for run in results.latency if run.p50 is not None and run.p99 is not None]
    axis.set_title("Latency, POST /enqueue to job ended (lower is better)", fontsize=10)
    axis.set_xlabel("ms")
    if not runs:
        _bars(axis, "Latency, POST /enqueue to job ended (lower is better)", "ms", [])
        return
    positions = range(len(runs))
    height = 0.38
    p50 = axis.barh([y - height / 2 for y in positions], [run.p50 for run in runs], height, label="p50")
    p99 = axis.barh([y + height / 2 for y in positions], [run.p99 for run in runs], height, label="p99")
    for drawn in (p50, p99):
        axis.bar_label(drawn, fmt="%.1f", padding=3)
    axis.set_yticks(list(positions), [run.mode.name for run in runs])
    axis.axvline(
        LATENCY_TARGET_MS, color="tab:red", linestyle="--", linewidth=1, label="fast-mode p50 target"
    )
    axis.invert_yaxis()
    axis.margins(x=0.35)
    axis.legend(loc="lower right", fontsize=8)


def _memory(axis: Any, results: Results) -> None:
    bars: list[tuple[str, float, str]] = []
    if results.web_worker is not None:
        bars.append(("web worker", results.web_worker.rss, OURS))
    for name, run in results.job_workers.items():
        if run.memory is None:
            continue
        color = OURS if run.mode.ours else BASELINE
        bars.append((f"{name} worker", run.memory.rss, color))
        if run.memory.children_rss is not None:
            bars.append((f"{name} worker + horse, PSS", run.memory.pss_total, color))
    _bars(axis, "Idle memory, RSS (lower is better)", "MiB", bars)
    if bars:
        axis.axvline(
            IDLE_WORKER_RSS_MIB, color="tab:red", linestyle="--", linewidth=1, label="job worker target"
        )
        axis.legend(loc="lower right", fontsize=8)
