"""/stats figures computed from a registry: the p95 is an estimate and says within which bucket."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from app.observability.series import LATENCY_BUCKETS
from app.observability.stats import _Samples


def _histogram(values: list[float]) -> CollectorRegistry:
    registry = CollectorRegistry()
    histogram = Histogram("claude_api_duration_seconds", "d", buckets=LATENCY_BUCKETS, registry=registry)
    for value in values:
        histogram.observe(value)
    return registry


def test_p95_of_two_one_second_calls_is_labelled_with_its_bucket() -> None:
    estimate, low, high = _Samples(_histogram([1.0, 1.0])).quantile("claude_api_duration_seconds", 0.95)  # type: ignore[misc]
    assert (low, high) == (0.5, 1.0)  # le="1" holds both: the truth is somewhere in (0.5, 1]
    assert low <= estimate <= high


def test_p95_above_the_last_bucket_has_no_upper_bound() -> None:
    estimate, low, high = _Samples(_histogram([500.0])).quantile("claude_api_duration_seconds", 0.95)  # type: ignore[misc]
    assert (estimate, low, high) == (120, 120, float("inf"))


def test_no_observations_no_quantile() -> None:
    assert _Samples(_histogram([])).quantile("claude_api_duration_seconds", 0.95) is None
