"""`make soak`: the fleet under steady mixed load for a long time — does anything grow?

    python -m loadtest.soak [--seconds 600] [--rate 40] [--callers 20]

Starts what `make cluster` starts (a private Redis, 2 instances of 2 gevent workers, the
repository's nginx) in front of the fake model API, fills every worker's L1 cache to its bound
first (a full cache is the steady state; a filling one is growth by design), then sends the day's
mix (hits, misses, coalesced identical calls, streams) at a fixed rate. Every few seconds it reads
each worker's RSS and open descriptors (psutil) and its greenlet count (/metrics); at the end it
prints, per worker, the RSS slope over the measured part in MiB/min (least squares), the change
in descriptors and greenlets, and the error count. The test suite runs a 30-second version.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtest._procs import fake_upstream, find_binary, gunicorn, nginx, redis
from loadtest.steady import Outcome, SteadyLoad

__all__ = ["SoakReport", "main", "soak"]

CACHE_BYTES = 512 << 10  # per worker: small, so that the prefill reaches the bound in seconds
MIB = 1 << 20


@dataclass
class SoakReport:
    seconds: float
    requests: int
    failures: list[Outcome]
    kinds: dict[str, int]
    rss_slope: dict[int, float]  # MiB per minute, per worker pid
    rss_mib: dict[int, tuple[float, float]]  # first and last measured sample
    fds: dict[int, tuple[int, int]]
    greenlets: dict[int, tuple[int, int]]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"soak: {self.requests} requests in {self.seconds:.0f} s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.kinds.items()))}), {len(self.failures)} failed"
        ]
        for pid in sorted(self.rss_slope):
            first, last = self.rss_mib[pid]
            out.append(
                f"  worker {pid}: RSS {first:.1f} -> {last:.1f} MiB, slope {self.rss_slope[pid]:+.3f} MiB/min; "
                f"fds {self.fds[pid][0]} -> {self.fds[pid][1]}; "
                f"greenlets {self.greenlets[pid][0]} -> {self.greenlets[pid][1]}"
            )
        return out


def _slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per minute."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if not spread:
        return 0.0
    return 60 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def worker_greenlets(urls: list[str]) -> dict[int, int]:
    """Each worker's last greenlet count (`process_worker_greenlets`), by pid, over `urls`."""
    found: dict[int, int] = {}
    for url in urls:
        for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
            for sample in family.samples:
                if sample.name == "process_worker_greenlets":
                    found[int(sample.labels["pid"])] = int(sample.value)
    return found


def _counted_greenlets(urls: list[str], pids: list[int], after: float = 0.0) -> dict[int, int]:
    """Every worker's greenlet count, taken at `after` (monotonic) or later: a worker counts on a
    request at most every 10 s, so the workers are sent requests until each has reported a count
    taken since then (the gauge's first count comes 10 s after a worker starts)."""
    deadline = time.monotonic() + 60
    seen: dict[int, int] = {}
    while time.monotonic() < deadline:
        poked_at = time.monotonic()
        for url in urls:
            for _ in range(16):  # each instance's kernel spreads them over its workers
                requests.get(url + "/health/live", timeout=10)
        if poked_at >= after + 10.5:
            seen = worker_greenlets(urls)
            if all(seen.get(pid, 0) > 0 for pid in pids):
                return seen
        time.sleep(0.5)
    raise RuntimeError(f"not every worker reported its greenlets within 60 s: {seen}")


@contextlib.contextmanager
def _fleet(instances: int = 2, workers: int = 2) -> Iterator[tuple[str, list[str], list[psutil.Process]]]:
    redis_bin, nginx_bin = find_binary("redis-server"), find_binary("nginx")
    if redis_bin is None or nginx_bin is None:
        raise RuntimeError("the soak needs redis-server and nginx on PATH (apt-get install redis-server nginx)")
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(fake_upstream(latency=0.05))
        requests.post(upstream + "/_control", json={"stream_chunks": 8, "stream_interval": 0.01}, timeout=5)
        redis_url = stack.enter_context(redis(redis_bin))
        env = {
            "ANTHROPIC_API_KEY": "sk-ant-soak",
            "ANTHROPIC_BASE_URL": upstream,
            "REDIS_URL": redis_url,
            "TRUSTED_PROXIES": "1",
            "LOG_LEVEL": "WARNING",
            "CACHE_MAX_BYTES": str(CACHE_BYTES),
        }
        urls, procs = [], []
        for _ in range(instances):
            url, proc, _ = stack.enter_context(gunicorn(env, workers=workers))
            urls.append(url)
            procs.extend(psutil.Process(proc.pid).children())
        front = stack.enter_context(nginx([u.removeprefix("http://") for u in urls], nginx_bin))
        yield front, urls, procs


