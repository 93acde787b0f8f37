"""Response caches: L1 in the worker's memory; L2 in Redis when configured, else on this
machine's disk (shared by its workers, kept across restarts)."""

from app.cache.disk import DiskCache
from app.cache.health import PausingRedis, RedisHealth, RedisPaused
from app.cache.memory import CachedValue, MemoryCache
from app.cache.redis import RedisCache

__all__ = ["CachedValue", "DiskCache", "MemoryCache", "PausingRedis", "RedisCache", "RedisHealth", "RedisPaused"]
