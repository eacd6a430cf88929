"""The processes a benchmark runs: a private redis-server, gunicorns and RQ workers, always stopped."""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

import psutil
from redis import Redis
from rq import Worker

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(ROOT))

from app.redis_server import RedisServer, free_port  # noqa: E402

START_TIMEOUT = 60.0
STOP_TIMEOUT = 35.0  # gunicorn's graceful_timeout is 30 s

# gunicorn.conf.py as production runs it, but for the access log: one formatted line per
# request would be a good part of what a no-op request costs (it has no setting to turn it off
# from the command line: --access-logfile '' is refused).
GUNICORN_CONFIG = '''"""gunicorn.conf.py with the access log off (written by scripts/bench)."""
import runpy

globals().update(
    (name, value) for name, value in runpy.run_path({path!r}).items() if not name.startswith("__")
)
accesslog = None
'''


def wait_until(predicate: Callable[[], bool], timeout: float, message: str, interval: float = 0.05) -> None:
    """Poll the predicate until it holds; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g}s for {message}")
        time.sleep(interval)


def last_line(path: Path) -> str:
    """Return the last non-empty line of a log file (the error, when a Python process died)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


class Child:
    """A child process in its own session (a Ctrl-C reaches only us), its output in a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.process.pid

    def check_alive(self) -> bool:
        """Return True while the process runs; raise RuntimeError with its log once it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {last_line(self.log)}")
        return True

    def descendants(self) -> list[int]:
        """Return the ids of the processes below this one."""
        with suppress(psutil.NoSuchProcess):
            return [child.pid for child in psutil.Process(self.pid).children(recursive=True)]
        return []

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop it with SIGTERM; SIGKILL it and everything below it after `timeout` seconds."""
        if self.process.poll() is not None:
            return
        family = self.descendants()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in [self.pid, *family]:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout)


@dataclass
class Web:
    """A gunicorn serving on 127.0.0.1."""

    child: Child
    port: int
    host: str = "127.0.0.1"

    def worker_pids(self) -> list[int]:
        """Return the ids of gunicorn's worker processes (the master's children)."""
        with suppress(psutil.NoSuchProcess):
            return [child.pid for child in psutil.Process(self.child.pid).children()]
        return []


class WorkerMode(Protocol):
    """What start_workers needs of a worker mode (bench.workers.Mode)."""

    worker_class: str

    def command(self, python: str, redis_url: str) -> list[str]:
        """Return the command that runs one worker."""
        ...


class WorkerStartError(RuntimeError):
    """RQ workers that exited or did not get ready: their class is missing or broken."""


class Stack:
    """A private redis-server, with the gunicorns and RQ workers started on it; all stopped on exit."""

    def __init__(self, workdir: Path, web_concurrency: int, python: Path = Path(sys.executable)) -> None:
        self.workdir = workdir
        # The servers' and workers' virtualenv: its python, gunicorn and rq.
        self.bin = python.parent
        self.logs = workdir / "logs"
        self.web_concurrency = web_concurrency
        self.server = RedisServer(free_port(), workdir / "redis")
        self.children: list[Child] = []
        self._numbers = itertools.count(1)

    def __enter__(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.workdir / "metrics").mkdir(exist_ok=True)
        (self.workdir / "gunicorn.conf.py").write_text(
            GUNICORN_CONFIG.format(path=str(ROOT / "gunicorn.conf.py"))
        )
        self.server.start()
        self.redis = Redis.from_url(self.server.url, socket_timeout=30)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        # A second Ctrl-C must not cut the cleanup short: each stop has a deadline of its own.
        previous = {
            number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for child in reversed(self.children):
                with suppress(OSError, subprocess.SubprocessError):
                    child.stop()
            self.redis.close()
            self.server.stop()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @property
    def redis_url(self) -> str:
        """Return the private Redis's URL."""
        return self.server.url

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment of the processes: production settings, quiet logs, this Redis."""
        env = dict(os.environ)
        env.update(
            PATH=os.pathsep.join([str(self.bin), env.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join([str(ROOT), str(SCRIPTS)]),
            PYTHONUNBUFFERED="1",
            APP_ENV="production",
            REDIS_URL=self.redis_url,
            WEB_CONCURRENCY=str(self.web_concurrency),
            LOG_LEVEL="WARNING",
            PROMETHEUS_MULTIPROC_DIR=str(self.workdir / "metrics"),
            # Pinned so that a developer's .env cannot change what is measured.
            LOG_FORMAT="text",
            LOG_FILE="",
            API_KEYS="[]",
            RATE_LIMIT="",
            REDIS_SENTINELS="",
            PROXY_COUNT="0",
        )
        env.update(extra)
        return env

    def start(self, name: str, command: list[str], env: dict[str, str]) -> Child:
        """Start a child process, logging to logs/NN-name.log; it is stopped on exit."""
        child = Child(name, command, env, self.logs / f"{next(self._numbers):02d}-{name}.log")
        self.children.append(child)
        return child

    def start_web(self, app: str, name: str) -> Web:
        """Start gunicorn with the project's config on `app` ("module:variable"); wait until it answers."""
        port = free_port()
        command = [str(self.bin / "gunicorn"), "--config", str(self.workdir / "gunicorn.conf.py"), app]
        web = Web(self.start(name, command, self.env(PORT=str(port), HOST="127.0.0.1")), port)
        wait_until(
            lambda: web.child.check_alive() and answers(web.host, port),
            START_TIMEOUT,
            f"gunicorn ({app}) to answer on port {port}",
        )
        return web

    def start_workers(self, name: str, mode: WorkerMode, count: int) -> list[Child]:
        """Start `count` workers of a mode; wait until all are idle."""
        command = mode.command(str(self.bin / "python"), self.redis_url)
        children = []
        for number in range(1, count + 1):
            worker_name = f"bench-{name}-{number}"
            children.append(self.start(worker_name, [*command, "--name", worker_name], self.env()))
        names = {child.name for child in children}

        def ready() -> bool:
            for child in children:
                try:
                    child.check_alive()
                except RuntimeError as error:
                    raise WorkerStartError(str(error)) from None
            return idle_workers(self.redis, names) == names

        try:
            wait_until(ready, START_TIMEOUT, f"{count} {mode.worker_class} workers to be idle")
        except TimeoutError as error:
            self.stop(children)
            raise WorkerStartError(f"{error}: {last_line(children[0].log)}") from None
        except WorkerStartError:
            self.stop(children)
            raise
        return children

    def stop(self, children: list[Child]) -> None:
        """Stop these children (SIGTERM to all first, so they stop side by side)."""
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in children:
            child.stop()
            self.children.remove(child)

    def flush(self) -> None:
        """Empty the database: the jobs and workers of the scenario before."""
        self.redis.flushdb()


def idle_workers(redis: Redis, names: set[str]) -> set[str]:
    """Return which of the named RQ workers are registered and idle."""
    return {
        worker.name
        for worker in Worker.all(connection=redis)
        if worker.name in names and worker.get_state() == "idle"
    }


def answers(host: str, port: int) -> bool:
    """Tell whether an HTTP server answers GET / (any status) at this address."""
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
