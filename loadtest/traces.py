"""Request traces: the format the replayer reads (loadtest/replay.py) and a generator of traces
with the structure real prompt traffic has.

A trace is JSON lines, one request each, in time order:

    {"t": 12.5, "endpoint": "optimize", "mode": "video", "key": "3f2a...", "size": 812, "answer": 9120}

- `t`: seconds from the trace's start;
- `endpoint`: one of the six operations (`optimize`, `generate-questions`, ...);
- `mode`: the optimize mode, "" for the other operations;
- `key`: a digest of the request body (equal keys: the same request, the same cached answer);
- `size`, `answer`: bytes of the request body and of the answer.

The generator's shapes (`SHAPES`, each a fixed seed: the same trace every time) have what real
traffic has: popularity skewed per endpoint and mode (Zipf), popularity that drifts (new prompts
enter the top ranks), bursts (one new prompt taking a share of traffic for minutes), a daily
cycle, many one-off prompts, long video answers. `python -m loadtest.traces SHAPE FILE` writes
one.

A real trace comes from the service's own access log: every answer of the six operations that the
cache made or served (POST or GET; not streams) has `request` (24 hex of its cache key's digest:
never the prompt), `mode`, `size` and `bytes` in its line, and
`python -m loadtest.traces from-log ACCESS_LOG FILE` turns the lines into a trace.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["SHAPES", "Request", "Shape", "from_access_log", "generate", "read", "write"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Request:
    t: float
    endpoint: str
    mode: str
    key: str
    size: int
    answer: int

    @property
    def cls(self) -> str:
        """The class a learned TTL is kept for: the endpoint, and the mode for optimize."""
        return f"{self.endpoint}:{self.mode}" if self.mode else self.endpoint


# (endpoint, mode, share of traffic, median answer bytes, catalog size)
CLASSES: tuple[tuple[str, str, float, int, int], ...] = (
    ("optimize", "reasoning", 0.12, 2_600, 1_500),
    ("optimize", "research", 0.10, 3_000, 1_500),
    ("optimize", "code", 0.12, 2_400, 1_500),
    ("optimize", "text", 0.08, 2_000, 1_500),
    ("optimize", "learning", 0.05, 2_400, 800),
    ("optimize", "socratic", 0.04, 2_200, 800),
    ("optimize", "optimize", 0.04, 2_200, 800),
    ("optimize", "video", 0.10, 9_000, 2_000),
    ("generate-questions", "", 0.15, 600, 1_500),
    ("get-enhancement-suggestions", "", 0.08, 900, 1_000),
    ("get-custom-suggestions", "", 0.04, 900, 800),
    ("detect-scene-change", "", 0.04, 300, 800),
    ("get-creative-suggestions", "", 0.04, 800, 800),
)


@dataclass(frozen=True)
class Shape:
    """How a generated trace looks."""

    seed: int
    rate: float = 3.0  # mean requests per second over the day
    hours: float = 24.0
    cycle: float = 0.6  # daily cycle: rate x (1 ± cycle), lowest at midnight
    zipf: float = 1.0  # popularity skew within a class
    one_off: float = 0.3  # share of requests for a prompt never asked before or again
    drift_every: float = 3600.0  # seconds between popularity shifts
    drift_new: int = 20  # new prompts entering the top 100 at each shift
    bursts: int = 6  # a new prompt taking `burst_share` of traffic for 10 minutes, this many times
    burst_share: float = 0.15
    one_off_by_mode: dict[str, float] = field(default_factory=dict)  # per-mode override of one_off
    share_by_mode: dict[str, float] = field(default_factory=dict)  # per-mode override of traffic share


SHAPES: dict[str, Shape] = {
    # A team's working day: a clear daily cycle, moderate skew, a third one-offs.
    "team-day": Shape(seed=1),
    # Popularity that moves fast (a fifth of the top 100 replaced every 30 min) and many bursts.
    "drifting": Shape(seed=2, zipf=0.9, one_off=0.4, drift_every=1800.0, drift_new=20, bursts=24),
    # Storyboards: video is 30 % of traffic, its answers long and mostly one-off.
    "video-heavy": Shape(seed=3, one_off_by_mode={"video": 0.75}, share_by_mode={"video": 0.30}),
    # Little reuse anywhere: most prompts are asked once.
    "one-offs": Shape(seed=4, one_off=0.7, zipf=0.8),
}


class _Catalog:
    """A class's prompts by popularity rank (Zipf weights), with new ones entering the top."""

    def __init__(self, size: int, skew: float, rng: random.Random, tag: str) -> None:
        self._rng, self._tag, self._next = rng, tag, size
        self.ids = list(range(size))
        weights = [1.0 / (rank + 1) ** skew for rank in range(size)]
        total = sum(weights)
        running = 0.0
        self._cumulative = []
        for weight in weights:
            running += weight / total
            self._cumulative.append(running)

    def pick(self) -> int:
        rank = min(bisect.bisect_left(self._cumulative, self._rng.random()), len(self.ids) - 1)
        return self.ids[rank]

    def drift(self, new: int) -> None:
        for _ in range(new):
            self.ids.insert(self._rng.randrange(100), self._next)
            self.ids.pop()
            self._next += 1


