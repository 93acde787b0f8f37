"""Job records in Redis, for a fleet (app.jobs.records says what a record is and how it moves):
each change of state one Lua script."""

from __future__ import annotations

import time

import redis

from app.jobs.records import PRIORITIES, Job, QueueFull

__all__ = ["RedisJobStore"]

# KEYS: record, queued set of its priority, wake list, every queued set; ARGV: id, created_at,
# max, status, ttl, fields...
_CREATE = """
if redis.call('exists', KEYS[1]) == 1 then return -1 end
local status = ARGV[4]
if status == 'queued' then
  local total = 0
  for i = 4, #KEYS do total = total + redis.call('zcard', KEYS[i]) end
  if total >= tonumber(ARGV[3]) then return 0 end
  redis.call('zadd', KEYS[2], ARGV[2], ARGV[1])
  redis.call('lpush', KEYS[3], '1')
  redis.call('ltrim', KEYS[3], 0, 63)
end
redis.call('hset', KEYS[1], unpack(ARGV, 6))
if status ~= 'queued' then redis.call('expire', KEYS[1], ARGV[5]) end
return 1
"""
# KEYS: queued high, normal, low, delayed high, normal, low, running; ARGV: now, lease_until, record
# prefix. A retry waits out its back-off in its priority's delayed set, then joins the queue.
_TAKE = """
for i = 1, 3 do
  local due = redis.call('zrangebyscore', KEYS[i + 3], '-inf', ARGV[1], 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('zrem', KEYS[i + 3], id)
    local record = ARGV[3] .. id
    if redis.call('hget', record, 'status') == 'queued' then
      redis.call('zadd', KEYS[i], redis.call('hget', record, 'created_at'), id)
    end
  end
end
for i = 1, 3 do
  while true do
    local head = redis.call('zrange', KEYS[i], 0, 0)
    if #head == 0 then break end
    local id = head[1]
    redis.call('zrem', KEYS[i], id)
    local record = ARGV[3] .. id
    if redis.call('hget', record, 'status') == 'queued' then
      local attempts = tonumber(redis.call('hget', record, 'attempts') or '0') + 1
      redis.call('hset', record, 'status', 'running', 'started_at', ARGV[1], 'attempts', attempts)
      redis.call('hset', record, 'lease_until', ARGV[2])
      redis.call('persist', record)
      redis.call('zadd', KEYS[7], ARGV[2], id)
      return redis.call('hgetall', record)
    end
  end
end
return nil
"""
# KEYS: record, running set; ARGV: id, status, finished_at, result, error, ttl
_FINISH = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('hset', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3], 'result', ARGV[4], 'error', ARGV[5])
redis.call('expire', KEYS[1], ARGV[6])
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"""
# KEYS: record, queued set of its priority, running set, delayed set; ARGV: id, now, ttl
_CANCEL = """
local status = redis.call('hget', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' and status ~= 'pending' then return 0 end
redis.call('hset', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[2])
redis.call('expire', KEYS[1], ARGV[3])
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[3], ARGV[1])
redis.call('zrem', KEYS[4], ARGV[1])
return 1
"""
# KEYS: record, queued set of its priority, running set, delayed set, wake list; ARGV: id, now, not_before
_REQUEUE = """
if redis.call('hget', KEYS[1], 'status') ~= 'running' then redis.call('zrem', KEYS[3], ARGV[1]) return 0 end
if tonumber(redis.call('hget', KEYS[1], 'lease_until')) >= tonumber(ARGV[2]) then return 0 end
redis.call('hset', KEYS[1], 'status', 'queued', 'lease_until', ARGV[3])
redis.call('zrem', KEYS[3], ARGV[1])
if tonumber(ARGV[3]) > 0 then
  redis.call('zadd', KEYS[4], ARGV[3], ARGV[1])
else
  redis.call('zadd', KEYS[2], redis.call('hget', KEYS[1], 'created_at'), ARGV[1])
