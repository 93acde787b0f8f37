"""Job records in Redis, for a fleet (app.jobs.records says what a record is and how it moves):
each change of state one Lua script."""

from __future__ import annotations

import time

import redis

from app.jobs.records import PRIORITIES, Job, QueueFull

__all__ = ["RedisJobStore"]

# KEYS: record, queued set of its priority, running set; ARGV: id, created_at, max, fields...
_CREATE = """
if redis.call('exists', KEYS[1]) == 1 then return -1 end
local status = ARGV[4]
if status == 'queued' or status == 'pending' then
  local total = 0
  for i = 4, #KEYS do total = total + redis.call('zcard', KEYS[i]) end
  if total >= tonumber(ARGV[3]) then return 0 end
  if status == 'queued' then redis.call('zadd', KEYS[2], ARGV[2], ARGV[1]) end
end
redis.call('hset', KEYS[1], unpack(ARGV, 6))
if status ~= 'queued' then redis.call('expire', KEYS[1], ARGV[5]) end
return 1
"""
# KEYS: record, queued set of its priority; ARGV: id
_CONFIRM = """
if redis.call('hget', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('hset', KEYS[1], 'status', 'queued')
redis.call('persist', KEYS[1])
redis.call('zadd', KEYS[2], redis.call('hget', KEYS[1], 'created_at'), ARGV[1])
return 1
"""
# KEYS: record; ARGV: id
_REFUSE = """
if redis.call('hget', KEYS[1], 'status') == 'pending' then redis.call('del', KEYS[1]) end
return 1
"""
# KEYS: record, queued set of its priority, running set; ARGV: id, now, lease_until
_CLAIM = """
local current = redis.call('hget', KEYS[1], 'status')
if current ~= 'queued' and current ~= 'pending' then return nil end
redis.call('persist', KEYS[1])
local attempts = tonumber(redis.call('hget', KEYS[1], 'attempts') or '0') + 1
redis.call('hset', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'attempts', attempts, 'lease_until', ARGV[3])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zadd', KEYS[3], ARGV[3], ARGV[1])
return redis.call('hgetall', KEYS[1])
"""
# KEYS: record, running set; ARGV: id, status, finished_at, result, error, ttl
_FINISH = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('hset', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], 'result', ARGV[4], 'error', ARGV[5])
redis.call('expire', KEYS[1], ARGV[6])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"""
# KEYS: record, queued set of its priority, running set; ARGV: id, now, ttl
_CANCEL = """
local status = redis.call('hget', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' and status ~= 'pending' then return 0 end
redis.call('hset', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[3], ARGV[1])
return 1
"""
# KEYS: record, queued set of its priority, running set; ARGV: id, now
_REQUEUE = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then redis.call('zrem', KEYS[3], ARGV[1]) return 0 end
if tonumber(redis.call('hget', KEYS[1], 'lease_until')) >= tonumber(ARGV[2]) then return 0 end
redis.call('hset', KEYS[1], 'status', 'queued', 'lease_until', '0')
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('zadd', KEYS[2], redis.call('hget', KEYS[1], 'created_at'), ARGV[1])
return 1
"""


class RedisJobStore:
    """Records in Redis: a hash per job, a sorted set of queued ids per priority (by creation
    time: counts and the oldest's age) and one of running ids (by lease end: the stale ones).
    Every key shares one hash tag, so the scripts run in one slot of a Redis Cluster."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._base = f"{prefix}jobs:{{jobs}}"
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._confirm = client.register_script(_CONFIRM)
        self._refuse = client.register_script(_REFUSE)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._requeue = client.register_script(_REQUEUE)

    def _record(self, job_id: str) -> str:
        return f"{self._base}:job:{job_id}"

    def _queued(self, priority: str) -> str:
        return f"{self._base}:queued:{priority}"

    @property
    def _running(self) -> str:
        return f"{self._base}:running"

    def _keys(self, job_id: str, priority: str) -> list[str]:
        return [self._record(job_id), self._queued(priority), self._running]

    def create(self, job: Job, max_queued: int, ttl: float) -> None:
        row = job.to_row()
        flat = [item for pair in row.items() for item in pair]
        keys = [*self._keys(job.id, job.priority), *(self._queued(p) for p in PRIORITIES)]
        done = self._create(keys, [job.id, job.created_at, max_queued, job.status, int(ttl), *flat])
        if done == 0:
            raise QueueFull()
        if done == -1:
            raise ValueError(f"job {job.id} exists")

    def get(self, job_id: str) -> Job | None:
        row: dict[bytes, bytes] = self._client.hgetall(self._record(job_id))  # type: ignore[assignment]
        return Job.from_row({k.decode(): v for k, v in row.items()}) if row else None

    def confirm(self, job_id: str) -> None:
        priority = self._priority(job_id)
        if priority is not None:
            self._confirm(self._keys(job_id, priority)[:2], [job_id])

    def refuse(self, job_id: str) -> None:
        self._refuse([self._record(job_id)], [job_id])

    def _priority(self, job_id: str) -> str | None:
        found: bytes | None = self._client.hget(self._record(job_id), "priority")  # type: ignore[assignment]
        return found.decode() if found is not None else None

    def claim(self, job_id: str, lease_until: float) -> Job | None:
        priority = self._priority(job_id)
        if priority is None:
            return None
        row = self._claim(self._keys(job_id, priority), [job_id, time.time(), lease_until])
        if not row:
            return None
        pairs = iter(row)
        return Job.from_row({k.decode(): v for k, v in zip(pairs, pairs, strict=True)})

    def renew(self, job_ids: list[str], lease_until: float) -> set[str]:
        if not job_ids:
            return set()
        pipe = self._client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._record(job_id), "status")
        statuses = pipe.execute()
        gone = {job_id for job_id, status in zip(job_ids, statuses, strict=True) if status != b"running"}
        alive = [job_id for job_id in job_ids if job_id not in gone]
        if alive:
            pipe = self._client.pipeline(transaction=False)
            for job_id in alive:
                pipe.hset(self._record(job_id), "lease_until", lease_until)
            pipe.zadd(self._running, dict.fromkeys(alive, lease_until), xx=True)
            pipe.execute()
        return gone

    def finish(self, job: Job, ttl: float) -> bool:
        row = job.to_row()
        keys = [self._record(job.id), self._running]
        now = job.finished_at or time.time()
        return bool(self._finish(keys, [job.id, job.status, now, row["result"], row["error"], int(ttl)]))

    def cancel(self, job_id: str, ttl: float) -> Job | None:
        priority = self._priority(job_id)
        if priority is None:
            return None
        self._cancel(self._keys(job_id, priority), [job_id, time.time(), int(ttl)])
        return self.get(job_id)

    def stale(self, now: float, limit: int) -> list[str]:
        found: list[bytes] = self._client.zrangebyscore(self._running, "-inf", f"({now}", start=0, num=limit)  # type: ignore[assignment]
        return [member.decode() for member in found]

    def requeue(self, job_id: str, now: float) -> bool:
        priority = self._priority(job_id)
        if priority is None:
            self._client.zrem(self._running, job_id)
            return False
        return bool(self._requeue(self._keys(job_id, priority), [job_id, now]))

    def counts(self) -> tuple[dict[str, int], int, float | None]:
        pipe = self._client.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.zcard(self._queued(priority))
            pipe.zrange(self._queued(priority), 0, 0, withscores=True)
        pipe.zcard(self._running)
        replies = pipe.execute()
        queued, oldest = {}, None
        for index, priority in enumerate(PRIORITIES):
            queued[priority] = int(replies[2 * index])
            first = replies[2 * index + 1]
            if first:
                oldest = first[0][1] if oldest is None else min(oldest, first[0][1])
        return queued, int(replies[-1]), oldest

    def queued(self, limit: int) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for priority in PRIORITIES:
            members: list[bytes] = self._client.zrange(self._queued(priority), 0, limit - len(found) - 1)  # type: ignore[assignment]
            found += [(member.decode(), priority) for member in members]
            if len(found) >= limit:
                break
        return found

    def purge(self, now: float) -> int:
        return 0  # finished records expire by themselves (EXPIRE)
