"""Replay a request trace (loadtest/traces.py) against cache policies offline, on a simulated
clock — a day of traffic in seconds — and print, side by side: hit ratio, byte-hit ratio, mean
bytes and entries held, model calls and their cost.

    make replay TRACE=team-day            # a generated shape (loadtest.traces.SHAPES) or a file
    python -m loadtest.replay --trace FILE --max-bytes 524288000 --max-entries 10000 --ttl 3600

The cache simulated is L1 as the service builds it (app/cache/memory.py): bounded in bytes
(each entry's answer plus ENTRY_OVERHEAD) and in entries, every answer expiring at its TTL.
Policies, each with the same TTL ceiling:
- `lru`:     every answer lives the TTL; least recently used leaves first (L1 until 2026-12-07,
             cachetools' TLRUCache);
- `s3fifo`:  the service's L1 itself (app.cache.memory.MemoryCache on the simulated clock):
             every answer lives the TTL; S3-FIFO chooses what leaves;
- `learned`: loadtest.reuse.ReuseLearner: a new answer lives its class's probation (endpoint,
             mode), the whole TTL once asked again; least recently used leaves first.
"""

from __future__ import annotations

import argparse
import heapq
import math
import sys
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.cache.memory import ENTRY_OVERHEAD, CachedValue, MemoryCache
from loadtest.reuse import ReuseLearner
from loadtest.traces import SHAPES, Request, generate, read

__all__ = ["POLICIES", "Outcome", "replay"]

SYSTEM_PROMPT_BYTES = 1_500  # what the service sends before the caller's prompt
PRICE_IN, PRICE_OUT = 3.0, 15.0  # USD per million tokens (the default model's list price)


def call_cost(request: Request) -> float:
    """A model call's cost, from bytes (about 4 per token)."""
    return ((request.size + SYSTEM_PROMPT_BYTES) / 4 * PRICE_IN + request.answer / 4 * PRICE_OUT) / 1e6


class _Lru:
    """Eviction order: least recently used first."""

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def inserted(self, key: str) -> None:
        self._order[key] = None

    def hit(self, key: str) -> None:
        self._order.move_to_end(key)

    def removed(self, key: str) -> None:
        self._order.pop(key, None)

    def victim(self) -> str:
        return next(iter(self._order))


@dataclass
class Outcome:
    policy: str
    requests: int = 0
    hits: int = 0
    bytes_asked: int = 0
    bytes_hit: int = 0
    calls: int = 0
    cost: float = 0.0
    byte_seconds: float = 0.0
    entry_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def byte_hit_ratio(self) -> float:
        return self.bytes_hit / self.bytes_asked if self.bytes_asked else 0.0

    @property
    def mean_bytes(self) -> float:
        return self.byte_seconds / self.seconds if self.seconds else 0.0

    @property
    def mean_entries(self) -> float:
        return self.entry_seconds / self.seconds if self.seconds else 0.0


def replay(
    trace: Iterable[Request], policy: str, max_bytes: int, max_entries: int, ttl: float, floor: float = 60.0
) -> Outcome:
    """Run `trace` through one policy's cache; what it cost and held."""
    if policy == "s3fifo":
        return _replay_service_l1(trace, max_bytes, max_entries, ttl)
    order = _Lru()
    learner = ReuseLearner(floor=floor) if policy == "learned" else None
    held: dict[str, tuple[int, float]] = {}  # key -> (bytes, expires)
    on_probation: dict[str, float] = {}  # key -> stored at, until first asked again (learned)
    expiries: list[tuple[float, str]] = []
    out = Outcome(policy)
    now = start = None
    used = 0

    def remove(key: str) -> None:
        nonlocal used
        size, _ = held.pop(key)
        on_probation.pop(key, None)
        used -= size
        order.removed(key)

    for request in trace:
        if start is None:
            start = now = request.t
        assert now is not None
        elapsed = request.t - now
        out.byte_seconds += used * elapsed
        out.entry_seconds += len(held) * elapsed
        now = request.t
        while expiries and expiries[0][0] <= now:
            expires, key = heapq.heappop(expiries)
            if key in held and held[key][1] == expires:
                remove(key)
        if learner is not None:
            learner.asked(request.key, now)
        if _counted(out, request, request.key in held):
            order.hit(request.key)
            stored_at = on_probation.pop(request.key, None)
            if stored_at is not None:  # asked again: kept the whole ceiling from when it was made
                held[request.key] = (held[request.key][0], stored_at + ttl)
                heapq.heappush(expiries, (stored_at + ttl, request.key))
            continue
        life = learner.probation(request.cls, ttl) if learner is not None else ttl
        if learner is not None:
            learner.stored(request.key, request.cls, now)
        size = request.answer + ENTRY_OVERHEAD
        if life <= 0 or size > max_bytes:
            continue
        while held and (used + size > max_bytes or len(held) >= max_entries):
            remove(order.victim())
        held[request.key] = (size, now + life)
        if life < ttl:
            on_probation[request.key] = now
        used += size
        order.inserted(request.key)
        heapq.heappush(expiries, (now + life, request.key))
    out.seconds = (now - start) if now is not None and start is not None else 0.0
    return out


def _counted(out: Outcome, request: Request, hit: bool) -> bool:
    out.requests += 1
    out.bytes_asked += request.answer
    if hit:
        out.hits += 1
        out.bytes_hit += request.answer
    else:
        out.calls += 1
        out.cost += call_cost(request)
    return hit


