"""Coalescing of identical in-flight requests: per worker (greenlets) and across processes (Redis)."""

from app.coalescing.inflight import InFlight
from app.coalescing.redis import RedisCoalescer

__all__ = ["InFlight", "RedisCoalescer"]
