"""Prometheus metrics for the whole server: prometheus-flask-exporter for HTTP, our own for the
gateway; multiprocess mode under gunicorn, so /metrics sums every worker."""

from __future__ import annotations

import functools
import gc
import os
import time
from dataclasses import dataclass
from typing import Any

import gevent
import psutil
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from app.gateway.observer import Observer
from app.observability.series import Series
from app.providers.base import RETRYABLE_STATUSES, UpstreamFailure
from app.security.spend import cost_usd
from config.settings import Settings

__all__ = ["Instruments", "PrometheusObserver", "RequestMetrics", "init_app", "init_endpoint_series"]


class RequestMetrics:
    """Records one HTTP request for the pipeline (app.pipeline): in progress, then answered
    (count, duration, our overhead), then ended."""

    def __init__(self, metrics: Series) -> None:
        self.m = metrics
        self._process = psutil.Process(os.getpid())
        # Greenlets are first counted 10 s after start, not on the first request: counting walks
        # the heap, and a short-lived app (a test's) would pay for a walk it never reports.
        self._sampled = {"at": 0.0, "cpu": 0.0, "greenlets_at": time.monotonic()}
        # Labelled children memoised: label validation costs more than the increment itself.
        self._requests_by = functools.lru_cache(maxsize=1024)(metrics.http_requests.labels)
        self._duration_by = functools.lru_cache(maxsize=1024)(metrics.http_duration.labels)
        self._overhead_by = functools.lru_cache(maxsize=256)(metrics.overhead.labels)

    def started(self) -> None:
        """A request came in."""
        self.m.http_active.inc()
        self._sample_process()

    def answered(
        self, method: str, endpoint: str, status: int, total: float | None, upstream: float, limited: bool = False
    ) -> None:
        """A request was answered `total` seconds after it came in, `upstream` of them waiting;
        `limited`: refused by the rate limit."""
        labels = (method, endpoint, str(status))
        self._requests_by(*labels).inc()
        if limited:
            self.m.rate_limited.labels(endpoint).inc()
        if total is not None:
            self._duration_by(*labels).observe(total)
            self._overhead_by(endpoint).observe(max(0.0, total - upstream))

    def ended(self) -> None:
        """A request's work is over (its answer sent or abandoned)."""
        self.m.http_active.dec()

    def _sample_process(self) -> None:
        # Multiprocess mode has no process collector: sample RSS, CPU and descriptors here, at
        # most every 5 s; greenlets every 10 s (counting them walks the heap).
        now = time.monotonic()
        sampled, metrics = self._sampled, self.m
        if now - sampled["at"] > 5:
            sampled["at"] = now
            metrics.worker_rss.set(self._process.memory_info().rss)
            metrics.worker_fds.set(self._process.num_fds())
            cpu = self._process.cpu_times()
            metrics.cpu.inc(max(0.0, cpu.user + cpu.system - sampled["cpu"]))
            sampled["cpu"] = cpu.user + cpu.system
        if now - sampled["greenlets_at"] > 10:
            sampled["greenlets_at"] = now
            metrics.worker_greenlets.set(sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet)))


