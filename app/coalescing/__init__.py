"""Coalescing of identical in-flight requests: per worker (greenlets) and across processes (Redis)."""

from app.coalescing.inflight import InFlight
from app.coalescing.redis import RedisCoalescer
from app.coalescing.redis_streams import SharedStreams

__all__ = ["InFlight", "RedisCoalescer", "SharedStreams"]
