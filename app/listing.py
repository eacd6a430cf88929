"""Listing jobs: GET /jobs, grouped by status, newest first within a group, one page at a time.

Each status lives in a Redis index: a queue's list or one of RQ's registries (sorted sets).
A page is cut from those indexes by rank (LRANGE/ZREVRANGE) and counted with LLEN/ZCARD, so
only one page of jobs is ever fetched, however many jobs there are. What "newest" means
depends on the index's score (see INDEXES).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus, parse_job_id
from rq.queue import Queue
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import as_text, current_timestamp

from app.auth import OWNER_KEY, restricted_owner
from app.errors import APIError
from app.jobs.registry import registry
from app.queue import SERIALIZER, get_queue, get_redis
from app.status import describe_job

bp = Blueprint("listing", __name__)

PARAMETERS = ("status", "queue", "function", "page", "per_page")
NUMBER = re.compile(r"-?[0-9]{1,9}")
# Index entries read per round trip while scanning for function= (and a lone failed/stopped).
SCAN_CHUNK = 500
# (position of an index, first rank, rank after the last): rank 0 is the index's newest entry.
Range = tuple[int, int, int]


@dataclass(frozen=True)
class IndexKind:
    """Where RQ keeps jobs of some statuses, and whether its score is an expiry time."""

    statuses: frozenset[JobStatus]
    registry: type[BaseRegistry] | None  # None: the queue's own list
    expires: bool = False


# The groups of an unfiltered listing, in order. Newest first means, per index:
#   queued     the queue list from its tail: the job that runs last first (the newest, unless
#              one was put at the front)
#   started    latest heartbeat deadline first (score: last heartbeat + a minute or so)
#   deferred   latest deferral (≈ enqueue) first
#   scheduled  latest scheduled time first: the job due last comes first
#   finished   latest expiry (end + result_ttl) first: newest first when jobs share a result_ttl
#   failed     failed and stopped jobs share one registry: latest end + FAILURE_TTL first
#   canceled   latest cancellation first
# Scores are whole seconds: jobs of the same second come in reverse id order.
INDEXES = (
    IndexKind(frozenset({JobStatus.QUEUED}), None),
    IndexKind(frozenset({JobStatus.STARTED}), StartedJobRegistry),
    IndexKind(frozenset({JobStatus.DEFERRED}), DeferredJobRegistry),
    IndexKind(frozenset({JobStatus.SCHEDULED}), ScheduledJobRegistry),
    IndexKind(frozenset({JobStatus.FINISHED}), FinishedJobRegistry, expires=True),
    IndexKind(frozenset({JobStatus.FAILED, JobStatus.STOPPED}), FailedJobRegistry, expires=True),
    IndexKind(frozenset({JobStatus.CANCELED}), CanceledJobRegistry),
)
STATUSES = [status.value for kind in INDEXES for status in JobStatus if status in kind.statuses]


@dataclass(frozen=True)
class Index:
    """One Redis index of job ids to read newest first, and the statuses wanted from it."""

    key: str
    kind: IndexKind
    wanted: frozenset[JobStatus]

    @property
    def is_list(self) -> bool:
        """Tell whether the index is a queue's list (else a sorted set)."""
        return self.kind.registry is None

    @property
    def checks_status(self) -> bool:
        """Tell whether only some of the index's jobs are wanted: their status must be read."""
        return self.wanted != self.kind.statuses


@dataclass(frozen=True)
class Filters:
    """The query of GET /jobs, checked."""

    statuses: frozenset[JobStatus]
    queues: list[str]
    function: str | None
    page: int
    per_page: int