end
redis.call('lpush', KEYS[5], '1')
redis.call('ltrim', KEYS[5], 0, 63)
return 1
"""


class RedisJobStore:
    """Records in Redis: a hash per job; the queue as a sorted set of queued ids per priority (by
    submission), and one per priority of retries waiting out their back-off (by when they may
    run); a sorted set of running ids (by lease end: the stale ones); a short list whose pushes
    wake idle runners (BLPOP on `reader`, the process's pool for blocking reads). Every key
    shares one hash tag (one slot of a Redis Cluster)."""

    def __init__(self, client: redis.Redis, prefix: str, reader: redis.Redis | None = None) -> None:
        self._client = client
        self._reader = reader
        self._base = f"{prefix}jobs:{{jobs}}"
        self._create = client.register_script(_CREATE)
        self._take = client.register_script(_TAKE)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._requeue = client.register_script(_REQUEUE)

    def _record(self, job_id: str) -> str:
        return f"{self._base}:job:{job_id}"

    def _queued(self, priority: str) -> str:
        return f"{self._base}:queued:{priority}"

    def _delayed(self, priority: str) -> str:
        return f"{self._base}:delayed:{priority}"

    @property
    def _running(self) -> str:
        return f"{self._base}:running"

    @property
    def _wake(self) -> str:
        return f"{self._base}:wake"

    def create(self, job: Job, max_queued: int, ttl: float) -> None:
        row = job.to_row()
        flat = [item for pair in row.items() for item in pair]
        counted = [key for p in PRIORITIES for key in (self._queued(p), self._delayed(p))]
        keys = [self._record(job.id), self._queued(job.priority), self._wake, *counted]
        done = self._create(keys, [job.id, job.created_at, max_queued, job.status, int(ttl), *flat])
        if done == 0:
            raise QueueFull()
        if done == -1:
            raise ValueError(f"job {job.id} exists")

    def get(self, job_id: str) -> Job | None:
        row: dict[bytes, bytes] = self._client.hgetall(self._record(job_id))  # type: ignore[assignment]
        return Job.from_row({k.decode(): v for k, v in row.items()}) if row else None

    def take(self, now: float, lease_until: float) -> Job | None:
        keys = [*(self._queued(p) for p in PRIORITIES), *(self._delayed(p) for p in PRIORITIES), self._running]
        row = self._take(keys, [now, lease_until, self._record("")])
        if not row:
            return None
        pairs = iter(row)
        return Job.from_row({k.decode(): v for k, v in zip(pairs, pairs, strict=True)})

    def wait(self, timeout: float) -> bool:
        if self._reader is None:
            return False
        self._reader.blpop([self._wake], timeout=timeout)
        return True

    def _priority(self, job_id: str) -> str | None:
        found: bytes | None = self._client.hget(self._record(job_id), "priority")  # type: ignore[assignment]
        return found.decode() if found is not None else None

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
        keys = [self._record(job_id), self._queued(priority), self._running, self._delayed(priority)]
        self._cancel(keys, [job_id, time.time(), int(ttl)])
        return self.get(job_id)

    def stale(self, now: float, limit: int) -> list[str]:
        found: list[bytes] = self._client.zrangebyscore(self._running, "-inf", f"({now}", start=0, num=limit)  # type: ignore[assignment]
        return [member.decode() for member in found]

    def requeue(self, job_id: str, now: float, not_before: float = 0.0) -> bool:
        priority = self._priority(job_id)
        if priority is None:
            self._client.zrem(self._running, job_id)
            return False
        keys = [self._record(job_id), self._queued(priority), self._running, self._delayed(priority), self._wake]
        return bool(self._requeue(keys, [job_id, now, not_before]))

    def counts(self) -> tuple[dict[str, int], int, float | None]:
        pipe = self._client.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.zcard(self._queued(priority))
            pipe.zcard(self._delayed(priority))
            pipe.zrange(self._queued(priority), 0, 0, withscores=True)
        pipe.zcard(self._running)
        replies = pipe.execute()
        queued, oldest = {}, None
        for index, priority in enumerate(PRIORITIES):
            queued[priority] = int(replies[3 * index]) + int(replies[3 * index + 1])
            first = replies[3 * index + 2]
            if first:
                oldest = first[0][1] if oldest is None else min(oldest, first[0][1])
        return queued, int(replies[-1]), oldest

    def purge(self, now: float) -> int:
        return 0  # finished records expire by themselves (EXPIRE)
