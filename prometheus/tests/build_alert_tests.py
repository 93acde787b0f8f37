"""Write prometheus/tests/alerts_test.yml: for every alert, series that keep it silent at first and
make it fire later, checked by `promtool test rules`. Annotations are copied from the rules file,
so the unit tests state them exactly. Run after editing an alert:

    python prometheus/tests/build_alert_tests.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "rules"
OUTPUT = HERE / "alerts_test.yml"

# alert: (input series {series: values}, silent at, firing at, extra labels on the alert)
# Values use promtool's expanding notation: 'a+bxN' = N+1 samples from a stepping by b, one a minute.
SCENARIOS: dict[str, tuple[dict[str, str], str, str, dict[str, str]]] = {
    "KeyBudgetNearlySpent": (
        {'key_budget_used_ratio{key="alice",budget="tokens_per_day"}': "0.1+0.1x10"},
        "5m",
        "10m",
        {"key": "alice", "budget": "tokens_per_day"},
    ),
    "JobQueueStalled": (
        {"jobs_oldest_queued_age_seconds": "0x10 0+60x30"},
        "10m",
        "30m",
        {},
    ),
    "JobFailureRatioHigh": (
        {
            'jobs_finished_total{outcome="succeeded"}': "0+100x60",
            'jobs_finished_total{outcome="failed"}': "0x20 0+30x40",
        },
        "15m",
        "50m",
        {},
    ),
    "HighLatencyP95": (
        {
            'http_request_duration_seconds_bucket{le="1"}': "0+60x10 600x30",
            'http_request_duration_seconds_bucket{le="20"}': "0+60x40",
            'http_request_duration_seconds_bucket{le="+Inf"}': "0+60x40",
        },
        "5m",
        "25m",
        {},
    ),
    "VeryHighLatencyP95": (
        {
            'http_request_duration_seconds_bucket{le="1"}': "0+60x10 600x30",
            'http_request_duration_seconds_bucket{le="60"}': "0+60x40",
            'http_request_duration_seconds_bucket{le="+Inf"}': "0+60x40",
        },
        "5m",
        "25m",
        {},
    ),
    "HighErrorRate": (
        {
            'http_requests_total{status="200"}': "0+100x40",
            'http_requests_total{status="502"}': "0x10 0+10x30",
        },
        "5m",
        "25m",
        {},
    ),
    "VeryHighErrorRate": (
        {
            'http_requests_total{status="200"}': "0+100x40",
            'http_requests_total{status="502"}': "0x10 0+50x30",
        },
        "5m",
        "25m",
        {},
    ),
    "CircuitBreakerOpen": (
        {'circuit_breaker_state{circuit="anthropic"}': "0x10 1x30"},
        "5m",
        "15m",
        {"circuit": "anthropic"},
    ),
    "ClaudeAPIErrorRate": (
        {
            'claude_api_calls_total{status="success"}': "0+100x40",
            'claude_api_calls_total{status="529"}': "0x10 0+20x30",
        },
        "5m",
        "25m",
        {},
    ),
    "ClaudeAPISlow": (
        {
            'claude_api_duration_seconds_bucket{le="10"}': "0+10x10 100x30",
            'claude_api_duration_seconds_bucket{le="60"}': "0+10x40",
            'claude_api_duration_seconds_bucket{le="+Inf"}': "0+10x40",
        },
        "5m",
        "25m",
        {},
    ),
    "StreamFirstTextSlow": (
        {
            'stream_ttft_seconds_bucket{le="5"}': "0+10x10 100x30",
            'stream_ttft_seconds_bucket{le="20"}': "0+10x40",
            'stream_ttft_seconds_bucket{le="+Inf"}': "0+10x40",
        },
        "5m",
        "25m",
        {},
    ),
    "LowCacheHitRate": (
        {
            "cache_hits_total": "0+50x10 500+20x40",
            "cache_misses_total": "0+50x10 500+80x40",
            'http_requests_total{status="200"}': "0+100x50",
        },
        "5m",
        "40m",
        {},
    ),
    "VeryLowCacheHitRate": (
        {
            "cache_hits_total": "0+50x10 500+5x40",
            "cache_misses_total": "0+50x10 500+95x40",
            'http_requests_total{status="200"}': "0+100x50",
        },
        "5m",
        "40m",
        {},
    ),
    "HighMemoryUsage": ({'process_worker_rss_bytes{pid="101"}': "100000000x10 1500000000x30"}, "5m", "20m", {}),
    "VeryHighMemoryUsage": ({'process_worker_rss_bytes{pid="101"}': "100000000x10 3000000000x30"}, "5m", "20m", {}),
    "HighCPUUsage": (
        {
            "process_worker_cpu_seconds_total": "0+6x10 60+54x40",
            'process_worker_start_time_seconds{pid="101"}': "1x50",
        },
        "5m",
        "35m",
        {},
    ),
    "HighConcurrentRequests": ({"http_active_requests": "5x10 150x30"}, "5m", "20m", {}),
    "ServiceDown": (
        {'up{job="prompt-builder-api", instance="api:3001"}': "1x10 0x10"},
        "5m",
        "15m",
        {"job": "prompt-builder-api", "instance": "api:3001"},
    ),
    "HighRequestRate": ({'http_requests_total{status="200"}': "0+6000x10 60000+120000x30"}, "5m", "25m", {}),
    "UpstreamRetrySurge": (
        {
            'claude_api_calls_total{status="success"}': "0+100x50",
            'upstream_retries_total{reason="529"}': "0x10 0+30x40",
        },
        "5m",
        "35m",
        {},
    ),
    "RateLimitSurge": (
        {
            'http_requests_total{status="200"}': "0+100x50",
            'http_requests_total{status="429"}': "0x10 0+20x40",
            'rate_limited_requests_total{endpoint="optimize.optimize"}': "0x10 0+20x40",
        },
        "5m",
        "35m",
        {},
    ),
    "CostBurnHigh": ({"claude_cost_usd_total": "0+0.01x10 0.1+1x40"}, "5m", "40m", {}),
    "ServingStaleAnswers": ({'stale_responses_total{cache_type="optimize"}': "0x10 0+5x30"}, "5m", "20m", {}),
    "RedisUnavailable": ({"redis_errors_total": "0x10 0+3x30"}, "5m", "15m", {}),
}


def alert_rules() -> dict[str, dict[str, Any]]:
    """Return every alert rule in the rules file, by name."""
    groups = yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def build() -> dict[str, Any]:
    rules = alert_rules()
    missing = set(rules) ^ set(SCENARIOS)
    if missing:
        raise SystemExit(f"alerts and scenarios differ: {sorted(missing)}")
    tests = []
    for name, (series, silent_at, firing_at, labels) in SCENARIOS.items():
        rule = rules[name]
        tests.append(
            {
                "name": name,
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": silent_at, "alertname": name, "exp_alerts": []},
                    {
                        "eval_time": firing_at,
                        "alertname": name,
                        "exp_alerts": [
                            {
                                "exp_labels": {**rule["labels"], **labels},
                                "exp_annotations": rule["annotations"],
                            }
                        ],
                    },
                ],
            }
        )
    return {
        "rule_files": ["../rules/recording.yml", "../rules/alerts.yml"],
        "evaluation_interval": "1m",
        "tests": tests,
    }


def render() -> str:
    header = "# Generated by build_alert_tests.py from rules/alerts.yml: edit the scenarios there.\n"
    return header + yaml.safe_dump(build(), sort_keys=False, width=120)


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