def _replay_service_l1(trace: Iterable[Request], max_bytes: int, max_entries: int, ttl: float) -> Outcome:
    """The service's own L1 class, on the trace's clock."""
    clock = [0.0]
    cache = MemoryCache(max_bytes, max_entries, 0.0, clock=lambda: clock[0])
    out = Outcome("s3fifo")
    start: float | None = None
    for request in trace:
        if start is None:
            start = clock[0] = request.t
        elapsed = request.t - clock[0]
        out.byte_seconds += cache.bytes * elapsed
        out.entry_seconds += len(cache) * elapsed
        clock[0] = request.t
        if not _counted(out, request, cache.get(request.key) is not None):
            cache.set(request.key, CachedValue(bytes(request.answer), request.t, request.t + ttl))
    out.seconds = clock[0] - start if start is not None else 0.0
    return out


POLICIES = ("lru", "s3fifo", "learned")
WARMINGS = ("recent", "predicted")


def after_restart(
    trace: list[Request],
    at: float,
    how: str,
    warm: int = 2000,
    first: int = 1000,
    ttl: float = 3600.0,
    max_bytes: int = 524_288_000,
    max_entries: int = 10_000,
    tau: float = 1800.0,
) -> int:
    """L1 hits in the `first` requests after a worker starts at `at`, its L1 warmed with `warm`
    answers of L2 (every answer stored within its TTL) chosen `how`: "recent" — most recently
    stored first (CACHE_WARM_ENTRIES today) — or "predicted" — most asked, each ask weighing
    e^((ask - at) / tau): the answers asked most lately."""
    stored: dict[str, tuple[float, int]] = {}
    score: dict[str, float] = {}
    for request in trace:
        if request.t >= at:
            break
        found = stored.get(request.key)
        if found is None or found[0] + ttl <= request.t:
            stored[request.key] = (request.t, request.answer)  # a miss: made and stored
        score[request.key] = score.get(request.key, 0.0) + math.exp((request.t - at) / tau)
    alive = [key for key, (made, _) in stored.items() if made + ttl > at]
    rank = (lambda key: stored[key][0]) if how == "recent" else (lambda key: score[key])
    chosen = sorted(alive, key=rank, reverse=True)[:warm]
    clock = [at]
    cache = MemoryCache(max_bytes, max_entries, 0.0, clock=lambda: clock[0])
    for key in reversed(chosen):  # the most likely last: the newest in L1
        made, size = stored[key]
        cache.set(key, CachedValue(bytes(size), made, made + ttl))
    hits = 0
    for request in (r for r in trace if r.t >= at):
        if first <= 0:
            break
        first -= 1
        clock[0] = request.t
        if cache.get(request.key) is not None:
            hits += 1
        else:
            cache.set(request.key, CachedValue(bytes(request.answer), request.t, request.t + ttl))
    return hits


def _trace(name: str) -> list[Request]:
    if name in SHAPES:
        return list(generate(SHAPES[name]))
    return list(read(Path(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", action="append", help=f"a trace file or a shape: {', '.join(SHAPES)} (all)")
    parser.add_argument("--max-bytes", type=int, default=524_288_000, help="L1 bytes (CACHE_MAX_BYTES)")
    parser.add_argument("--max-entries", type=int, default=10_000, help="L1 entries (CACHE_MAX_ENTRIES)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="the ceiling TTL (CACHE_DEFAULT_TTL)")
    parser.add_argument("--floor", type=float, default=60.0, help="the learned TTL's floor")
    args = parser.parse_args(argv)
    names = args.trace or list(SHAPES)
    print(f"L1: {args.max_bytes / 2**20:.0f} MiB, {args.max_entries} entries; TTL ceiling {args.ttl:.0f} s")
    print(
        f"{'trace':<14} {'policy':<8} {'hits':>7} {'byte-hits':>9} {'MiB held':>9} {'entries':>8} {'calls':>8} "
        f"{'cost $':>8}"
    )
    for name in names:
        trace = _trace(name)
        base: Outcome | None = None
        for policy in POLICIES:
            found = replay(trace, policy, args.max_bytes, args.max_entries, args.ttl, args.floor)
            base = base or found
            print(
                f"{Path(name).name:<14} {policy:<8} {found.hit_ratio:>7.3f} {found.byte_hit_ratio:>9.3f} "
                f"{found.mean_bytes / 2**20:>9.2f} {found.mean_entries:>8.0f} {found.calls:>8} {found.cost:>8.2f}"
                + (
                    f"   bytes {found.mean_bytes / base.mean_bytes:.2f}x, hits {found.hit_ratio / base.hit_ratio:.3f}x"
                    if policy != POLICIES[0] and base.mean_bytes and base.hit_ratio
                    else ""
                )
            )
    print("L1 hits in the first 1,000 requests after a restart, warmed with 2,000 answers from L2:")
    for name in names:
        trace = _trace(name)
        for at in (9 * 3600.0, 12 * 3600.0):
            if trace and trace[-1].t > at:
                hits = {how: after_restart(trace, at, how, ttl=args.ttl) for how in WARMINGS}
                print(
                    f"  {Path(name).name:<14} at {at / 3600:>4.1f} h: most recently stored {hits['recent']:>4}, "
                    f"predicted {hits['predicted']:>4} ({hits['predicted'] / max(1, hits['recent']):.2f}x)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
