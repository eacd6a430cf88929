"""A small soak run: jobs posted while workers are killed and gunicorn restarts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.owns_redis
def test_no_accepted_job_is_lost_or_doubled_while_workers_die_and_the_server_restarts() -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "soak.py"),
            *("--jobs", "300", "--clients", "8", "--workers", "2"),
            *("--kill-every", "2", "--restart-web-every", "3", "--timeout", "150"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )

    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, summary
    assert "lost=0 duplicates=0" in summary
    assert "-> PASS" in summary
