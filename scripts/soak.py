"""Soak test: post jobs over HTTP from concurrent clients while workers are killed at random.

    .venv/bin/python scripts/soak.py --jobs 10000 --clients 16 --workers 3 --kill-every 3

It starts its own redis-server (append-only), gunicorn and worker slots (`./worker.sh 1` each),
posts `count` jobs with an Idempotency-Key (a client retries a failed POST with the same key),
SIGKILLs a random worker and its work horse every few seconds and starts a new one in its
place, then waits for every accepted job to end. It prints one line of counts and exits 0
only when accepted = finished + failed, no job is lost and no request made two jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.redis_server import RedisServer, free_port  # noqa: E402

BIN = Path(sys.executable).parent
ENDED = {"finished", "failed", "stopped", "canceled"}


@dataclass
class Tally:
    """What the clients saw: accepted job ids per idempotency key, and refusals."""

    jobs: dict[str, set[str]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own session, its output in a log file."""
    with log.open("ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll the predicate until it holds; False at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def post_job(base: str, tally: Tally, duration: float, attempts: int = 20) -> None:
    """Post one job, retrying with the same Idempotency-Key until it is accepted or refused."""
    key = str(uuid.uuid4())
    body = {"function": "count", "kwargs": {"duration": duration}, "retry": {"max": 3, "intervals": [0]}}
    for attempt in range(attempts):
        try:
            response = requests.post(
                f"{base}/enqueue", json=body, headers={"Idempotency-Key": key}, timeout=10
            )
        except requests.RequestException:
            time.sleep(0.05 * (attempt + 1))
            continue
        if response.status_code == 202:
            with tally.lock:
                tally.jobs.setdefault(key, set()).add(response.json()["job_id"])
            return
        if response.status_code in (409, 429, 500, 502, 503):
            time.sleep(0.05 * (attempt + 1))
            continue
        with tally.lock:
            tally.refused[str(response.status_code)] += 1
        return
    with tally.lock:
        tally.refused["gave up"] += 1


def kill_worker(slot: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the RQ worker under a worker.sh and its work horse; True when one was killed."""
    try:
        children = psutil.Process(slot.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        with_suppress_kill(child.pid)
    return bool(children)


def with_suppress_kill(pid: int) -> None:
    """Send SIGKILL, ignoring a process that is already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def statuses(redis: Redis, job_ids: list[str]) -> Counter[str]:
    """Count the jobs by status, reading only their status field."""
    counts: Counter[str] = Counter()
    for start_at in range(0, len(job_ids), 1000):
        chunk = job_ids[start_at : start_at + 1000]
        with redis.pipeline(transaction=False) as pipe:
            for job_id in chunk:
                pipe.hget(f"rq:job:{job_id}", "status")
            for raw in pipe.execute():
                counts[raw.decode() if raw else "missing"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the soak; return 0 when every accepted job ended exactly once."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument(
        "--kill-every", type=float, default=3.0, help="seconds between worker kills (0: none)"
    )
    parser.add_argument(
        "--restart-web-every", type=float, default=0.0, help="seconds between web server restarts (0: none)"
    )
    parser.add_argument("--duration", type=float, default=0.02, help="seconds each job counts")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for every job to end")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    redis_server = RedisServer(free_port(), workdir / "redis").start()
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "APP_ENV": "production",
        "REDIS_URL": redis_server.url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
        "RESULT_TTL": "3600",
    }
    web_command = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "app.wsgi:app"]
    web = start(web_command, env, workdir / "web.log")
    slots = [start(["./worker.sh", "1"], env, workdir / f"worker-{n}.log") for n in range(args.workers)]
    base = f"http://127.0.0.1:{port}"
    redis = Redis.from_url(redis_server.url)
    tally = Tally()
    kills = 0
    restarts = 0
    stop_killing = threading.Event()

    def restarter() -> None:
        nonlocal web, restarts
        while not stop_killing.wait(args.restart_web_every):
            # A full stop and start: requests in flight finish (graceful), new ones are refused
            # until the new server listens, and clients retry with the same Idempotency-Key.
            web.send_signal(signal.SIGTERM)
            web.wait(60)
            web = start(web_command, env, workdir / "web.log")
            restarts += 1

    def killer() -> None:
        nonlocal kills
        while not stop_killing.wait(args.kill_every):
            number = random.randrange(len(slots))
            if kill_worker(slots[number]):
                kills += 1
            slots[number].wait(30)
            slots[number] = start(["./worker.sh", "1"], env, workdir / f"worker-{number}.log")

    try:
        if not wait_until(lambda: _answers(base), 60):
            raise RuntimeError(f"gunicorn did not answer; see {workdir / 'web.log'}")
        started = time.monotonic()
        killing = threading.Thread(target=killer, daemon=True)
        if args.kill_every > 0:
            killing.start()
        restarting = threading.Thread(target=restarter, daemon=True)
        if args.restart_web_every > 0:
            restarting.start()
        with ThreadPoolExecutor(args.clients) as pool:
            for _ in range(args.jobs):
                pool.submit(post_job, base, tally, args.duration)
        posted = time.monotonic() - started
        job_ids = sorted({job_id for ids in tally.jobs.values() for job_id in ids})
        wait_until(lambda: set(statuses(redis, job_ids)) <= ENDED, args.timeout)
        stop_killing.set()
        for thread in (killing, restarting):
            if thread.is_alive():
                thread.join(60)
        elapsed = time.monotonic() - started
        counts = statuses(redis, job_ids)
        duplicates = sum(len(ids) - 1 for ids in tally.jobs.values())
        lost = len(job_ids) - sum(counts[status] for status in ENDED)
        unended = {status: n for status, n in counts.items() if status not in ENDED}
        ok = lost == 0 and duplicates == 0 and len(job_ids) == counts["finished"] + counts["failed"]
        print(
            f"soak: posted {args.jobs} in {posted:.1f}s, all ended in {elapsed:.1f}s; "
            f"accepted={len(job_ids)} finished={counts['finished']} failed={counts['failed']} "
            f"lost={lost} duplicates={duplicates} refused={dict(tally.refused)} workers_killed={kills} "
            f"web_restarts={restarts} not_ended={unended} logs={workdir} "
            f"-> {'PASS' if ok else 'FAIL'}",
            flush=True,
        )
        return 0 if ok else 1
    finally:
        stop_killing.set()
        for process in [web, *slots]:
            with_suppress_kill_group(process)
        redis_server.stop()


def _answers(base: str) -> bool:
    try:
        return requests.get(base + "/health", timeout=2).ok or requests.get(base + "/", timeout=2).ok
    except requests.RequestException:
        return False


def with_suppress_kill_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a child and everything it started."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for pid in [process.pid, *(child.pid for child in children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        for pid in [process.pid, *(child.pid for child in children)]:
            with_suppress_kill(pid)


if __name__ == "__main__":
    sys.exit(main())
