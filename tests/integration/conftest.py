"""Integration fixtures: a real redis-server, gunicorn and worker.sh, reached over HTTP."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from redis import Redis
from rq import Worker
from rq.worker import WorkerStatus

from app.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
# The virtualenv running pytest is the one that has gunicorn and rq.
BIN = Path(sys.executable).parent
HTTP_TIMEOUT = 5.0
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
JOB_TIMEOUT = 30.0
TERMINAL_STATUSES = {"finished", "failed", "stopped", "canceled"}

T = TypeVar("T")


# Waiting ------------------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, message: str = "the condition"
) -> T:
    """Return the predicate's first value other than None or False; raise TimeoutError at the deadline.

    (Not truthiness: a requests.Response of a 4xx or 5xx is falsy.)
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout:g}s for {message}; last value: {value!r}")
        time.sleep(interval)


# Child processes and their logs -------------------------------------------------------------


@dataclass
class Service:
    """A process started for the tests, with the log file shown when a test fails."""

    name: str
    log: Path
    stopped: float | None = None


SERVICES: list[Service] = []
_log_numbers = itertools.count(1)


def log_path(directory: Path, name: str) -> Path:
    """Return a log file in `directory` that no earlier process of this run has used."""
    return directory / f"{next(_log_numbers):02d}-{name}.log"


def tail(path: Path, lines: int = 150) -> str:
    """Return the last lines of a log file (or a note that there is none)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def descendants(pid: int) -> list[int]:
    """Return the ids of the processes below `pid`, children first (none without Linux's /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            # The command name may hold spaces and parentheses: the ppid follows the last ")".
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


class Child:
    """A child process in its own session, its output written to a log file."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.service = Service(name, log)
        SERVICES.append(self.service)
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: nothing pytest's terminal receives reaches it.
                start_new_session=True,
            )
        CHILDREN.append(self)

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.process.pid

    def check_alive(self) -> bool:
        """Return True while the process runs; raise with its log once it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; its log "
                f"({self.service.log}):\n{tail(self.service.log)}"
            )
        return True

    def terminate(self) -> None:
        """Send SIGTERM to the process itself (not its group)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Return the exit status, or None when the process still runs after `timeout` seconds."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.service.stopped = time.time()
        return status

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Stop gracefully with SIGTERM; SIGKILL it and everything below it after `timeout`."""
        if self.process.poll() is None:
            family = descendants(self.pid)
            self.terminate()
            if self.wait(timeout) is None:
                for pid in [self.pid, *family]:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait(timeout)
        self.service.stopped = self.service.stopped or time.time()
        return self.process.returncode


CHILDREN: list[Child] = []


def service_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Return the environment gunicorn and worker.sh run with."""
    env = {key: value for key, value in os.environ.items() if key not in {"TEST_REDIS_URL", "WORKERS"}}
    env.update(
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
        REDIS_URL=redis_url,
        APP_ENV="production",
        ECHO_DELAY_SECONDS="1",
        REDIS_SOCKET_TIMEOUT="1",
        WEB_CONCURRENCY="2",
        PYTHONUNBUFFERED="1",
        # Pinned so that a developer's .env cannot change what the tests see.
        DASHBOARD_ENABLED="true",
        PROXY_COUNT="0",
        LOG_FILE="",
    )
    env.update(extra)
    return env


@contextmanager
def running_redis(directory: Path) -> Iterator[RedisServer]:
    """Run a redis-server with append-only persistence in `directory` on a free port."""
    server = RedisServer(free_port(), directory, log_file=directory / "redis.log")
    service = Service("redis-server", server.log_file)
    SERVICES.append(service)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        service.stopped = time.time()


def answers(url: str) -> bool:
    """Tell whether GET `url` answers 200."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def running_gunicorn(redis_url: str, logs: Path) -> Iterator[str]:
    """Run gunicorn with the project's config on a free port; yield its base URL."""
    port = free_port()
    child = Child(
        "gunicorn",
        [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "app.wsgi:app"],
        service_env(redis_url, PORT=str(port), HOST="127.0.0.1"),
        log_path(logs, "gunicorn"),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: child.check_alive() and answers(f"{base_url}/"),
            START_TIMEOUT,
            message=f"gunicorn to answer GET {base_url}/",
        )
        yield base_url
    finally:
        child.stop()