class PrometheusObserver(Observer):
    """Turns gateway events into metrics (request facts for logs are app.observability.access's)."""

    def __init__(self, metrics: Series, prices: dict[str, tuple[float, float]], keys: tuple[str, ...] = ()) -> None:
        self.m = metrics
        self._prices = prices
        self._keys = keys  # the configured API keys' names ("none": calls made for no key)
        for key in (*keys, "none"):
            for kind in ("input", "output"):
                metrics.key_tokens.labels(key, kind)
            metrics.key_cost.labels(key)
        # Labelled children memoised (a label lookup costs more than the increment).
        self._hits_by = functools.lru_cache(maxsize=64)(metrics.hits.labels)
        self._misses_by = functools.lru_cache(maxsize=64)(metrics.misses.labels)

    def known(self, provider: str, model: str, namespaces: tuple[str, ...], modes: tuple[str, ...]) -> None:
        # Every series a dashboard or alert reads exists from the start with 0, not "No data"
        # until its first event (Prometheus instrumentation guidelines: initialise known labels).
        m = self.m
        for namespace in namespaces:
            for tier in ("l1", "disk", "redis"):
                m.hits.labels(namespace, tier)
            for family in (m.misses, m.stale):
                family.labels(namespace)
            for scope in ("worker", "cluster"):
                m.coalesced.labels(scope, namespace)
        for mode in modes:
            labels = (provider, model, mode)
            m.api_calls.labels(*labels, "success")
            m.api_duration.labels(*labels)
            m.cost.labels(*labels)
            for kind in ("input", "output"):
                m.tokens.labels(*labels, kind)
        for reason in (*RETRYABLE_STATUSES, "connection"):
            m.retries.labels(provider, str(reason))
        m.streams_started.labels(provider, model)
        m.stream_ttft.labels(provider, model)
        m.stream_overhead.labels(provider, model)
        for outcome in ("completed", "failed", "cancelled"):
            m.streams_finished.labels(provider, model, outcome)
        for scope in ("worker", "cluster"):
            m.stream_followers.labels(scope)

    def cache_lookup(self, namespace: str, status: str, seconds: float = 0.0, tier: str = "l1") -> None:
        if status == "HIT":
            self._hits_by(namespace, tier).inc()
        elif status == "MISS":
            self._misses_by(namespace).inc()
        elif status == "STALE":
            self.m.stale.labels(namespace).inc()

    def coalesced(self, namespace: str, scope: str) -> None:
        self.m.coalesced.labels(scope, namespace).inc()

    def waiting(self, scope: str, delta: int) -> None:
        self.m.waiting.labels(scope).inc(delta)

    def upstream_call(self, provider: str, model: str, request: Any, outcome: Any, seconds: float) -> None:
        labels = (provider, model, request.mode)
        self.m.api_duration.labels(*labels).observe(seconds)
        if isinstance(outcome, UpstreamFailure):
            status = str(outcome.status) if outcome.status else outcome.kind
            self.m.api_calls.labels(*labels, status).inc()
            return
        self.m.api_calls.labels(*labels, "success").inc()
        self.m.tokens.labels(*labels, "input").inc(outcome.input_tokens)
        self.m.tokens.labels(*labels, "output").inc(outcome.output_tokens)
        cost = cost_usd(self._prices, outcome.model, outcome.input_tokens, outcome.output_tokens)
        if cost:
            self.m.cost.labels(*labels).inc(cost)
        key = request.caller.key or "none"
        self.m.key_tokens.labels(key, "input").inc(outcome.input_tokens)
        self.m.key_tokens.labels(key, "output").inc(outcome.output_tokens)
        if cost:
            self.m.key_cost.labels(key).inc(cost)

    def key_budget(self, key: str, budget: str, ratio: float) -> None:
        self.m.key_budget.labels(key, budget).set(ratio)

    def upstream_retry(self, provider: str, request: Any, failure: Any, delay: float) -> None:
        self.m.retries.labels(provider, str(failure.status) if failure.status else failure.kind).inc()

    def breaker_state(self, name: str, code: int) -> None:
        self.m.breaker.labels(name).set(code)

    def breaker_failures(self, name: str, failures: int) -> None:
        self.m.breaker_failures.labels(name).set(failures)

    def in_flight(self, count: int) -> None:
        self.m.in_flight.set(count)

    def cache_evicted(self, count: int) -> None:
        self.m.evictions.inc(count)

    def stream_started(self, provider: str, model: str) -> None:
        self.m.streams_started.labels(provider, model).inc()
        self.m.streams_active.inc()

    def stream_first_delta(self, provider: str, model: str, seconds: float, overhead: float) -> None:
        self.m.stream_ttft.labels(provider, model).observe(seconds)
        self.m.stream_overhead.labels(provider, model).observe(overhead)

    def stream_finished(self, provider: str, model: str, outcome: str, seconds: float) -> None:
        self.m.streams_finished.labels(provider, model, outcome).inc()
        self.m.streams_active.dec()

    def stream_follower(self, scope: str) -> None:
        self.m.stream_followers.labels(scope).inc()

    def stream_bytes(self, count: int) -> None:
        self.m.stream_bytes.inc(count)

    def stream_buffers(self, size: int) -> None:
        self.m.stream_buffers.set(size)

    def cache_stored(self) -> None:
        self.m.sets.inc()

    def cache_size(self, entries: int, size: int) -> None:
        self.m.cache_entries.set(entries)
        self.m.cache_bytes.set(size)

    def redis_error(self) -> None:
        self.m.redis_errors.inc()

    def disk_error(self) -> None:
        self.m.disk_errors.inc()

    def disk_size(self, entries: int, size: int) -> None:
        self.m.disk_entries.set(entries)
        self.m.disk_bytes.set(size)

    def upstream_budget(self, held: int, paused: bool) -> None:
        self.m.upstream_slots.set(held)
        self.m.upstream_paused.set(1 if paused else 0)