@bp.get("/jobs")
def list_jobs() -> Response:
    """List jobs, grouped by status then queue, newest first within each, one page at a time."""
    filters = read_filters(current_app.config)
    connection = get_redis()
    indexes = select_indexes([get_queue(name) for name in filters.queues], filters.statuses)
    counts = count_entries(connection, indexes)
    offset = (filters.page - 1) * filters.per_page
    scan: dict[str, Any] | None = None
    # A key that sees only its own jobs lists them like a function filter: by the jobs' meta.
    wanted_meta = {
        name: value
        for name, value in (("function", filters.function), (OWNER_KEY, restricted_owner()))
        if value is not None
    }
    if not wanted_meta and not any(index.checks_status for index in indexes):
        total = sum(counts)
        ids = read_ids(connection, indexes, page_ranges(counts, offset, filters.per_page))
    else:
        # No index knows a job's function (or failed from stopped): read the jobs' own
        # status and meta, newest first, up to a cap, and count matches among those read.
        limit = current_app.config["JOBS_SCAN_LIMIT"]
        matched, scanned = scan_ids(connection, indexes, counts, limit, wanted_meta)
        total = len(matched)
        ids = matched[offset : offset + filters.per_page]
        scan = {"scanned": scanned, "limit": limit, "complete": scanned >= sum(counts)}
    return jsonify(
        total=total,
        page=filters.page,
        per_page=filters.per_page,
        pages=math.ceil(total / filters.per_page),
        scan=scan,
        jobs=summaries(connection, ids),
    )


def read_filters(config: dict[str, Any]) -> Filters:
    """Return the checked query: 400 for malformed numbers, 422 for unknown or out-of-range values."""
    unknown = sorted(set(request.args) - set(PARAMETERS))
    if unknown:
        raise APIError(
            422,
            "unknown_parameters",
            f"Unknown query parameter(s): {', '.join(unknown)}.",
            allowed=list(PARAMETERS),
        )
    statuses = _listed("status", STATUSES, "statuses")
    queues = _listed("queue", list(config["QUEUES"]), "queues")
    function = request.args.get("function", "").strip() or None
    if function is not None and function not in registry.names():
        raise APIError(
            422,
            "unknown_function",
            f"No function named {function!r} is registered.",
            available=registry.names(),
        )
    return Filters(
        statuses=frozenset(JobStatus(status) for status in statuses or STATUSES),
        queues=queues or list(config["QUEUES"]),
        function=function,
        page=_number("page", 1, 1, None),
        per_page=_number("per_page", config["JOBS_PER_PAGE"], 1, config["MAX_JOBS_PER_PAGE"]),
    )


def _listed(name: str, valid: list[str], plural: str) -> list[str]:
    """Return the values of a repeatable, comma-separated parameter; 422 for unknown ones."""
    values = [part.strip() for raw in request.args.getlist(name) for part in raw.split(",") if part.strip()]
    unknown = [value for value in values if value not in valid]
    if unknown:
        raise APIError(
            422,
            f"invalid_{name}",
            f"Unknown {name}: {', '.join(unknown)}; use one or more of {', '.join(valid)}.",
            **{plural: valid},
        )
    return values