def listening_workers(redis_url: str) -> set[str]:
    """Return the names of the RQ workers in this Redis that wait for or run jobs.

    Not merely registered: a worker registers before it installs its signal handlers, and a
    SIGTERM in between kills it outright instead of asking it to stop.
    """
    with Redis.from_url(redis_url, socket_timeout=HTTP_TIMEOUT) as connection:
        return {
            worker.name
            for worker in Worker.all(connection=connection)
            if worker.get_state() in {WorkerStatus.IDLE, WorkerStatus.BUSY}
        }


@contextmanager
def running_workers(redis_url: str, logs: Path, count: int = 2, **env: str) -> Iterator[Child]:
    """Run `./worker.sh count` until its workers listen for jobs; SIGTERM it afterwards.

    `env` adds settings, e.g. WORKER_MODE="fast".
    """
    with Redis.from_url(redis_url, socket_timeout=HTTP_TIMEOUT) as connection:
        before = {worker.name for worker in Worker.all(connection=connection)}
    child = Child(
        "worker.sh",
        [str(ROOT / "worker.sh"), str(count)],
        service_env(redis_url, **env),
        log_path(logs, "worker"),
    )
    try:
        wait_for(
            lambda: child.check_alive() and len(listening_workers(redis_url) - before) >= count,
            START_TIMEOUT,
            message=f"{count} RQ workers of worker.sh to listen for jobs",
        )
        yield child
    finally:
        child.stop()


TEST_STARTED = pytest.StashKey[float]()
# A failed test's report also shows the logs of the processes stopped up to this many seconds
# before it began: what an earlier test's worker did as it stopped can be the cause.
RECENTLY_STOPPED = 60.0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the logs of the processes that ran during a failed test, or just before, to its report."""
    report = yield
    if call.when == "setup":
        item.stash[TEST_STARTED] = call.start
    if report.failed:
        since = item.stash.get(TEST_STARTED, call.start)
        for service in SERVICES:
            if service.stopped is None or service.stopped >= since - RECENTLY_STOPPED:
                report.sections.append((f"log of {service.name}: {service.log}", tail(service.log)))
    return report


# Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the directory the child processes write their logs to."""
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session", autouse=True)
def _stop_leftover_children() -> Iterator[None]:
    """Stop any child process a test left running, whatever happened."""
    yield
    for child in CHILDREN:
        child.stop(timeout=5)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the Redis of the tests: TEST_REDIS_URL (flushed first) or a redis-server of our own."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        with Redis.from_url(url, socket_timeout=HTTP_TIMEOUT, socket_connect_timeout=HTTP_TIMEOUT) as client:
            client.flushdb()
        yield url
        return
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session")
def server(redis_url: str, logs_dir: Path) -> Iterator[str]:
    """Return the base URL of a real gunicorn serving the app."""
    with running_gunicorn(redis_url, logs_dir) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def workers(redis_url: str, logs_dir: Path) -> Iterator[Child]:
    """Run `./worker.sh 2` for the module's tests."""
    with running_workers(redis_url, logs_dir, count=2) as child:
        yield child


# HTTP helpers -------------------------------------------------------------------------------


def get(base_url: str, path: str, **params: str) -> requests.Response:
    """GET a path of the server."""
    return requests.get(f"{base_url}{path}", params=params, timeout=HTTP_TIMEOUT)


def enqueue(base_url: str, body: Any) -> dict[str, Any]:
    """POST a JSON body to /enqueue, check it was accepted, and return the answer."""
    response = requests.post(f"{base_url}/enqueue", json=body, timeout=HTTP_TIMEOUT)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def wait_for_job(
    base_url: str, job_id: str, until: str = "finished", timeout: float = JOB_TIMEOUT
) -> list[dict[str, Any]]:
    """Poll /check_status until the job's status is `until`; return every answer seen, in order."""
    seen: list[dict[str, Any]] = []

    def reached() -> bool:
        response = get(base_url, "/check_status", job_id=job_id)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        seen.append(body)
        if body["status"] in TERMINAL_STATUSES and body["status"] != until:
            raise AssertionError(f"job {job_id} ended {body['status']}, not {until}: {body}")
        return body["status"] == until

    try:
        wait_for(reached, timeout, interval=0.05, message=f"job {job_id} to be {until}")
    except TimeoutError as error:
        raise TimeoutError(f"{error}; last status: {seen[-1] if seen else None}") from None
    return seen
