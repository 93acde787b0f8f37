"""Learned TTLs: how soon after it is stored an answer of a class (endpoint, mode) is first asked
again — and so how long an answer nobody has asked for again is worth keeping.

An answer lives on probation first: long enough to cover `coverage` of its class's first reuses
(the gap from a store to the first request that asks again), never more than the ceiling
(CACHE_DEFAULT_TTL, a mode's TTL), never less than the floor. Asked again within it, it has shown
it is reused and is kept for the whole ceiling from when it was made (freshness is about its age:
never longer). A class whose answers are rarely asked again at all gets the floor. So a one-off
video storyboard leaves memory in minutes, while the prompt a team repeats all day keeps its hour.

First reuses are seen whether or not the answer was still cached: a bounded record of when each
key was last stored (`ghosts`) tells the gap of a request that missed because its answer had
left. Without it the learner would only see gaps shorter than the probation it chose, and a
probation could only ever shrink. Counts decay (halved every `half_life` seconds), so a class
whose habits change is learned again. Pure and clock-free: the service feeds it wall-clock times,
the replayer (loadtest/replay.py) a simulated clock.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["EDGES", "ClassStats", "ReuseLearner"]

# Upper edges of the gap buckets, seconds: 30 s .. 1 day, about x2 apart; past the last: "later".
EDGES = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
MIN_STORES = 20  # below this many stores a class keeps the ceiling: no evidence yet
RARE = 0.05  # reuses per store below which a class gets the floor


@dataclass
class ClassStats:
    """A class's decayed counts: stores, and first reuses by gap bucket."""

    stores: float = 0.0
    reuses: list[float] = field(default_factory=lambda: [0.0] * (len(EDGES) + 1))

    def reuse_rate(self) -> float:
        return sum(self.reuses) / self.stores if self.stores else 0.0

    def covering(self, coverage: float) -> float:
        """The smallest bucket edge at or under which `coverage` of the reuses fall (inf: later)."""
        total = sum(self.reuses)
        running = 0.0
        for edge, count in zip(EDGES, self.reuses, strict=False):
            running += count
            if running >= coverage * total:
                return float(edge)
        return math.inf


class ReuseLearner:
    """Per-class reuse statistics and the TTL they call for."""

    def __init__(
        self,
        floor: float = 60.0,
        coverage: float = 0.95,
        ghosts: int = 100_000,
        half_life: float = 6 * 3600.0,
    ) -> None:
        self.floor, self.coverage, self.half_life = floor, coverage, half_life
        # key -> (class, stored at) of stores not asked again yet (a key leaves when first asked)
        self._ghosts: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._ghost_limit = max(1, ghosts)
        self.classes: dict[str, ClassStats] = {}
        self._decayed_at: float | None = None

    def _stats(self, cls: str) -> ClassStats:
        found = self.classes.get(cls)
        if found is None:
            found = self.classes[cls] = ClassStats()
        return found

    def _decay(self, now: float) -> None:
        if self._decayed_at is None:
            self._decayed_at = now
            return
        elapsed = now - self._decayed_at
        if elapsed < self.half_life / 8:  # decay in steps: cheap, and smooth enough
            return
        factor = 0.5 ** (elapsed / self.half_life)
        for stats in self.classes.values():
            stats.stores *= factor
            stats.reuses = [count * factor for count in stats.reuses]
        self._decayed_at = now

    def stored(self, key: str, cls: str, now: float) -> None:
        """An answer for `key` was stored at `now`."""
        self._decay(now)
        self._stats(cls).stores += 1
        self._ghosts[key] = (cls, now)
        self._ghosts.move_to_end(key)
        while len(self._ghosts) > self._ghost_limit:
            self._ghosts.popitem(last=False)

    def asked(self, key: str, now: float) -> None:
        """A request for `key` at `now` (hit or miss): the first reuse of its last store, if it is."""
        found = self._ghosts.pop(key, None)
        if found is None:
            return
        cls, stored_at = found
        stats = self._stats(cls)
        stats.reuses[bisect.bisect_left(EDGES, max(0.0, now - stored_at))] += 1

    def probation(self, cls: str, ceiling: float) -> float:
        """How long a new answer of `cls` lives unless asked again: within [floor, ceiling]."""
        stats = self.classes.get(cls)
        if stats is None or stats.stores < MIN_STORES:
            return ceiling
        if stats.reuse_rate() < RARE:
            return min(self.floor, ceiling)
        return max(min(self.floor, ceiling), min(ceiling, stats.covering(self.coverage)))
