"""Live updates on FakeRedis: the event streams (/jobs/<id>/events, /events) and ?wait= long polls."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient
from redis.exceptions import ConnectionError as RedisConnectionError
from rq.job import Job
from werkzeug.test import TestResponse

import app.events as events
from app.jobs.progress import PROGRESS_KEY
from app.queue import SERIALIZER
from tests.conftest import enqueue

COUNT = {"function": "count", "kwargs": {"duration": 0}}
FAILING = {"function": "count", "kwargs": {"duration": -1}}
TIME_LIMIT = 0.5


@pytest.fixture
def config() -> dict[str, Any]:
    """Poll fast, keep streams short, allow waits of two seconds."""
    return {"EVENTS_POLL_INTERVAL": 0.01, "EVENTS_MAX_DURATION": TIME_LIMIT, "MAX_WAIT": 2.0}


@dataclass(frozen=True)
class Block:
    """One block of an event stream: an event, a retry: line or a comment."""

    event: str | None = None
    data: Any = None
    retry: int | None = None
    comment: str | None = None


def parse(block: str) -> Block:
    """Read one block of Server-Sent Events text."""
    fields: dict[str, str] = {}
    comment = None
    for line in block.split("\n"):
        if line.startswith(":"):
            comment = line[1:].strip()
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    return Block(
        event=fields.get("event"),
        data=json.loads(fields["data"]) if "data" in fields else None,
        retry=int(fields["retry"]) if "retry" in fields else None,
        comment=comment,
    )


class Stream:
    """A streamed test response read block by block, as EventSource reads it."""

    def __init__(self, response: TestResponse) -> None:
        self.response = response
        self.chunks = iter(response.response)
        self.buffer = ""

    def next(self) -> Block | None:
        """Return the next block, or None once the server has ended the stream."""
        while "\n\n" not in self.buffer:
            try:
                chunk = next(self.chunks)
            except StopIteration:
                return None
            self.buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self.buffer = self.buffer.split("\n\n", 1)
        return parse(block)

    def next_event(self) -> Block:
        """Return the next named event, skipping retry: lines and comments."""
        while True:
            block = self.next()
            assert block is not None, "the stream ended"
            if block.event:
                return block

    def rest(self) -> list[Block]:
        """Return every block until the server ends the stream."""
        blocks = []
        while (block := self.next()) is not None:
            blocks.append(block)
        return blocks


@pytest.fixture
def stream(client: FlaskClient) -> Iterator[Callable[[str], Stream]]:
    """Return a function that opens an event stream; every stream is closed afterwards."""
    opened: list[TestResponse] = []

    def open_stream(url: str) -> Stream:
        response = client.get(url, headers={"Accept": "text/event-stream"}, buffered=False)
        opened.append(response)
        assert response.status_code == 200, response.get_data(as_text=True)
        return Stream(response)

    yield open_stream
    for response in opened:
        response.close()


def set_progress(redis: fakeredis.FakeRedis, job_id: str, current: int, total: int, message: str) -> None:
    """Write progress into a job's meta, as report_progress does in a worker."""
    job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
    job.meta[PROGRESS_KEY] = {
        "current": current,
        "total": total,
        "percent": 100 * current / total,
        "message": message,
    }
    job.save_meta()  # type: ignore[no-untyped-call]


def named(blocks: list[Block]) -> list[str]:
    """Return the names of the events among the blocks."""
    return [block.event for block in blocks if block.event]


# --- GET /jobs/<id>/events ---


def test_job_stream_is_an_uncached_event_stream_that_starts_with_its_retry(
    client: FlaskClient, stream: Callable[[str], Stream]
) -> None:
    job_id = enqueue(client, COUNT)

    events_ = stream(f"/jobs/{job_id}/events")

    assert events_.response.mimetype == "text/event-stream"
    assert events_.response.headers["Cache-Control"] == "no-cache"
    assert events_.response.headers["X-Accel-Buffering"] == "no"
    assert events_.next() == Block(retry=events.RETRY_MS)


def test_job_stream_of_a_finished_job_sends_its_status_then_end_and_closes(
    client: FlaskClient, work: Callable[[], None], stream: Callable[[str], Stream]
) -> None:
    job_id = enqueue(client, COUNT)
    work()

    blocks = stream(f"/jobs/{job_id}/events").rest()

    assert named(blocks) == ["job", "end"]
    assert blocks[1].data == client.get(f"/check_status?job_id={job_id}").get_json()
    assert blocks[2].data == {"job_id": job_id, "status": "finished"}


def test_job_stream_of_a_failed_job_carries_its_error(
    client: FlaskClient, work: Callable[[], None], stream: Callable[[str], Stream]
) -> None:
    job_id = enqueue(client, FAILING)
    work()

    blocks = [block for block in stream(f"/jobs/{job_id}/events").rest() if block.event]

    assert blocks[0].data["status"] == "failed"
    assert blocks[0].data["error"] == "ValueError: duration must be between 0 and 3600 seconds, not -1"
    assert blocks[-1] == Block(event="end", data={"job_id": job_id, "status": "failed"})


