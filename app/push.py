"""Queue a new job in one Redis command: the records RQ writes, written by a Lua script.

RQ queues a job with four commands in a transaction (the queue's registration, the job's
status, the job's hash, the push), each answered apart, and redis-py packs each of the
hash's forty-odd arguments in Python: a quarter of what an enqueue cost the web server. The
script writes the same records, with the sweeper's and the idempotency claim's beside them,
atomically, and is answered once. The job's hash is built by RQ as before (`Job.to_dict`),
so workers and rq-dashboard read what RQ wrote.

Jobs that wait for parents or for a time still take RQ's own paths (`Queue.enqueue_job`,
`api.schedule_job`): RQ watches the parents while it registers a job with them.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

from redis import Redis
from redis.commands.core import Script
from rq import Queue
from rq.job import Job

from app import sweeper
from app.idempotency import Claim

SCRIPT = """
-- KEYS: the job's hash, the queue, RQ's set of queues, the sweeper's set of jobs in flight,
--       then the idempotency records to point at the job.
-- ARGV: job id, queue key, the job's ttl (-1: none), its in-flight score, the idempotency
--       record and its ttl; the sizes of the hash's fields and values, in order; then they
--       themselves, end to end.
local sub, strings, hash, count, at = string.sub, ARGV[8], {}, 0, 1
for size in string.gmatch(ARGV[7], "%d+") do
    local stop = at + size
    count = count + 1
    hash[count] = sub(strings, at, stop - 1)
    at = stop
end
redis.call("SADD", KEYS[3], ARGV[2])
redis.call("HSET", KEYS[1], unpack(hash))
local ttl = tonumber(ARGV[3])
if ttl > 0 then
    redis.call("EXPIRE", KEYS[1], ttl)
end
redis.call("RPUSH", KEYS[2], ARGV[1])
redis.call("ZADD", KEYS[4], ARGV[4], ARGV[1])
for index = 5, #KEYS do
    redis.call("SET", KEYS[index], ARGV[5], "EX", ARGV[6])
end
return 1
"""

# One Script per connection: it keeps the script's SHA and loads it again when Redis lost it
# (a restart, a failover to a replica).
_scripts: WeakKeyDictionary[Redis, Script] = WeakKeyDictionary()


def _script(connection: Redis) -> Script:
    script = _scripts.get(connection)
    if script is None:
        script = _scripts[connection] = connection.register_script(SCRIPT)
    return script


def packed_hash(job: Job) -> tuple[str, bytes]:
    """Return the job's hash as RQ saves it (`Job.save`), packed: the sizes, and the strings end to end.

    Two arguments rather than two a field: redis-py packs each argument of a command in Python,
    and for the forty-odd of a job's hash that was a tenth of what an enqueue cost.
    """
    items: list[bytes] = []
    for field, value in job.to_dict().items():
        if value is not None:
            items.append(field.encode())
            # Most values are plain strings: encoded here, without a call each.
            items.append(value.encode() if type(value) is str else _bytes(value))
    return " ".join(map(str, map(len, items))), b"".join(items)


def _bytes(value: object) -> bytes:
    """Return a value as redis-py would send it (its Encoder, with the default UTF-8)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # a JobStatus too: its value, not its name
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"A job's hash holds strings, bytes and numbers, not {type(value).__name__}")


def push_job(connection: Redis, queue: Queue, job: Job, claim: Claim | None, claim_ttl: int) -> None:
    """Queue a job that waits for nothing: saved, pushed, tracked, its claim completed, at once."""
    # RQ's own preparation: origin, enqueued_at, the queue's default timeout, status queued.
    queue._prepare_for_queue(job)
    claim_keys = list(claim.keys) if claim is not None else []
    record = claim.done_record() if claim is not None else ""
    sizes, strings = packed_hash(job)
    _script(connection)(
        keys=[job.key, queue.key, queue.redis_queues_keys, sweeper.INFLIGHT_KEY, *claim_keys],
        args=[
            job.id,
            queue.key,
            job.ttl if job.ttl is not None else -1,
            time.time(),
            record,
            claim_ttl,
            sizes,
            strings,
        ],
    )
