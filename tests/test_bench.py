"""`make bench` runs end to end: a quick benchmark prints its tables and writes its chart.

Speeds are not asserted here: the benchmark holds them to its targets and reports PASS/FAIL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# It starts and stops a redis-server of its own, whatever TEST_REDIS_URL says.
@pytest.mark.owns_redis
def test_quick_benchmark_prints_every_table_and_writes_a_png_chart(tmp_path: Path) -> None:
    chart = tmp_path / "b.png"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--chart", str(chart)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for title in ("Machine", "Enqueue throughput", "Worker throughput", "Latency", "Memory", "Targets"):
        assert f"\n{title}" in run.stdout, run.stdout
    # The tests' virtualenv has the development packages: the table says the servers ran with them.
    assert "servers and workers run by" in run.stdout
    assert "development packages too" in run.stdout
    targets = run.stdout.split("\nTargets\n", 1)[1]
    assert "fast mode jobs/s vs rq.Worker" in targets
    assert "POST /enqueue vs bare Flask + RQ" in targets
    assert chart.read_bytes().startswith(PNG_SIGNATURE)
    assert chart.stat().st_size > 10_000


def test_a_python_that_is_not_there_is_refused_before_anything_starts(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--python", str(tmp_path / "python")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 2
    assert f"--python: no such file: {tmp_path / 'python'}" in run.stderr