def _times(shape: Shape, rng: random.Random) -> Iterator[float]:
    """Arrival times: a Poisson process whose rate follows the daily cycle (thinning)."""
    peak = shape.rate * (1 + shape.cycle)
    t, end = 0.0, shape.hours * 3600
    while True:
        t += rng.expovariate(peak)
        if t >= end:
            return
        rate = shape.rate * (1 - shape.cycle * math.cos(2 * math.pi * t / DAY))
        if rng.random() * peak <= rate:
            yield t


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def generate(shape: Shape) -> Iterator[Request]:
    """The trace of `shape`, in time order (the same for the same shape)."""
    rng = random.Random(shape.seed)
    classes = [(e, m, shape.share_by_mode.get(m, share), answer, size) for e, m, share, answer, size in CLASSES]
    total = sum(share for _, _, share, _, _ in classes)
    cumulative, running = [], 0.0
    for _, _, share, _, _ in classes:
        running += share / total
        cumulative.append(running)
    catalogs = [_Catalog(size, shape.zipf, rng, f"{e}:{m}") for e, m, _, _, size in classes]
    end = shape.hours * 3600
    bursts = sorted((rng.uniform(0, end - 600), rng.randrange(len(classes))) for _ in range(shape.bursts))
    next_drift, unique = shape.drift_every, 0
    for t in _times(shape, rng):
        while t >= next_drift:
            for catalog in catalogs:
                catalog.drift(shape.drift_new)
            next_drift += shape.drift_every
        index = min(bisect.bisect_left(cumulative, rng.random()), len(classes) - 1)
        burst = next(((start, c) for start, c in bursts if start <= t < start + 600), None)
        if burst is not None and rng.random() < shape.burst_share:
            index, name = burst[1], f"burst:{burst[0]:.0f}"
        else:
            name = ""
        endpoint, mode, _, median, _ = classes[index]
        if not name:
            if rng.random() < shape.one_off_by_mode.get(mode, shape.one_off):
                unique += 1
                name = f"once:{unique}"
            else:
                name = f"prompt:{catalogs[index].pick()}"
        key = _digest(f"{endpoint}:{mode}:{name}")
        size = int(rng.lognormvariate(math.log(400), 0.8)) + 40
        answer = max(100, int(rng.lognormvariate(math.log(median), 0.4)))
        yield Request(round(t, 3), endpoint, mode, key, size, answer)


def write(requests: Iterable[Request], path: Path) -> int:
    count = 0
    with path.open("w") as out:
        for r in requests:
            row = {"t": r.t, "endpoint": r.endpoint, "mode": r.mode, "key": r.key, "size": r.size, "answer": r.answer}
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    return count


def read(path: Path) -> Iterator[Request]:
    """A trace file's requests; a line that is not a request is an error naming its line."""
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
                yield Request(
                    float(row["t"]),
                    str(row["endpoint"]),
                    str(row.get("mode") or ""),
                    str(row["key"]),
                    int(row["size"]),
                    int(row["answer"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a trace line ({exc})") from None


def from_access_log(lines: Iterable[str]) -> list[Request]:
    """The requests of the service's access lines that carry one (`request`: an answer the cache
    made or served), in time order from the first; other lines (gunicorn's, errors) are skipped."""
    found: list[tuple[float, str, str, str, int, int]] = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("logger") != "app.access" or not entry.get("request"):
            continue
        when = datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00")).timestamp()
        endpoint = str(entry["endpoint"]).rpartition(".")[2].replace("_", "-")  # optimize.optimize -> optimize
        mode = str(entry.get("mode") or "") if endpoint == "optimize" else ""
        found.append(
            (when, endpoint, mode, str(entry["request"]), int(entry.get("size") or 0), int(entry.get("bytes") or 0))
        )
    found.sort(key=lambda row: row[0])
    start = found[0][0] if found else 0.0
    return [Request(round(t - start, 3), e, m, k, s, a) for t, e, m, k, s, a in found]


def _usage() -> str:
    return f"usage: python -m loadtest.traces {{{','.join(SHAPES)}}} FILE | from-log ACCESS_LOG FILE"


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "from-log":
        with Path(sys.argv[2]).open(errors="replace") as log_lines:
            written = write(from_access_log(log_lines), Path(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] in SHAPES:
        written = write(generate(SHAPES[sys.argv[1]]), Path(sys.argv[2]))
    else:
        raise SystemExit(_usage())
    print(f"wrote {written} requests to {sys.argv[-1]}")
