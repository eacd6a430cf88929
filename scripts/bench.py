"""Benchmark the job server: enqueue and worker throughput, latency and memory, in one run.

    make bench                          .venv/bin/python scripts/bench.py --quick
    make bench BENCH_ARGS="--only worker --jobs 5000"

It starts its own redis-server, gunicorn (the production config, access log off) and RQ
workers, runs each scenario, prints a table per scenario and a Targets table, and writes a
chart (docs/benchmark.png, or --chart PATH). It exits 0 when it could measure, whether or
not the targets are met. The code is in scripts/bench/.
"""

from __future__ import annotations

import sys

# scripts/ is sys.path[0] here: `bench` is the package scripts/bench/ (a package wins over
# this module of the same name).
from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
