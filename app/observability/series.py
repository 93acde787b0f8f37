"""The service's own Prometheus metric families (app.observability.metrics records into them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["JOB_BUCKETS", "LATENCY_BUCKETS", "OVERHEAD_BUCKETS", "Series"]

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


class Series:
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
        self.graphql_operations = Counter(
            "graphql_operations_total",
            "GraphQL operations run, by Query field and the HTTP status their outcome maps to",
            ("field", "status"),
            registry=r,
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
