"""Coalescing of identical in-flight requests across processes: one lease and one Redis Stream per
key, for JSON and stream callers alike. (In one worker: app.gateway.streams.InFlight.)"""

from app.coalescing.redis_streams import SharedStreams

__all__ = ["SharedStreams"]
