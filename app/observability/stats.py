"""GET /stats content: the whole server's numbers, computed from the same samples /metrics shows."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

__all__ = ["server_stats"]


class _Samples:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._by_name: dict[str, list[Sample]] = defaultdict(list)
        for family in registry.collect():
            for sample in family.samples:
                self._by_name[sample.name].append(sample)

    def all(self, name: str, **labels: str) -> Iterable[Sample]:
        return (s for s in self._by_name.get(name, ()) if all(s.labels.get(k) == v for k, v in labels.items()))

    def sum(self, name: str, **labels: str) -> float:
        return float(sum(s.value for s in self.all(name, **labels)))

    def by(self, name: str, label: str) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for sample in self.all(name):
            totals[sample.labels.get(label, "")] += sample.value
        return dict(totals)

    def quantile(self, name: str, q: float) -> tuple[float, float, float] | None:
        """Estimate a quantile from histogram buckets as PromQL's histogram_quantile does (linear
        within a bucket); return (estimate, bucket lower bound, bucket upper bound): the true
        value lies somewhere in that bucket, which is all a histogram knows."""
        buckets: dict[float, float] = defaultdict(float)
        for sample in self.all(name + "_bucket"):
            buckets[float(sample.labels["le"])] += sample.value
        if not buckets or buckets[float("inf")] == 0:
            return None
        rank = q * buckets[float("inf")]
        lower, below = 0.0, 0.0
        for bound in sorted(buckets):
            if buckets[bound] >= rank:
                if bound == float("inf"):
                    return lower, lower, bound
                share = (rank - below) / (buckets[bound] - below) if buckets[bound] > below else 1.0
                return lower + (bound - lower) * share, lower, bound
            lower, below = bound, buckets[bound]
        return lower, lower, lower


def _keys(s: _Samples) -> dict[str, Any]:
    """Usage per API key (by name): tokens, estimated cost, and the share of each budget used."""
    found: dict[str, Any] = {}
    for sample in s.all("key_tokens_total"):
        entry = found.setdefault(
            sample.labels["key"], {"tokens": {"input": 0, "output": 0}, "costUsd": 0.0, "budgets": {}}
        )
        entry["tokens"][sample.labels["type"]] += int(sample.value)
    for sample in s.all("key_cost_usd_total"):
        if sample.labels["key"] in found:
            found[sample.labels["key"]]["costUsd"] = round(found[sample.labels["key"]]["costUsd"] + sample.value, 6)
    for sample in s.all("key_budget_used_ratio"):
        if sample.labels["key"] in found:
            budgets = found[sample.labels["key"]]["budgets"]
            budgets[sample.labels["budget"]] = max(budgets.get(sample.labels["budget"], 0.0), round(sample.value, 4))
    return found


def _ms(seconds: float) -> float | None:
    return None if seconds == float("inf") else round(1000 * seconds, 1)  # None: above the last bucket


def _ratio(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def server_stats(registry: CollectorRegistry, breaker_state: str) -> dict[str, Any]:
    """Return /stats: uptime, workers, cache, coalescing, breaker, upstream and memory."""
    s = _Samples(registry)
    starts = [sample.value for sample in s.all("process_worker_start_time_seconds")]
    rss = {sample.labels.get("pid", "self"): int(sample.value) for sample in s.all("process_worker_rss_bytes")}
    misses, coalesced = s.sum("cache_misses_total"), s.sum("coalesced_requests_total")
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "uptime": round(time.time() - min(starts), 3) if starts else 0.0,
        "workers": len(starts),
        "requests": {
            "total": int(s.sum("http_requests_total")),
            "rateLimited": int(s.sum("rate_limited_requests_total")),
            "byStatus": {k: int(v) for k, v in s.by("http_requests_total", "status").items()},
        },
        "cache": _cache(s),
        "coalescing": {
            "leaders": int(misses - coalesced),
            "coalesced": int(coalesced),
            "rate": _ratio(coalesced, misses),
            "inFlight": int(s.sum("coalescing_in_flight")),
        },
        "circuitBreaker": {
            "state": breaker_state,
            "worstState": int(max((x.value for x in s.all("circuit_breaker_state")), default=0)),
            "failures": int(s.sum("circuit_breaker_failures")),
        },
        "upstream": _upstream(s),
        "keys": _keys(s),
        "redis": {"errors": int(s.sum("redis_errors_total"))},
        "memory": {"rssBytesPerWorker": rss, "rssBytesTotal": sum(rss.values())},
    }


def _cache(s: _Samples) -> dict[str, Any]:
    hits, misses = s.sum("cache_hits_total"), s.sum("cache_misses_total")
    max_bytes, used = s.sum("cache_max_bytes"), s.sum("cache_bytes")
    return {
        "hits": int(hits),
        "misses": int(misses),
        "stale": int(s.sum("stale_responses_total")),
        "sets": int(s.sum("cache_sets_total")),
        "evictions": int(s.sum("cache_evictions_total")),
        "hitRate": _ratio(hits, hits + misses),
        "entries": int(s.sum("cache_entries")),
        "bytes": int(used),
        "maxBytes": int(max_bytes),
        "utilizationPercent": round(100 * used / max_bytes, 2) if max_bytes else 0.0,
        # Which tier answered each hit, and what the on-machine tier holds (one per machine).
        "hitsByTier": {tier: int(v) for tier, v in sorted(s.by("cache_hits_total", "tier").items())},
        "disk": {
            "entries": int(max((x.value for x in s.all("cache_disk_entries")), default=0)),
            "bytes": int(max((x.value for x in s.all("cache_disk_bytes")), default=0)),
            "errors": int(s.sum("cache_disk_errors_total")),
        },
    }


def _upstream(s: _Samples) -> dict[str, Any]:
    calls = s.by("claude_api_calls_total", "status")
    duration_count = s.sum("claude_api_duration_seconds_count")
    p95 = s.quantile("claude_api_duration_seconds", 0.95)
    tokens = s.by("claude_tokens_total", "type")
    return {
        "calls": {k: int(v) for k, v in calls.items()},
        "retries": int(s.sum("upstream_retries_total")),
        "avgLatencyMs": round(1000 * s.sum("claude_api_duration_seconds_sum") / duration_count, 1)
        if duration_count
        else 0.0,
        # Estimated from histogram buckets, and labelled so: the bucket is the precision.
        "p95LatencyMsEstimate": round(1000 * p95[0], 1) if p95 is not None else None,
        "p95LatencyBucketMs": [_ms(p95[1]), _ms(p95[2])] if p95 is not None else None,
        "tokens": {"input": int(tokens.get("input", 0)), "output": int(tokens.get("output", 0))},
        "costUsd": round(s.sum("claude_cost_usd_total"), 6),
    }
