"""Response caches: L1 in the worker's memory, L2 in Redis when configured."""

from app.cache.memory import CachedValue, MemoryCache
from app.cache.redis import PausingRedis, RedisCache, RedisHealth, RedisPaused

__all__ = ["CachedValue", "MemoryCache", "PausingRedis", "RedisCache", "RedisHealth", "RedisPaused"]