def _number(name: str, default: int, low: int, high: int | None) -> int:
    """Return an integer parameter: 400 when it is not one, 422 outside [low, high]."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if not NUMBER.fullmatch(raw):
        raise APIError(400, f"invalid_{name}", f"{name} must be a whole number, not {raw[:20]!r}.")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise APIError(422, f"invalid_{name}", f"{name} must be {bounds}, not {value}.")
    return value


def select_indexes(queues: Sequence[Queue], statuses: frozenset[JobStatus]) -> list[Index]:
    """Return the indexes that hold jobs of these statuses on these queues, in listing order."""
    indexes = []
    for kind in INDEXES:
        wanted = kind.statuses & statuses
        if not wanted:
            continue
        for queue in queues:
            key = queue.key if kind.registry is None else kind.registry(queue=queue).key
            indexes.append(Index(key, kind, wanted))
    return indexes


def count_entries(connection: Redis, indexes: Sequence[Index]) -> list[int]:
    """Return how many live entries each index holds (expired registry entries left out)."""
    # RQ's own cleanup drops entries scored at or before now: count only those after it.
    live = f"({current_timestamp()}"
    with connection.pipeline(transaction=False) as pipe:
        for index in indexes:
            if index.is_list:
                pipe.llen(index.key)
            elif index.kind.expires:
                pipe.zcount(index.key, live, "+inf")
            else:
                pipe.zcard(index.key)
        return [int(count) for count in pipe.execute()]


def page_ranges(counts: Sequence[int], offset: int, limit: int) -> list[Range]:
    """Return (index, start, stop) rank ranges holding items offset..offset+limit of all indexes in turn."""
    ranges = []
    for position, count in enumerate(counts):
        if limit <= 0:
            break
        if offset >= count:
            offset -= count
            continue
        stop = min(count, offset + limit)
        ranges.append((position, offset, stop))
        limit -= stop - offset
        offset = 0
    return ranges


def read_ids(
    connection: Redis, indexes: Sequence[Index], ranges: Sequence[tuple[int, int, int]]
) -> list[str]:
    """Return the job ids at these rank ranges (rank 0 is an index's newest), in order."""
    with connection.pipeline(transaction=False) as pipe:
        for position, start, stop in ranges:
            if indexes[position].is_list:
                # A queue is pushed at its tail: rank r counted from the tail is -(r + 1).
                pipe.lrange(indexes[position].key, -stop, -start - 1)
            else:
                # Expired entries score lowest: ranks below the live count are all live.
                pipe.zrevrange(indexes[position].key, start, stop - 1)
        replies = pipe.execute()
    ids: list[str] = []
    for (position, _, _), reply in zip(ranges, replies, strict=True):
        entries = [as_text(entry) for entry in reply]
        if indexes[position].is_list:
            entries.reverse()
        # The started registry holds "job_id:execution_id" entries.
        ids.extend(parse_job_id(entry) for entry in entries)
    return list(dict.fromkeys(ids))


def scan_ids(
    connection: Redis,
    indexes: Sequence[Index],
    counts: Sequence[int],
    limit: int,
    wanted_meta: dict[str, str],
) -> tuple[list[str], int]:
    """Return the ids of wanted jobs among the first `limit` entries, and how many entries were read."""
    matched: list[str] = []
    scanned = 0
    for position, count in enumerate(counts):
        start = 0
        while start < count and scanned < limit:
            stop = min(count, start + SCAN_CHUNK, start + limit - scanned)
            ids = read_ids(connection, indexes, [(position, start, stop)])
            matched.extend(_wanted(connection, indexes[position], ids, wanted_meta))
            scanned += stop - start
            start = stop
    return list(dict.fromkeys(matched)), scanned


def _wanted(connection: Redis, index: Index, ids: list[str], wanted_meta: dict[str, str]) -> list[str]:
    """Return the ids whose job still exists and has a wanted status and meta (function, owner)."""
    # Two small fields per job: the job's data (uploads included) stays in Redis.
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(Job.key_for(job_id), "status", "meta")
        replies = pipe.execute()
    wanted = {status.value for status in index.wanted}
    found = []
    for job_id, (status, meta) in zip(ids, replies, strict=True):
        if status is None or (index.checks_status and as_text(status) not in wanted):
            continue
        if not wanted_meta or wanted_meta.items() <= _meta_of(meta).items():
            found.append(job_id)
    return found


def _meta_of(meta: bytes | None) -> dict[str, Any]:
    """Return the meta /enqueue stored in a job (its registered name, its owner)."""
    try:
        value = SERIALIZER.loads(meta) if meta else None  # type: ignore[no-untyped-call]
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def summaries(connection: Redis, ids: list[str]) -> list[dict[str, Any]]:
    """Return the status body of each job that still exists, without tracebacks."""
    try:
        jobs = Job.fetch_many(ids, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        # A hash without its data (a late write after a delete) spoils the batch: one by one.
        jobs = [_fetch_or_none(connection, job_id) for job_id in ids]
    bodies = []
    for job in jobs:
        if job is None:
            continue
        body = describe_job(job)
        body.pop("traceback", None)
        bodies.append(body)
    return bodies


def _fetch_or_none(connection: Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        return None
