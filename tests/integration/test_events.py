"""Live updates under the production server: event streams and ?wait= long polls over gunicorn."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app.redis_server import free_port
from tests.integration.conftest import (
    BIN,
    HTTP_TIMEOUT,
    SERVICES,
    START_TIMEOUT,
    Child,
    answers,
    enqueue,
    get,
    log_path,
    service_env,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("workers")

STREAM = {"Accept": "text/event-stream"}
SHORT_STREAM_SECONDS = 2


def read_events(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Yield the blocks of an event stream as they arrive: event, data, retry or comment."""
    block: dict[str, Any] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if block:
                yield block
            block = {}
        elif line.startswith(":"):
            block["comment"] = line[1:].strip()
        else:
            name, _, value = line.partition(": ")
            block[name] = json.loads(value) if name == "data" else value
    if block:
        yield block


def open_stream(url: str, read_timeout: float = 30) -> requests.Response:
    """Open an event stream; the server answers at once with headers, then events."""
    response = requests.get(url, headers=STREAM, stream=True, timeout=(HTTP_TIMEOUT, read_timeout))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return response


@pytest.fixture(scope="module")
def short_streams(redis_url: str, logs_dir: Path) -> Iterator[str]:
    """Return the URL of a gunicorn whose streams end after two seconds."""
    port = free_port()
    env = service_env(
        redis_url,
        PORT=str(port),
        HOST="127.0.0.1",
        EVENTS_MAX_DURATION=str(SHORT_STREAM_SECONDS),
        EVENTS_POLL_INTERVAL="0.2",
    )
    command = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "app.wsgi:app"]
    child = Child("gunicorn (short streams)", command, env, log_path(logs_dir, "gunicorn-short-streams"))
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


def test_job_stream_follows_a_job_to_its_end_and_closes(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 2}})["job_id"]
    started = time.monotonic()

    with open_stream(f"{server}/jobs/{job_id}/events") as response:
        blocks = list(read_events(response))

    assert time.monotonic() - started < 15
    assert blocks[0] == {"retry": "1000"}
    updates = [block["data"] for block in blocks if block.get("event") == "job"]
    messages = [update["progress"]["message"] for update in updates if update["progress"]]
    assert "counted 1 of 2" in messages
    assert updates[-1]["status"] == "finished"
    assert updates[-1]["progress"]["percent"] == 100
    assert blocks[-1] == {"event": "end", "data": {"job_id": job_id, "status": "finished"}}


def test_open_streams_hold_threads_and_the_server_keeps_answering(server: str) -> None:
    # Four streams on two worker processes: a stream must hold a thread, not a whole worker.
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 0}, "delay": 600})["job_id"]
    streams = [open_stream(f"{server}/jobs/{job_id}/events") for _ in range(4)]
    try:
        for response in streams:
            first = next(block for block in read_events(response) if block.get("event"))
            assert first["data"]["status"] == "scheduled"
        for _ in range(5):
            started = time.monotonic()
            assert get(server, "/functions").status_code == 200
            assert time.monotonic() - started < 1
    finally:
        for response in streams:
            response.close()
        requests.post(f"{server}/jobs/{job_id}/cancel", timeout=HTTP_TIMEOUT)


def test_a_stream_whose_client_left_ends_at_once(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 0}, "delay": 600})["job_id"]
    (log,) = [
        service.log
        for service in SERVICES
        if service.stopped is None and f"Listening at: {server} " in service.log.read_text(errors="replace")
    ]
    with open_stream(f"{server}/jobs/{job_id}/events") as response:
        next(block for block in read_events(response) if block.get("event"))
    closed = time.monotonic()

    # gunicorn logs a request once its answer is over: well before the stream's next keep-alive.
    wait_for(
        lambda: f"/jobs/{job_id}/events" in log.read_text(errors="replace"),
        timeout=5,
        message="the stream to end after its client left",
    )
    assert time.monotonic() - closed < 5
    requests.post(f"{server}/jobs/{job_id}/cancel", timeout=HTTP_TIMEOUT)


def test_list_stream_shows_a_new_job_going_to_finished(server: str) -> None:
    with open_stream(f"{server}/events?per_page=5") as response:
        blocks = read_events(response)
        next(block for block in blocks if block.get("event") == "jobs")
        job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 1}})["job_id"]
        statuses: list[str] = []
        for block in blocks:
            if block.get("event") != "jobs":
                continue
            ours = [job for job in block["data"]["jobs"] if job["job_id"] == job_id]
            if ours:
                statuses.append(ours[0]["status"])
            if statuses and statuses[-1] == "finished":
                break

    assert statuses[-1] == "finished"
    assert statuses[0] in {"queued", "started"}


def test_streams_end_at_their_time_limit_and_the_client_reconnects(short_streams: str) -> None:
    enqueue(short_streams, {"function": "count", "kwargs": {"duration": 0}})
    started = time.monotonic()

    for _ in range(2):  # what EventSource does: a new request once the stream ends
        with open_stream(f"{short_streams}/events", read_timeout=10) as response:
            blocks = list(read_events(response))
        assert blocks[0] == {"retry": "1000"}
        names = [block["event"] for block in blocks if "event" in block]
        assert names and set(names) == {"jobs"}
        assert "reconnect" in blocks[-1]["comment"]

    assert 2 * SHORT_STREAM_SECONDS <= time.monotonic() - started < 2 * SHORT_STREAM_SECONDS + 6


def test_get_result_with_wait_answers_when_the_job_ends(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 2}})["job_id"]
    started = time.monotonic()

    response = requests.get(f"{server}/get_result", params={"job_id": job_id, "wait": 20}, timeout=30)

    assert time.monotonic() - started < 12
    assert response.status_code == 200, response.text
    assert response.json()["result"]["counted"] == 2


def test_check_status_with_wait_answers_at_each_change(server: str) -> None:
    job_id = enqueue(server, {"function": "count", "kwargs": {"duration": 3}})["job_id"]
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30

    while (not seen or seen[-1]["status"] != "finished") and time.monotonic() < deadline:
        response = requests.get(f"{server}/check_status", params={"job_id": job_id, "wait": 20}, timeout=30)
        assert response.status_code == 200, response.text
        seen.append(response.json())

    assert seen[-1]["status"] == "finished"
    # Each answer came on a change: its status or its progress differs from the one before.
    changes = [(body["status"], body["progress"]) for body in seen]
    assert all(before != after for before, after in itertools.pairwise(changes))
    messages = {body["progress"]["message"] for body in seen if body["progress"]}
    assert {"counted 1 of 3", "counted 3 of 3"} <= messages
