"""The hooks the gateway reports through; the null version does nothing, metrics implement them."""

from __future__ import annotations

from typing import Any

__all__ = ["NullObserver", "Observer"]


class Observer:
    """Receives what happens on the request path; every method is optional to override."""

    def cache_lookup(self, namespace: str, status: str) -> None:
        """status: HIT, MISS, STALE (served stale) or BYPASS."""

    def coalesced(self, namespace: str, scope: str) -> None:
        """A request got another's in-flight answer; scope: worker or cluster."""

    def upstream_call(self, provider: str, request: Any, outcome: Any, seconds: float) -> None:
        """One attempt finished: outcome is a ProviderResult or an UpstreamFailure."""

    def upstream_retry(self, provider: str, request: Any, failure: Any, delay: float) -> None:
        """An attempt failed and another follows after `delay` seconds."""

    def breaker_state(self, name: str, code: int) -> None:
        """The breaker changed state: 0 closed, 1 open, 2 half-open."""

    def cache_evicted(self, count: int) -> None:
        """Entries were evicted from L1 for space."""


class NullObserver(Observer):
    """Observes nothing (tests, benchmarks, metrics off)."""
