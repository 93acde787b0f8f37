"""Write grafana/dashboards/prompt-builder-api.json: the original's 13 panels on our metrics plus
overhead, calls avoided, retries, rate limits, stale answers, cost, cache bytes and worker memory.
The datasource is a dashboard variable, so it imports into any Grafana. Run after editing:

    python grafana/build_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "prompt-builder-api.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# (title, kind, unit, [(expr, legend)], thresholds [(value, colour)], description)
PANELS: list[tuple[str, str, str, list[tuple[str, str]], list[tuple[float, str]], str]] = [
    (
        "Request rate",
        "timeseries",
        "reqps",
        [("sum by (endpoint) (rate(http_requests_total[1m]))", "{{endpoint}}")],
        [],
        "Requests per second by route.",
    ),
    (
        "Latency p50 / p95 / p99",
        "timeseries",
        "s",
        [
            ("job:http_request_duration_seconds:p50", "p50"),
            ("job:http_request_duration_seconds:p95", "p95"),
            ("job:http_request_duration_seconds:p99", "p99"),
        ],
        [(10, "orange"), (30, "red")],
        "Whole-service request latency; alerts at p95 > 10 s and > 30 s.",
    ),
    (
        "Error rate (5xx)",
        "timeseries",
        "percentunit",
        [("job:http_errors_5xx:ratio5m", "5xx"), ("job:http_errors_4xx:ratio5m", "4xx")],
        [(0.05, "orange"), (0.15, "red")],
        "Share of responses with a 5xx (alerting) and 4xx (callers' mistakes) status.",
    ),
    (
        "Cache hits by tier / misses",
        "timeseries",
        "reqps",
        [
            ("sum by (tier) (rate(cache_hits_total[1m]))", "hits: {{tier}}"),
            ('sum(rate(edge_requests_total{cache="HIT"}[1m]))', "hits: edge (nginx)"),
            ("sum(rate(cache_misses_total[1m]))", "misses"),
        ],
        [],
        "Cache lookups per second; a hit names the tier that answered it: l1, disk or redis in the"
        " service, edge for nginx's own (L3, counted by mtail from nginx's edge log; never seen by"
        " the service).",
    ),
    (
        "Cache hit rate",
        "stat",
        "percentunit",
        [("job:cache_hit:ratio5m", "hit rate")],
        [(0, "red"), (0.1, "orange"), (0.3, "green")],
        "From the counters (a per-worker ratio gauge cannot be summed across workers).",
    ),
    (
        "Active requests",
        "timeseries",
        "short",
        [("sum(http_active_requests)", "in progress")],
        [(100, "orange")],
        "Requests in progress across all workers.",
    ),
    (
        "Upstream latency p95 by mode",
        "timeseries",
        "s",
        [("mode:claude_api_duration_seconds:p95", "{{mode}}")],
        [(45, "orange")],
        "Model API latency per optimization mode.",
    ),
    (
        "Upstream calls by mode and status",
        "timeseries",
        "reqps",
        [("sum by (mode, status) (rate(claude_api_calls_total[1m]))", "{{mode}} {{status}}")],
        [],
        "Every attempt at the model API, including retries.",
    ),
    (
        "Circuit breaker",
        "stat",
        "short",
        [("max by (circuit) (circuit_breaker_state)", "{{circuit}}")],
        [(0, "green"), (1, "red"), (2, "orange")],
        "0 closed, 1 open, 2 half-open (worst worker).",
    ),
    (
        "Memory (all workers)",
        "timeseries",
        "bytes",
        [("sum(process_worker_rss_bytes)", "RSS total")],
        [(1073741824, "orange"), (2147483648, "red")],
        "Resident memory summed over the gunicorn workers.",
    ),
    (
        "CPU (average worker)",
        "timeseries",
        "percentunit",
        [("job:worker_cpu:ratio5m", "CPU")],
        [(0.8, "orange")],
        "CPU time per second per worker; one worker per core.",
    ),
    (
        "Tokens per hour by mode",
        "timeseries",
        "short",
        [("sum by (mode, type) (rate(claude_tokens_total[5m])) * 3600", "{{mode}} {{type}}")],
        [],
        "Input and output tokens the upstream reported.",
    ),
    (
        "Coalescing rate",
        "stat",
        "percentunit",
        [("job:coalescing:ratio5m", "coalesced")],
        [],
        "Share of cache misses answered by an identical request already in flight.",
    ),
    (
        "Gateway overhead p95",
        "stat",
        "s",
        [("job:gateway_overhead_seconds:p95", "p95")],
        [(0, "green"), (0.01, "orange"), (0.05, "red")],
        "Time in our own code per request, upstream time excluded.",
    ),
    (
        "Upstream calls avoided",
        "stat",
        "percentunit",
        [("job:upstream_calls_avoided:ratio5m", "avoided")],
        [(0, "red"), (0.3, "orange"), (0.6, "green")],
        "Requests answered without a model call (cache + coalescing).",
    ),
    (
        "Upstream retries",
        "timeseries",
        "ops",
        [
            ("sum(rate(upstream_retries_total[5m])) or vector(0)", "retries/s"),
            ("job:upstream_retries:ratio5m", "ratio"),
        ],
        [],
        "Attempts retried after connection errors, 429, 5xx or 529.",
    ),
    (
        "Rate-limited requests",
        "timeseries",
        "reqps",
        [("sum(rate(rate_limited_requests_total[5m])) or vector(0)", "429/s")],
        [],
        "Requests refused by RATE_LIMIT.",
    ),
    (
        "GraphQL operations",
        "timeseries",
        "ops",
        [("sum by (field, status) (rate(graphql_operations_total[5m]))", "{{field}} {{status}}")],
        [],
        "Operations run through /graphql, by Query field and the HTTP status each outcome maps to "
        "(a request of several operations counts each).",
    ),
    (
        "Stale answers served",
        "timeseries",
        "reqps",
        [("sum(rate(stale_responses_total[5m])) or vector(0)", "stale/s")],
        [(0.001, "orange")],
        "Expired answers served because the upstream failed (stale-if-error).",
    ),
    (
        "Cost per hour",
        "stat",
        "currencyUSD",
        [("job:claude_cost_usd:per_hour", "USD/h")],
        [(0, "green"), (10, "red")],
        "Estimated from tokens and the per-model price table.",
    ),
    (
        "Cache bytes vs limit",
        "timeseries",
        "bytes",
        [
            ("sum(cache_bytes)", "l1 used"),
            ("sum(cache_max_bytes)", "l1 limit"),
            ("max(cache_disk_bytes)", "disk used"),
        ],
        [],
        "L1 bytes held, summed over workers; the on-machine disk tier's bytes (one per machine).",
    ),
    (
        "Memory per worker",
        "timeseries",
        "bytes",
        [("process_worker_rss_bytes", "pid {{pid}}")],
        [(1073741824, "orange")],
        "Resident memory of each gunicorn worker.",
    ),
    (
        "Stream time to first text",
        "timeseries",
        "s",
        [("job:stream_ttft_seconds:p50", "p50"), ("job:stream_ttft_seconds:p95", "p95")],
        [(10, "red")],
        "From a stream's start to its first delta (/api/optimize-stream); alert StreamFirstTextSlow at p95 > 10 s.",
    ),
    (
        "Stream TTFT added by the service (p95)",
        "timeseries",
        "s",
        [("job:stream_ttft_overhead_seconds:p95", "p95")],
        [(0.05, "orange")],
        "Time to first text minus the upstream's own: our share of the wait.",
    ),
    (
        "Active streams",
        "stat",
        "short",
        [("sum(streams_active)", "streams")],
        [],
        "Upstream streams in progress, all workers.",
    ),
    (
        "Stream outcomes",
        "timeseries",
        "ops",
        [("outcome:streams_finished:rate5m", "{{outcome}}")],
        [],
        "Streams completed, failed, and cancelled because nobody followed them any more.",
    ),
    (
        "Jobs queued by priority",
        "timeseries",
        "short",
        [("max by (priority) (jobs_queued)", "{{priority}}"), ("max(jobs_running)", "running")],
        [],
        "Jobs waiting for a runner, by priority, and jobs running (/api/jobs; the store's figures).",
    ),
    (
        "Job wait p95 by priority",
        "timeseries",
        "s",
        [("priority:job_wait_seconds:p95", "{{priority}}"), ("max(jobs_oldest_queued_age_seconds)", "oldest queued")],
        [(600, "red")],
        "From submission to start, by priority (high < normal < low under load); alert JobQueueStalled past 10 min.",
    ),
    (
        "Job outcomes",
        "timeseries",
        "ops",
        [("outcome:jobs_finished:rate5m", "{{outcome}}")],
        [],
        "Jobs succeeded, failed, cancelled, or answered from the cache at submission; alert JobFailureRatioHigh.",
    ),
    (
        "Upstream slots in use / 429 backoff",
        "timeseries",
        "short",
        [("sum(upstream_slots_in_use)", "slots in use"), ("max(upstream_backoff_active)", "429 pause (1 = on)")],
        [],
        "Model calls in flight (UPSTREAM_MAX_CONCURRENCY bounds them), and whether a 429's Retry-After holds new ones.",
    ),
    (
        "Tokens and cost by key",
        "timeseries",
        "short",
        [
            ("sum by (key) (rate(key_tokens_total[5m])) * 60", "tokens/min: {{key}}"),
            ("sum by (key) (rate(key_cost_usd_total[5m])) * 3600", "USD/hour: {{key}}"),
        ],
        [],
        "Model tokens per minute and estimated cost per hour for each API key (by name; none: no key); "
        "alert KeyBudgetNearlySpent when a key passes 80 % of a budget.",
    ),
    (
        "Redis errors",
        "stat",
        "short",
        [("sum(increase(redis_errors_total[5m])) or vector(0)", "errors (5m)")],
        [(0, "green"), (1, "orange")],
        "Redis operations that failed; the service answers without Redis meanwhile.",
    ),
]


# Each anomaly alert's signal drawn inside its band (prometheus/rules/anomaly.yml).
BANDS = [
    ("p95 latency", "s", "job:http_request_duration_seconds:p95", "latency_p95", "LatencyAnomaly"),
    ("cache hit ratio", "percentunit", "job:cache_hit:ratio5m", "cache_hit_ratio", "CacheHitRatioAnomaly"),
    ("5xx ratio", "percentunit", "job:http_errors_5xx:ratio5m", "error_ratio", "ErrorRatioAnomaly"),
    ("upstream calls / min", "short", "job:claude_api_calls:per_minute", "upstream_calls", "UpstreamCallsAnomaly"),
    ("cost / min", "currencyUSD", "job:claude_cost_usd:per_minute", "cost", "CostAnomaly"),
]
PANELS += [
    (
        f"Anomaly band: {title}",
        "timeseries",
        unit,
        [(signal, title), (f"job:{name}:band_upper", "band upper"), (f"job:{name}:band_lower", "band lower")],
        [],
        f"{title} against its band: the mean of the 6 h before the last 15 min ± max(3 sd, a floor); "
        f"{alert} fires after 10 min outside it.",
    )
    for title, unit, signal, name, alert in BANDS
]


def panel(index: int, spec: tuple[Any, ...]) -> dict[str, Any]:
    title, kind, unit, targets, thresholds, description = spec
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in thresholds if v != 0]
    if thresholds and thresholds[0][0] == 0:
        steps[0]["color"] = thresholds[0][1]
    width, height = (6, 6) if kind == "stat" else (12, 8)
    return {
        "id": index + 1,
        "title": title,
        "description": description,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": 0, "y": index * 8},
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
                **({"custom": {"thresholdsStyle": {"mode": "line"}}} if kind == "timeseries" and thresholds else {}),
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
        "targets": [
            {"refId": chr(65 + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def _layout(panels: list[dict[str, Any]]) -> None:
    # Flow left to right on a 24-column grid.
    x = y = row_height = 0
    for p in panels:
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        p["gridPos"].update(x=x, y=y)
        x += w
        row_height = max(row_height, h)


def build() -> dict[str, Any]:
    panels = [panel(i, spec) for i, spec in enumerate(PANELS)]
    _layout(panels)
    return {
        "uid": "prompt-builder-api",
        "title": "Prompt Builder API",
        "tags": ["prompt-builder", "llm"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
