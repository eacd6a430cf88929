"""Load generators: forked processes started together, and HTTP clients on keep-alive connections."""

from __future__ import annotations

import http.client
import multiprocessing
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Forked, not spawned: a worker process needs only what this one has already imported.
CONTEXT = multiprocessing.get_context("fork")


def split(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` counts that differ by at most one."""
    return [total // parts + (1 if part < total % parts else 0) for part in range(parts)]


def run_parallel(
    prepare: Callable[[int], Callable[[], Any]], shares: list[int], timeout: float
) -> tuple[float, list[Any]]:
    """Run `prepare(share)()` in one forked process per share; return the wall time and the results.

    Each process prepares (connects) first; the clock starts when all are ready, and stops
    when the last one is done.
    """
    ready = CONTEXT.Barrier(len(shares) + 1)
    go = CONTEXT.Event()
    results: Any = CONTEXT.Queue()
    processes = [
        CONTEXT.Process(target=_run_child, args=(prepare, share, ready, go, results, timeout), daemon=True)
        for share in shares
    ]
    deadline = time.monotonic() + timeout
    outcomes = []
    try:
        for process in processes:
            process.start()
        try:
            ready.wait(timeout)
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a load process failed to start: {_first_error(results)}") from None
        started = time.monotonic()
        go.set()
        for _ in processes:
            try:
                outcomes.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise TimeoutError(f"a load process did not finish within {timeout:g}s") from None
    finally:
        # Done: each process exits by itself once its result is sent. Failed: stop them now.
        for process in processes:
            process.join(5 if len(outcomes) == len(processes) else 0)
            if process.is_alive():
                process.terminate()
                process.join(5)
    errors = [error for _, _, error in outcomes if error]
    if errors:
        raise RuntimeError(f"a load process failed: {errors[0]}")
    return max(finished for finished, _, _ in outcomes) - started, [value for _, value, _ in outcomes]


def _run_child(
    prepare: Callable[[int], Callable[[], Any]],
    share: int,
    ready: Any,
    go: Any,
    results: Any,
    timeout: float,
) -> None:
    # The parent's SIGTERM handler raises KeyboardInterrupt; here a SIGTERM just ends the process.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        run = prepare(share)
    except BaseException as error:
        results.put((0.0, None, repr(error)))
        ready.abort()
        return
    try:
        ready.wait(timeout)
        go.wait(timeout)
        value = run()
        results.put((time.monotonic(), value, ""))
    except BaseException as error:
        results.put((time.monotonic(), None, repr(error)))


def _first_error(results: Any) -> str:
    try:
        return str(results.get(timeout=1)[2])
    except Exception:  # an empty queue: the process died without a word
        return "(no message)"


@dataclass(frozen=True)
class Request:
    """One HTTP request to repeat, and what counts as its success."""

    method: str
    path: str
    body: bytes | None = None
    expect: int = 200
    jobs: int = 0  # jobs a successful request makes (0: it makes none)


@dataclass
class Tally:
    """What the clients saw."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    sample: str = ""  # the body of the first unexpected answer

    def add(self, other: Tally) -> None:
        """Add another tally's counts to this one."""
        self.ok += other.ok
        self.errors.update(other.errors)
        self.sample = self.sample or other.sample


@dataclass
class LoadResult:
    """A load run: requests made, their outcome, and the wall time."""

    request: Request
    requests: int
    tally: Tally
    seconds: float

    @property
    def rate(self) -> float:
        """Return the successful requests per second."""
        return self.tally.ok / self.seconds if self.seconds else 0.0

    @property
    def job_rate(self) -> float:
        """Return the jobs made per second."""
        return self.rate * self.request.jobs

    @property
    def error_count(self) -> int:
        """Return the number of failed requests."""
        return sum(self.tally.errors.values())


def run_load(
    host: str,
    port: int,
    request: Request,
    total: int,
    connections: int,
    processes: int = 2,
    timeout: float = 600,
) -> LoadResult:
    """Send `request` `total` times over `connections` keep-alive connections, from a few processes."""
    processes = max(1, min(processes, connections))
    counts = iter(split(total, connections))
    # The request counts of each process's connections.
    groups = [[next(counts) for _ in range(threads)] for threads in split(connections, processes)]

    def prepare(index: int) -> Callable[[], dict[str, Any]]:
        clients = [http.client.HTTPConnection(host, port, timeout=30) for _ in groups[index]]
        for client in clients:
            client.connect()
        return lambda: _drive_all(clients, groups[index], request)

    seconds, values = run_parallel(prepare, list(range(processes)), timeout)
    tally = Tally()
    for value in values:
        tally.add(Tally(value["ok"], Counter(value["errors"]), value["sample"]))
    return LoadResult(request, total, tally, seconds)


def _drive_all(
    clients: list[http.client.HTTPConnection], counts: list[int], request: Request
) -> dict[str, Any]:
    """Drive each connection from a thread of its own; return the summed tally (picklable)."""
    tallies = [Tally() for _ in clients]
    threads = [
        threading.Thread(target=_drive, args=(client, count, request, tally))
        for client, count, tally in zip(clients, counts, tallies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return {"ok": total.ok, "errors": dict(total.errors), "sample": total.sample}


def _drive(client: http.client.HTTPConnection, count: int, request: Request, tally: Tally) -> None:
    headers = {"Content-Type": "application/json"} if request.body is not None else {}
    for _ in range(count):
        try:
            client.request(request.method, request.path, body=request.body, headers=headers)
            response = client.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            tally.errors[type(error).__name__] += 1
            client.close()  # the next request opens a new connection
            continue
        if response.status == request.expect:
            tally.ok += 1
        else:
            tally.errors[f"HTTP {response.status}"] += 1
            tally.sample = tally.sample or body[:300].decode(errors="replace")


def request_once(host: str, port: int, request: Request) -> tuple[int, bytes]:
    """Send one request on a new connection; return the status and body."""
    client = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Content-Type": "application/json"} if request.body is not None else {}
    try:
        client.request(request.method, request.path, body=request.body, headers=headers)
        response = client.getresponse()
        return response.status, response.read()
    finally:
        client.close()
