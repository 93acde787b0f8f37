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
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from app.gateway.observer import Observer
from app.providers.base import RETRYABLE_STATUSES, UpstreamFailure
from app.security.spend import cost_usd
from config.settings import Settings

__all__ = ["Instruments", "PrometheusObserver", "RequestMetrics", "init_app", "init_endpoint_series"]

# From sub-millisecond cache hits to minute-long video calls.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    20,
    30,
    45,
    60,
    90,
    120,
)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class _Metrics:
    """The service's own metric families; one registry per app outside multiprocess mode."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry  # None in multiprocess mode: values live in the files, not a registry
        model = ("provider", "model", "mode")
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration",
            ("method", "endpoint", "status"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "http_requests_total", "HTTP requests answered", ("method", "endpoint", "status"), registry=r
        )
        self.http_active = Gauge(
            "http_active_requests", "HTTP requests in progress", multiprocess_mode="livesum", registry=r
        )
        self.rate_limited = Counter(
            "rate_limited_requests_total", "Requests refused by the rate limit", ("endpoint",), registry=r
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time in our own code per request (upstream excluded)",
            ("endpoint",),
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.api_calls = Counter(
            "claude_api_calls_total", "Upstream model calls (attempts)", (*model, "status"), registry=r
        )
        self.api_duration = Histogram(
            "claude_api_duration_seconds", "Upstream model call duration", model, buckets=LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("claude_tokens_total", "Tokens the upstream reported", (*model, "type"), registry=r)
        self.cost = Counter("claude_cost_usd_total", "Estimated upstream cost in USD", model, registry=r)
        self.retries = Counter(
            "upstream_retries_total", "Upstream attempts retried", ("provider", "reason"), registry=r
        )
        self.coalesced = Counter(
            "coalesced_requests_total",
            "Requests answered by an identical in-flight call",
            ("type", "cache_type"),
            registry=r,
        )
        self.waiting = Gauge(
            "coalescing_waiting_requests",
            "Requests waiting on an identical call in flight (worker: same worker; cluster: another process)",
            ("scope",),
            multiprocess_mode="livesum",
            registry=r,
        )
        self.hits = Counter(
            "cache_hits_total",
            "Cache hits, by the tier that answered: l1, disk or redis",
            ("cache_type", "tier"),
            registry=r,
        )
        self.misses = Counter("cache_misses_total", "Cache misses", ("cache_type",), registry=r)
        self.stale = Counter(
            "stale_responses_total", "Expired answers served because the upstream failed", ("cache_type",), registry=r
        )
        self.evictions = Counter("cache_evictions_total", "L1 entries evicted for space", registry=r)
        self.sets = Counter(
            "cache_sets_total", "New answers stored in L1 (not copies from L2 or another instance)", registry=r
        )
        self.in_flight = Gauge(
            "coalescing_in_flight", "Distinct upstream calls in flight", multiprocess_mode="livesum", registry=r
        )
        self.breaker_failures = Gauge(
            "circuit_breaker_failures",
            "Consecutive failures counted by the breaker",
            ("circuit",),
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_bytes = Gauge("cache_bytes", "Bytes held by the L1 caches", multiprocess_mode="livesum", registry=r)
        self.cache_max_bytes = Gauge(
            "cache_max_bytes", "L1 byte limit, summed over workers", multiprocess_mode="livesum", registry=r
        )
        self.cache_entries = Gauge(
            "cache_entries", "Entries held by the L1 caches", multiprocess_mode="livesum", registry=r
        )
        self.breaker = Gauge(
            "circuit_breaker_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open (worst worker)",
            ("circuit",),
            multiprocess_mode="livemax",
            registry=r,
        )
        stream = ("provider", "model")
        self.stream_ttft = Histogram(
            "stream_ttft_seconds",
            "Time from a stream's start to its first text",
            stream,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stream_overhead = Histogram(
            "stream_ttft_overhead_seconds",
            "Time to first text added by the service (its TTFT minus the upstream's own)",
            stream,
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.streams_started = Counter("streams_started_total", "Upstream streams started", stream, registry=r)
        self.streams_finished = Counter(
            "streams_finished_total",
            "Upstream streams ended, by outcome: completed, failed, cancelled",
            (*stream, "outcome"),
            registry=r,
        )
        self.streams_active = Gauge(
            "streams_active", "Upstream streams in progress", multiprocess_mode="livesum", registry=r
        )
        self.stream_followers = Counter(
            "stream_followers_total", "Stream callers that joined another's stream", ("scope",), registry=r
        )
        self.stream_bytes = Counter("stream_bytes_total", "Event bytes sent to stream callers", registry=r)
        self.stream_buffers = Gauge(
            "stream_buffer_bytes",
            "Bytes held by the buffers of streams in flight (counted against the L1 byte limit)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.redis_errors = Counter(
            "redis_errors_total", "Redis operations that failed (served without Redis)", registry=r
        )
        self.disk_errors = Counter(
            "cache_disk_errors_total", "Disk cache operations that failed (served without the disk tier)", registry=r
        )
        # The disk tier is one per machine: every worker reports the same figure (the newest wins).
        self.disk_bytes = Gauge(
            "cache_disk_bytes",
            "Bytes the on-machine cache tier holds on disk",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.disk_entries = Gauge(
            "cache_disk_entries", "Entries in the on-machine cache tier", multiprocess_mode="mostrecent", registry=r
        )
        # Per API key: bounded by the configured names (and "none": no key), never caller input.
        self.key_tokens = Counter("key_tokens_total", "Model tokens used for each API key", ("key", "type"), registry=r)
        self.key_cost = Counter("key_cost_usd_total", "Estimated model cost for each API key", ("key",), registry=r)
        self.key_budget = Gauge(
            "key_budget_used_ratio",
            "Share of a key's budget used in its current period (1 = spent): the fleet's with Redis,"
            " the machine's with CACHE_DIR, else the most any one worker counted",
            ("key", "budget"),
            multiprocess_mode="livemax",
            registry=r,
        )
        self.upstream_slots = Gauge(
            "upstream_slots_in_use",
            "Model calls holding an upstream slot (UPSTREAM_MAX_CONCURRENCY bounds the fleet's sum)",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.upstream_paused = Gauge(
            "upstream_backoff_active",
            "1 while a model API 429's Retry-After holds new calls",
            multiprocess_mode="livemax",
            registry=r,
        )
        # The job store is one per machine (or fleet): every runner reports the same figures.
        self.jobs_queued = Gauge(
            "jobs_queued", "Jobs waiting to run, by priority", ("priority",), multiprocess_mode="mostrecent", registry=r
        )
        self.jobs_running = Gauge("jobs_running", "Jobs running", multiprocess_mode="mostrecent", registry=r)
        self.jobs_oldest = Gauge(
            "jobs_oldest_queued_age_seconds",
            "Age of the oldest queued job (0: none queued)",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.jobs_submitted = Counter("jobs_submitted_total", "Jobs accepted", ("task", "priority"), registry=r)
        self.jobs_finished = Counter(
            "jobs_finished_total", "Jobs finished, by outcome", ("task", "outcome"), registry=r
        )
        self.job_wait = Histogram(
            "job_wait_seconds",
            "Time from a job's submission to its start",
            ("priority",),
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.job_run = Histogram("job_run_seconds", "Time a job ran", ("task",), buckets=JOB_BUCKETS, registry=r)
        self.worker_rss = Gauge(
            "process_worker_rss_bytes", "Resident memory per worker", multiprocess_mode="liveall", registry=r
        )
        self.worker_fds = Gauge(
            "process_worker_open_fds", "Open file descriptors per worker", multiprocess_mode="liveall", registry=r
        )
        self.worker_greenlets = Gauge(
            "process_worker_greenlets",
            "Greenlets alive per worker (counted every 10 s)",
            multiprocess_mode="liveall",
            registry=r,
        )
        self.started = Gauge(
            "process_worker_start_time_seconds", "Worker start time", multiprocess_mode="liveall", registry=r
        )
        self.cpu = Counter(
            "process_worker_cpu_seconds_total", "CPU time used by the workers (user + system)", registry=r
        )


class RequestMetrics:
    """Records one HTTP request for the pipeline (app.pipeline): in progress, then answered
    (count, duration, our overhead), then ended."""

    def __init__(self, metrics: _Metrics) -> None:
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

    def __init__(self, metrics: _Metrics, prices: dict[str, tuple[float, float]], keys: tuple[str, ...] = ()) -> None:
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


@dataclass(frozen=True)
class Instruments:
    """The metrics parts the app wires: the families, the request recorder (the pipeline's), the
    gateway's observer, and the registry /metrics and /stats read."""

    metrics: _Metrics
    recorder: RequestMetrics
    observer: PrometheusObserver
    registry: Any


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
    metrics = _Metrics(registry)
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


def init_endpoint_series(app: Flask, metrics: _Metrics) -> None:
    """Create the request series of every /api route with 0 (call after the blueprints are in):
    a fresh server shows 0 requests and 0 rate-limited, not "No data"."""
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            labels = ("POST", rule.endpoint, "200")
            metrics.http_requests.labels(*labels)
            metrics.http_duration.labels(*labels)
            metrics.overhead.labels(rule.endpoint)
            metrics.rate_limited.labels(rule.endpoint)
