"""Coalescing of identical in-flight requests: per worker (greenlets) and across processes (one
lease and one Redis Stream per key, for JSON and stream callers alike)."""

from app.coalescing.inflight import InFlight
from app.coalescing.redis_streams import SharedStreams

__all__ = ["InFlight", "SharedStreams"]
