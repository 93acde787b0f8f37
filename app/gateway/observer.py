"""The hooks the gateway reports through; the null version does nothing, metrics implement them."""

from __future__ import annotations

from typing import Any

__all__ = ["NullObserver", "Observer"]


class Observer:
    """Receives what happens on the request path; every method is optional to override."""

    def known(self, provider: str, model: str, namespaces: tuple[str, ...], modes: tuple[str, ...]) -> None:
        """The label values this server can report, told once at start-up."""

    def cache_lookup(self, namespace: str, status: str, seconds: float = 0.0, tier: str = "l1") -> None:
        """status: HIT, MISS, STALE (served stale) or BYPASS; seconds spent looking; the tier that
        answered a hit: l1, disk or redis."""

    def coalesced(self, namespace: str, scope: str) -> None:
        """A request got another's in-flight answer; scope: worker or cluster."""

    def waiting(self, scope: str, delta: int) -> None:
        """Requests waiting on another's in-flight call changed by `delta`; scope: worker or cluster."""

    def upstream_call(self, provider: str, model: str, request: Any, outcome: Any, seconds: float) -> None:
        """One attempt at `model` finished: outcome is a ProviderResult or an UpstreamFailure."""

    def upstream_retry(self, provider: str, request: Any, failure: Any, delay: float) -> None:
        """An attempt failed and another follows after `delay` seconds."""

    def breaker_state(self, name: str, code: int) -> None:
        """The breaker changed state: 0 closed, 1 open, 2 half-open."""

    def cache_evicted(self, count: int) -> None:
        """Entries were evicted from L1 for space."""

    def cache_stored(self) -> None:
        """A new answer was stored in L1 (copies from L2 or another instance are not new)."""

    def cache_size(self, entries: int, size: int) -> None:
        """L1 now holds `entries` entries and `size` bytes."""

    def breaker_failures(self, name: str, failures: int) -> None:
        """The breaker now counts `failures` consecutive failures."""

    def in_flight(self, count: int) -> None:
        """This worker now has `count` distinct calls in flight."""

    def stream_started(self, provider: str, model: str) -> None:
        """An upstream stream began."""

    def stream_first_delta(self, provider: str, model: str, seconds: float, overhead: float) -> None:
        """A stream's first text arrived `seconds` after it began; `overhead` of that was ours."""

    def stream_finished(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        """A stream ended: completed, failed or cancelled (nobody followed it any more)."""

    def stream_follower(self, scope: str) -> None:
        """A stream caller joined another's stream; scope: worker or cluster."""

    def stream_bytes(self, count: int) -> None:
        """`count` bytes of events went to a stream's caller."""

    def stream_buffers(self, size: int) -> None:
        """The buffers of this worker's streams in flight now hold `size` bytes."""

    def redis_error(self) -> None:
        """A Redis operation failed; the request went on without Redis."""

    def disk_error(self) -> None:
        """An operation of the on-machine cache tier failed; the request went on without it."""

    def disk_size(self, entries: int, size: int) -> None:
        """The on-machine cache tier holds `entries` answers in `size` bytes on disk."""

    def key_budget(self, key: str, budget: str, ratio: float) -> None:
        """`key` has now used `ratio` of its `budget` (tokens_per_day, cost_per_month_usd, ...)."""

    def upstream_budget(self, held: int, paused: bool) -> None:
        """This process now holds `held` upstream slots; `paused`: a 429's Retry-After holds new calls."""


class NullObserver(Observer):
    """Observes nothing (tests, benchmarks, metrics off)."""