def _prefill(front: str, urls: list[str]) -> None:
    """Distinct answers until the workers' L1 caches hold 90 % of their byte bounds in all."""

    def filled() -> float:
        total = {"cache_bytes": 0.0, "cache_max_bytes": 0.0}
        for url in urls:
            for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
                for sample in family.samples:
                    if sample.name in total:
                        total[sample.name] += sample.value
        return total["cache_bytes"] / total["cache_max_bytes"] if total["cache_max_bytes"] else 1.0

    with SteadyLoad(front, 20, request=_distinct_miss):
        while filled() < 0.9:
            time.sleep(0.5)


def _distinct_miss(session: requests.Session, url: str, n: int, _rng: Any) -> tuple[int, str, str]:
    response = session.post(url + "/api/optimize", json={"prompt": f"prefill {n}", "mode": "code"}, timeout=60)
    return response.status_code, "prefill", "" if response.ok else response.text[:300]


def soak(seconds: float, rate: float = 40, callers: int = 20, every: float = 2.0, progress: bool = True) -> SoakReport:
    """Run the soak for `seconds` of measured load; return its report."""
    with _fleet() as (front, urls, workers):
        if progress:
            print(f"soak: fleet up at {front}; filling every worker's cache to its bound", flush=True)
        _prefill(front, urls)
        greenlets_before = _counted_greenlets(urls, [w.pid for w in workers])
        points: dict[int, list[tuple[float, float]]] = {w.pid: [] for w in workers}
        fds: dict[int, list[int]] = {w.pid: [] for w in workers}
        started = time.monotonic()
        next_report = started + 60
        with SteadyLoad(front, callers, rate=rate) as load:
            while (now := time.monotonic()) - started < seconds:
                for worker in workers:
                    points[worker.pid].append((now - started, worker.memory_info().rss / MIB))
                    fds[worker.pid].append(worker.num_fds())
                if progress and now >= next_report:
                    next_report += 60
                    rss = ", ".join(f"{p[-1][1]:.1f}" for p in points.values())
                    print(f"  {now - started:4.0f} s: {load.done} requests, RSS MiB per worker [{rss}]", flush=True)
                time.sleep(every)
        greenlets_after = _counted_greenlets(urls, [w.pid for w in workers], after=time.monotonic())
        outcomes = load.outcomes
    kinds: dict[str, int] = {}
    for outcome in outcomes:
        kinds[outcome.kind] = kinds.get(outcome.kind, 0) + 1
    return SoakReport(
        seconds=seconds,
        requests=len(outcomes),
        failures=[o for o in outcomes if o.status != 200],
        kinds=kinds,
        rss_slope={pid: _slope_per_minute(p) for pid, p in points.items()},
        rss_mib={pid: (p[0][1], p[-1][1]) for pid, p in points.items()},
        fds={pid: (f[0], f[-1]) for pid, f in fds.items()},
        greenlets={pid: (greenlets_before.get(pid, -1), greenlets_after.get(pid, -1)) for pid in points},
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600, help="measured load, seconds (default 600)")
    parser.add_argument("--rate", type=float, default=40, help="requests per second in all (default 40)")
    parser.add_argument("--callers", type=int, default=20, help="concurrent callers (default 20)")
    args = parser.parse_args(argv)
    report = soak(args.seconds, args.rate, args.callers)
    print("\n".join(report.lines()))
    for failure in report.failures[:10]:
        print(f"  failed: {failure}")


if __name__ == "__main__":
    main()
