"""Idempotent enqueues: a retried POST with the same Idempotency-Key or job_id gets the same job."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from flask import Request
from redis import Redis
from redis.client import Pipeline
from rq.job import Job

from app.errors import APIError
from app.queue import SERIALIZER

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
RECORD_PREFIX = "rq-job-server:idempotency:"
# Job meta: the fingerprint of the request that created the job, for a client job_id seen again
# after its record expired.
FINGERPRINT_KEY = "fingerprint"
# How long a claim waits for its job: far longer than an enqueue takes, short enough that a
# request that died between claiming and enqueuing does not hold its key for long.
PENDING_TTL = 30
PENDING, DONE = "pending", "done"


class InProgress(APIError):
    """409 while the first request with the same key is still enqueuing its job."""

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        """Tell the client when to try again."""
        return [("Retry-After", "1")]


@dataclass(frozen=True)
class Claim:
    """The right to create one job: its id, and the records that will point at it."""

    job_id: str
    fingerprint: str
    keys: tuple[str, ...]

    def complete(self, pipeline: Pipeline, ttl: int) -> None:
        """Point the records at the job, in the transaction that creates it."""
        record = self.done_record()
        for key in self.keys:
            pipeline.set(key, record, ex=ttl)

    def done_record(self) -> str:
        """Return what the records hold once the job exists."""
        return _record(self.job_id, self.fingerprint, DONE)

    def release(self, connection: Redis) -> None:
        """Drop the records of a job that was not created, so that a retry may create it."""
        if self.keys:
            connection.delete(*self.keys)


@dataclass(frozen=True)
class Replay:
    """An identical request was accepted before: answer with its job."""

    job_id: str


def read_key(request: Request) -> str | None:
    """Return the request's Idempotency-Key (None without one); 400 when it is malformed."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    # The header is a structured-field string ("..."); plain tokens are common and accepted.
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise APIError(
            400,
            "invalid_idempotency_key",
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, such as a UUID.",
        )
    return key


def fingerprint(submission: Mapping[str, Any]) -> str:
    """Return the SHA-256 of a normalized submission: equal requests, equal fingerprints."""
    canonical = json.dumps(submission, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(connection: Redis, key: str | None, job_id: str | None, fingerprint: str) -> Claim | Replay:
    """Claim the key and the job id for a new job, or return the job an identical request made.

    Raise 409 `idempotency_conflict` when they were used with another request, and 409
    `idempotency_in_progress` while that request is still enqueuing.
    """
    (outcome,) = claim_each(connection, [(key, job_id, fingerprint)])
    if isinstance(outcome, APIError):
        raise outcome
    return outcome


def claim_each(
    connection: Redis, wanted: Sequence[tuple[str | None, str | None, str]]
) -> list[Claim | Replay | APIError]:
    """Claim (key, job_id, fingerprint) for each of several new jobs, in one round trip.

    Each gets a Claim, the Replay of an identical earlier request, or the 409 that `claim`
    would raise for it alone (returned, not raised). The caller releases the Claims of jobs it
    does not create.
    """
    asks = [_Ask.of(key, job_id, fingerprint) for key, job_id, fingerprint in wanted]
    # One transaction: each claim (SET NX) and what holds the key when it was taken.
    with connection.pipeline() as pipe:
        for ask in asks:
            ask.send(pipe)
        replies = pipe.execute()
    outcomes: list[Claim | Replay | APIError] = []
    dropped: list[str] = []
    start = 0
    for ask in asks:
        end = start + ask.reply_count
        outcome, ours = ask.settle(replies[start:end])
        outcomes.append(outcome)
        dropped.extend(ours)
        start = end
    if dropped:
        connection.delete(*dropped)
    return outcomes


@dataclass(frozen=True)
class _Ask:
    """One job's claim: the records to take for it and the id it will have."""

    key: str | None
    job_id: str | None
    fingerprint: str
    new_id: str
    records: tuple[str, ...]

    @classmethod
    def of(cls, key: str | None, job_id: str | None, fingerprint: str) -> _Ask:
        """Return the ask for a job with this key and job id (either may be None)."""
        records = []
        if key is not None:
            records.append(f"{RECORD_PREFIX}key:{hashlib.sha256(key.encode()).hexdigest()}")
        if job_id is not None:
            # A client's job id is claimed as well: two requests with one id must not both create it.
            records.append(f"{RECORD_PREFIX}job:{job_id}")
        return cls(key, job_id, fingerprint, job_id or str(uuid4()), tuple(records))

    @property
    def reply_count(self) -> int:
        """Return how many replies `send`'s commands get."""
        return 2 * len(self.records) + (2 if self.job_id is not None else 0)

    def send(self, pipe: Pipeline) -> None:
        """Add the claim and the reads that tell who holds the records to the transaction."""
        pending = _record(self.new_id, self.fingerprint, PENDING)
        for record in self.records:
            pipe.set(record, pending, nx=True, ex=PENDING_TTL)
            pipe.get(record)
        if self.job_id is not None:
            pipe.exists(Job.key_for(self.job_id))
            pipe.hget(Job.key_for(self.job_id), "meta")

    def settle(self, replies: list[Any]) -> tuple[Claim | Replay | APIError, list[str]]:
        """Return the outcome, and the records this ask took but must give back."""
        count = 2 * len(self.records)
        claimed, held = replies[0:count:2], replies[1:count:2]
        taken = [json.loads(value) for ours, value in zip(claimed, held, strict=True) if not ours]
        existing: dict[str, Any] | None = taken[0] if taken else None
        if existing is None and self.job_id is not None and replies[-2]:
            # The job outlived its record: its meta holds the fingerprint of the request that made it.
            meta = SERIALIZER.loads(replies[-1]) if replies[-1] else {}  # type: ignore[no-untyped-call]
            existing = {"job_id": self.job_id, "fingerprint": meta.get(FINGERPRINT_KEY), "state": DONE}
        if existing is None:
            return Claim(self.new_id, self.fingerprint, self.records), []
        ours = [record for record, was_claimed in zip(self.records, claimed, strict=True) if was_claimed]
        try:
            return _replay(existing, self.fingerprint, self.key, self.job_id), ours
        except APIError as error:
            return error, ours


def _replay(existing: dict[str, Any], fingerprint: str, key: str | None, job_id: str | None) -> Replay:
    used = f"{HEADER} {key!r}" if key is not None else f"job_id {job_id!r}"
    if existing["fingerprint"] != fingerprint:
        raise APIError(
            409,
            "idempotency_conflict",
            f"{used} was already used for a different request; new work needs a new one.",
            job_id=existing["job_id"],
        )
    if existing["state"] == PENDING:
        raise InProgress(
            409,
            "idempotency_in_progress",
            f"A request with {used} is still being enqueued; try again in a moment.",
        )
    return Replay(existing["job_id"])


def _record(job_id: str, fingerprint: str, state: str) -> str:
    return json.dumps({"job_id": job_id, "fingerprint": fingerprint, "state": state})