def test_job_stream_sends_each_progress_change(
    client: FlaskClient, redis: fakeredis.FakeRedis, stream: Callable[[str], Stream]
) -> None:
    job_id = enqueue(client, COUNT)
    events_ = stream(f"/jobs/{job_id}/events")
    assert events_.next_event().data["progress"] is None

    set_progress(redis, job_id, 1, 4, "one")
    first = events_.next_event()
    set_progress(redis, job_id, 2, 4, "two")
    second = events_.next_event()

    assert first.event == second.event == "job"
    assert first.data["progress"]["message"] == "one"
    assert second.data["progress"]["percent"] == 50


def test_job_stream_is_quiet_while_nothing_changes_and_ends_at_its_time_limit(
    client: FlaskClient, stream: Callable[[str], Stream]
) -> None:
    job_id = enqueue(client, COUNT)
    started = time.monotonic()

    blocks = stream(f"/jobs/{job_id}/events").rest()

    assert TIME_LIMIT <= time.monotonic() - started < TIME_LIMIT + 1
    assert named(blocks) == ["job"]
    assert blocks[-1].comment and "reconnect" in blocks[-1].comment


def test_quiet_stream_sends_keep_alive_comments(
    client: FlaskClient, stream: Callable[[str], Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.1)
    job_id = enqueue(client, COUNT)

    blocks = stream(f"/jobs/{job_id}/events").rest()

    assert sum(block.comment == "keep-alive" for block in blocks) >= 2


def test_job_stream_says_gone_and_ends_when_the_job_is_deleted(
    client: FlaskClient, stream: Callable[[str], Stream]
) -> None:
    job_id = enqueue(client, COUNT)
    events_ = stream(f"/jobs/{job_id}/events")
    events_.next_event()

    assert client.delete(f"/jobs/{job_id}").status_code == 200
    gone = events_.next_event()

    assert gone.event == "gone"
    assert gone.data["job_id"] == job_id
    assert gone.data["code"] == "job_not_found"
    assert events_.rest() == []


def test_job_stream_tells_of_a_redis_outage_and_asks_to_reconnect_later(
    client: FlaskClient, stream: Callable[[str], Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = enqueue(client, COUNT)
    events_ = stream(f"/jobs/{job_id}/events")
    events_.next_event()

    def unreachable(*args: Any) -> None:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(events, "read_states", unreachable)
    blocks = events_.rest()

    assert blocks[0] == Block(retry=events.UNAVAILABLE_RETRY_MS)
    assert blocks[1].event == "unavailable"
    assert blocks[1].data["code"] == "redis_unavailable"


@pytest.mark.parametrize(
    ("job_id", "status", "code"),
    [("no-such-job", 404, "job_not_found"), ("bad%20id", 400, "invalid_job_id")],
)
def test_job_stream_of_an_unknown_or_malformed_id_is_a_json_error(
    client: FlaskClient, job_id: str, status: int, code: str
) -> None:
    response = client.get(f"/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})

    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


# --- GET /events ---


@pytest.mark.parametrize(
    "query",
    [
        "",
        "per_page=2",
        "per_page=2&page=2",
        "status=finished",
        "status=failed",
        "queue=high",
        "function=count",
    ],
)
def test_list_stream_sends_what_get_jobs_answers(
    client: FlaskClient, work: Callable[[], None], stream: Callable[[str], Stream], query: str
) -> None:
    for body in (COUNT, FAILING, {**COUNT, "queue": "high"}, {"hello": "world"}):
        enqueue(client, body)
    work()
    enqueue(client, COUNT)
    enqueue(client, {**COUNT, "delay": 60})

    first = stream(f"/events?{query}").next_event()

    assert first.event == "jobs"
    assert first.data == client.get(f"/jobs?{query}").get_json()


def test_list_stream_sends_the_list_again_when_a_job_is_added_or_changes(
    client: FlaskClient, redis: fakeredis.FakeRedis, stream: Callable[[str], Stream]
) -> None:
    first_id = enqueue(client, COUNT)
    events_ = stream("/events")
    assert [job["job_id"] for job in events_.next_event().data["jobs"]] == [first_id]

    second_id = enqueue(client, COUNT)
    added = events_.next_event().data
    set_progress(redis, first_id, 1, 2, "half")
    changed = events_.next_event().data

    assert added["total"] == 2
    assert {job["job_id"] for job in added["jobs"]} == {first_id, second_id}
    progress = {job["job_id"]: job["progress"] for job in changed["jobs"]}
    assert progress[first_id]["message"] == "half"
    assert progress[second_id] is None


def test_list_stream_builds_the_list_again_only_when_something_changed(
    client: FlaskClient,
    redis: fakeredis.FakeRedis,
    stream: Callable[[str], Stream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [enqueue(client, COUNT) for _ in range(3)]
    builds: list[float] = []
    list_jobs = events.listing.list_jobs

    def spy() -> Any:
        builds.append(time.monotonic())
        return list_jobs()

    monkeypatch.setattr(events.listing, "list_jobs", spy)
    monkeypatch.setattr(events, "HEARTBEAT_SECONDS", 0.05)
    events_ = stream("/events")
    events_.next_event()
    keep_alives = 0
    while keep_alives < 3:  # some fifteen ticks with nothing new
        block = events_.next()
        assert block is not None and block.event is None
        keep_alives += block.comment == "keep-alive"
    idle = len(builds)
    set_progress(redis, ids[1], 1, 2, "half")
    events_.next_event()

    # Once, and once more to learn the sign of the jobs it shows; then only on the change.
    assert idle <= 2
    assert len(builds) == idle + 1


def test_list_stream_has_no_end_event_and_stops_at_its_time_limit(
    client: FlaskClient, work: Callable[[], None], stream: Callable[[str], Stream]
) -> None:
    enqueue(client, COUNT)
    work()

    blocks = stream("/events").rest()

    assert named(blocks) == ["jobs"]
    assert blocks[-1].comment and "reconnect" in blocks[-1].comment


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("status=nope", 422, "invalid_status"),
        ("page=x", 400, "invalid_page"),
        ("per_page=0", 422, "invalid_per_page"),
        ("colour=red", 422, "unknown_parameters"),
    ],
)
def test_list_stream_refuses_a_bad_query_before_streaming(
    client: FlaskClient, query: str, status: int, code: str
) -> None:
    response = client.get(f"/events?{query}", headers={"Accept": "text/event-stream"})

    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code


# --- ?wait= on /check_status and /get_result ---


@pytest.mark.parametrize("path", ["/check_status", "/get_result"])
@pytest.mark.parametrize(
    ("wait", "status"),
    [("soon", 400), ("nan", 400), ("inf", 400), ("1e999", 400), ("-1", 422), ("2.5", 422)],
)
def test_a_bad_wait_is_refused(client: FlaskClient, path: str, wait: str, status: int) -> None:
    job_id = enqueue(client, COUNT)

    response = client.get(f"{path}?job_id={job_id}&wait={wait}")

    assert response.status_code == status
    assert response.get_json()["error"]["code"] == "invalid_wait"


@pytest.mark.parametrize("path", ["/check_status", "/get_result"])
def test_wait_on_an_ended_job_answers_at_once(
    client: FlaskClient, work: Callable[[], None], path: str
) -> None:
    job_id = enqueue(client, COUNT)
    work()
    started = time.monotonic()

    response = client.get(f"{path}?job_id={job_id}&wait=2")

    assert time.monotonic() - started < 0.5
    assert response.status_code == 200
    assert response.get_json()["status"] == "finished"


@pytest.mark.parametrize(("path", "status"), [("/check_status", 200), ("/get_result", 202)])
def test_wait_on_a_job_where_nothing_happens_answers_after_the_wait(
    client: FlaskClient, path: str, status: int
) -> None:
    job_id = enqueue(client, COUNT)
    started = time.monotonic()

    response = client.get(f"{path}?job_id={job_id}&wait=0.3")

    assert 0.3 <= time.monotonic() - started < 1.3
    assert response.status_code == status
    assert response.get_json()["status"] == "queued"


def in_background(call: Callable[[], TestResponse]) -> Callable[[], tuple[TestResponse, float]]:
    """Start a request in a thread; return a function that waits for its answer and its duration."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        outcome["response"] = call()
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()

    def join() -> tuple[TestResponse, float]:
        thread.join(10)
        return outcome["response"], outcome["elapsed"]

    return join


def test_check_status_wait_answers_as_soon_as_the_progress_changes(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, COUNT)

    answer = in_background(lambda: client.get(f"/check_status?job_id={job_id}&wait=2"))
    time.sleep(0.2)
    set_progress(redis, job_id, 1, 2, "half")
    response, elapsed = answer()

    assert 0.2 <= elapsed < 1.5
    assert response.get_json()["progress"]["message"] == "half"


def test_get_result_wait_answers_with_the_result_once_the_job_ends(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, {"hello": "world"})

    answer = in_background(lambda: client.get(f"/get_result?job_id={job_id}&wait=2"))
    time.sleep(0.2)
    work()
    response, elapsed = answer()

    assert elapsed < 1.5
    assert response.status_code == 200
    assert response.get_json()["result"]["input"] == {"hello": "world"}


def test_get_result_wait_answers_409_once_the_job_fails(
    client: FlaskClient, work: Callable[[], None]
) -> None:
    job_id = enqueue(client, FAILING)

    answer = in_background(lambda: client.get(f"/get_result?job_id={job_id}&wait=2"))
    time.sleep(0.2)
    work()
    response, elapsed = answer()

    assert elapsed < 1.5
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "job_failed"


def test_wait_answers_404_when_the_job_is_deleted_meanwhile(client: FlaskClient) -> None:
    job_id = enqueue(client, COUNT)

    answer = in_background(lambda: client.get(f"/check_status?job_id={job_id}&wait=2"))
    time.sleep(0.2)
    client.delete(f"/jobs/{job_id}")
    response, elapsed = answer()

    assert elapsed < 1.5
    assert response.status_code == 404
