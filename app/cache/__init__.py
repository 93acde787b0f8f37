"""Response caches: L1 in the worker's memory, L2 in Redis when configured."""

from app.cache.memory import CachedValue, MemoryCache
from app.cache.redis import RedisCache, RedisHealth

__all__ = ["CachedValue", "MemoryCache", "RedisCache", "RedisHealth"]