@functools.lru_cache(maxsize=256)  # a label lookup costs more than the increment
def _graphql_child(family: Any, field: str, status: int) -> Any:
    return family.labels(field, str(status))


@dataclass(frozen=True)
class Instruments:
    """The metrics parts the app wires: the families, the request recorder (the pipeline's), the
    gateway's observer, and the registry /metrics and /stats read."""

    metrics: Series
    recorder: RequestMetrics
    observer: PrometheusObserver
    registry: Any

    def graph_counted(self, field: str, status: int) -> None:
        """A GraphQL operation ended with `status` (app.graph.endpoint)."""
        _graphql_child(self.metrics.graphql_operations, field, status).inc()


def init_app(app: Flask, settings: Settings) -> Instruments | None:
    """Serve /metrics; return the instruments (None when METRICS_ENABLED is false)."""
    if not settings.metrics_enabled:
        return None
    # Under gunicorn, on_starting sets PROMETHEUS_MULTIPROC_DIR before the workers fork and load
    # their settings; a plain create_app (tests, benchmarks) has none and uses its own registry.
    multiproc = bool(settings.prometheus_multiproc_dir)
    registry = None if multiproc else CollectorRegistry()
    # The exporter serves /metrics (aggregating the workers' files). The request metrics are the
    # pipeline's (RequestMetrics): the exporter records them in Flask hooks, which a request the
    # pipeline answers without Flask never runs, and its defaults cost time on every request and
    # duplicate http_requests_total without the endpoint label.
    options = {"export_defaults": False}
    if multiproc:
        exporter = GunicornInternalPrometheusMetrics(app, **options)
    else:
        exporter = PrometheusMetrics(app, registry=registry, **options)
    metrics = Series(registry)
    metrics.started.set(time.time())
    for scope in ("worker", "cluster"):
        metrics.waiting.labels(scope).set(0)  # a series from the start: 0, not "no data"
    metrics.disk_bytes.set(0)  # (a "most recent" gauge has no sample until it is set)
    metrics.disk_entries.set(0)
    return Instruments(
        metrics,
        RequestMetrics(metrics),
        PrometheusObserver(metrics, settings.llm_prices, tuple(spec.name for spec in settings.keys)),
        exporter.registry,
    )


def init_endpoint_series(app: Flask, metrics: Series) -> None:
    """Create the request series of every /api route with 0 (call after the blueprints are in):
    a fresh server shows 0 requests and 0 rate-limited, not "No data"."""
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            labels = ("POST", rule.endpoint, "200")
            metrics.http_requests.labels(*labels)
            metrics.http_duration.labels(*labels)
            metrics.overhead.labels(rule.endpoint)
            metrics.rate_limited.labels(rule.endpoint)
