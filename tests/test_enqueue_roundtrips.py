"""How many times POST /enqueue waits on Redis: once for a plain job, once for a plain batch.

Every write the app makes to a Redis connection is recorded with the commands in it: redis-py
sends a command, or a whole pipeline, in one write and then reads the replies, so each write
is one round trip. (RQ's own Queue.enqueue takes two: SADD rq:queues, then the job.) A job
that waits for nothing is one command, the app's Lua script (app.push); a scheduled job or a
batch, one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis.connection import AbstractConnection

from tests.conftest import enqueue

Trip = list[str]


def command_names(packed: bytes) -> Trip:
    """Return the names of the commands in a RESP write (arrays of bulk strings)."""
    names, at = [], 0
    while at < len(packed):
        assert packed[at : at + 1] == b"*", packed[at:]
        end = packed.index(b"\r\n", at)
        count, at = int(packed[at + 1 : end]), end + 2
        for number in range(count):
            end = packed.index(b"\r\n", at)
            length = int(packed[at + 1 : end])
            if number == 0:
                names.append(packed[end + 2 : end + 2 + length].decode().upper())
            at = end + 2 + length + 2
    return names


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Trip]]:
    """Record each write to any Redis connection: one round trip, as its list of commands."""
    recorded: list[Trip] = []
    send = AbstractConnection.send_packed_command

    def recording(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, bytes | str) else command
        packed = b"".join(chunk.encode() if isinstance(chunk, str) else bytes(chunk) for chunk in chunks)
        recorded.append(command_names(packed))
        send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", recording)
    yield recorded


@pytest.fixture
def warm(app: Flask, client: FlaskClient, trips: list[Trip]) -> list[Trip]:
    """Enqueue a job on each queue, then record afresh: connected, and RQ has asked INFO.

    RQ asks a server's version once per connection (once per queue on FakeRedis, which
    answers INFO with an error RQ does not keep).
    """
    for queue in app.config["QUEUES"]:
        enqueue(client, {"function": "noop", "queue": queue})
    trips.clear()
    return trips


def is_transaction(trip: Trip) -> bool:
    """Tell whether a round trip is one MULTI ... EXEC."""
    return trip[0] == "MULTI" and trip[-1] == "EXEC" and trip.count("EXEC") == 1


def test_the_first_enqueue_adds_rq_s_version_check_and_loads_the_script(
    client: FlaskClient, trips: list[Trip]
) -> None:
    enqueue(client, {"function": "noop"})
    enqueue(client, {"function": "noop"})

    after_connecting = [trip for trip in trips if trip[0] not in ("HELLO", "CLIENT")]
    # Redis does not know the script yet: it says so, and redis-py loads it and asks again.
    assert after_connecting == [["INFO"], ["EVALSHA"], ["SCRIPT"], ["EVALSHA"], ["EVALSHA"]]


def test_a_plain_enqueue_is_one_round_trip(
    client: FlaskClient, warm: list[Trip], redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, {"function": "noop"})

    assert warm == [["EVALSHA"]]
    # The job, its queue, and the sweeper's watch, in the one command.
    assert redis.hget(f"rq:job:{job_id}", "status") == b"queued"
    assert redis.lrange("rq:queue:default", 0, -1)[-1] == job_id.encode()
    assert redis.zscore("rq-job-server:inflight", job_id)


@pytest.mark.parametrize(
    ("body", "script"),
    [
        ({"function": "count", "kwargs": {"duration": 0}, "queue": "high", "timeout": 60, "ttl": 600}, True),
        ({"function": "noop", "retry": {"max": 3, "intervals": [1, 5]}}, True),
        ({"hello": "world"}, True),
        ({"function": "noop", "delay": 60}, False),
        ({"function": "noop", "at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, False),
    ],
    ids=["options", "retry", "seed format", "delay", "at"],
)
def test_an_enqueue_with_options_or_a_schedule_is_one_round_trip(
    client: FlaskClient, warm: list[Trip], body: dict[str, Any], script: bool
) -> None:
    enqueue(client, body)

    (trip,) = warm
    if script:
        assert trip == ["EVALSHA"]
    else:
        assert is_transaction(trip), trip


def test_a_scheduled_job_is_saved_in_the_same_transaction_as_its_schedule(
    client: FlaskClient, warm: list[Trip], redis: fakeredis.FakeRedis
) -> None:
    job_id = enqueue(client, {"function": "noop", "delay": 60})

    (trip,) = warm
    assert trip.count("ZADD") == 2, trip  # rq:scheduled:default and the sweeper's set
    assert redis.zscore("rq:scheduled:default", job_id)


def test_a_job_id_adds_one_round_trip_to_claim_it(client: FlaskClient, warm: list[Trip]) -> None:
    enqueue(client, {"function": "noop", "job_id": "mine"})

    claim, create = warm
    assert is_transaction(claim) and "SET" in claim
    assert create == ["EVALSHA"]  # the job, and its claim pointed at it


def test_a_batch_of_plain_and_scheduled_jobs_is_one_round_trip(client: FlaskClient, warm: list[Trip]) -> None:
    batch = [
        {"function": "noop"},
        {"function": "noop", "delay": 30},
        {"function": "count", "queue": "low"},
    ] * 50

    response = client.post("/enqueue", json=batch)

    assert response.status_code == 202
    (trip,) = warm
    assert is_transaction(trip)
    assert trip.count("RPUSH") == 100
    assert trip.count("ZADD") == 150 + 50  # each job's watch, and the scheduled ones


def test_a_refused_batch_sends_nothing(client: FlaskClient, warm: list[Trip]) -> None:
    response = client.post("/enqueue", json=[{"function": "noop"}] * 10 + [{"function": "nope"}])

    assert response.status_code == 422
    assert warm == []


def test_a_batch_with_job_ids_claims_them_all_in_one_round_trip(
    client: FlaskClient, warm: list[Trip]
) -> None:
    batch = [{"function": "noop", "job_id": f"job-{number}"} for number in range(20)] + [{"function": "noop"}]

    response = client.post("/enqueue", json=batch)

    assert response.status_code == 202
    claim, create = warm
    assert is_transaction(claim) and claim.count("SET") == 20
    assert is_transaction(create) and create.count("RPUSH") == 21
