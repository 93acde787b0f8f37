"""Write promtool unit tests for the anomaly alerts (prometheus/rules/anomaly.yml): traffic of
realistic shapes, minute by minute, with seeded noise — a daily cycle and a traffic ramp that must
fire no anomaly alert, and injected faults (a hit-ratio collapse, a latency step, an error step,
a cost surge, a surge of distinct prompts) that must each fire theirs, and not before.

    python prometheus/tests/build_anomaly_tests.py [OUTPUT]   # default prometheus/tests/anomaly_test.yml
    promtool test rules prometheus/tests/anomaly_test.yml

The file is generated (about 130 KB of series), not kept: tests/integration/test_monitoring.py
writes it to a temporary directory and runs promtool on it.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "rules"
ALERTS = ("LatencyAnomaly", "CacheHitRatioAnomaly", "ErrorRatioAnomaly", "UpstreamCallsAnomaly", "CostAnomaly")
BUCKETS = (0.1, 0.5, 1.0, 5.0)  # seconds; +Inf added. 90 % of requests are fast, 10 % take `slow`


@dataclass(frozen=True)
class Minute:
    """What one minute of traffic looks like."""

    rps: float = 20.0  # requests per second
    hit: float = 0.7  # cache hit ratio
    errors: float = 0.002  # 5xx ratio
    slow: float = 0.4  # seconds the slowest 10 % take (p95 lands in its bucket)
    cost: float = 0.004  # USD per model call


Shape = Callable[[int], Minute]  # minute -> traffic


def calm(minute: int) -> Minute:
    return Minute()


def daily_cycle(minute: int) -> Minute:
    """The morning of a day: from 2 h after the night's trough, 8 h up through the steepest rise
    (traffic x4 trough to peak); more repeats at busy hours lift the hit ratio a little."""
    phase = math.sin(2 * math.pi * ((minute + 120) / 1440) - math.pi / 2)  # -1 at the trough, +1 12 h later
    return Minute(rps=20 * (1 + 0.6 * phase), hit=0.7 + 0.05 * phase)


def ramp(minute: int) -> Minute:
    """Flat for 90 min, then traffic doubles over 2 h (a launch, a new client), then holds."""
    grown = min(max(minute - 90, 0) / 120, 1.0)
    return Minute(rps=20 * (1 + grown))


def after(start: int, fault: Callable[[Minute], Minute]) -> Shape:
    return lambda minute: fault(Minute()) if minute >= start else Minute()


FAULT_AT = 150  # 2.5 h of ordinary traffic first
# name: (shape, minutes, alerts that must fire at FAULT_AT + 20 min, silent before the fault)
SCENARIOS: dict[str, tuple[Shape, int, tuple[str, ...]]] = {
    "daily cycle": (daily_cycle, 8 * 60, ()),
    "traffic ramp": (ramp, 4 * 60, ()),
    "hit ratio collapse": (
        after(FAULT_AT, lambda m: replace(m, hit=0.2)),
        FAULT_AT + 20,
        ("CacheHitRatioAnomaly", "UpstreamCallsAnomaly", "CostAnomaly"),  # misses cost calls
    ),
    "latency step": (after(FAULT_AT, lambda m: replace(m, slow=4.0)), FAULT_AT + 20, ("LatencyAnomaly",)),
    "error step": (after(FAULT_AT, lambda m: replace(m, errors=0.08)), FAULT_AT + 20, ("ErrorRatioAnomaly",)),
    "cost surge": (after(FAULT_AT, lambda m: replace(m, cost=0.02)), FAULT_AT + 20, ("CostAnomaly",)),
    "distinct prompts surge": (
        after(FAULT_AT, lambda m: replace(m, rps=40, hit=0.35)),  # as many hits, 2.2x the misses
        FAULT_AT + 20,
        ("CacheHitRatioAnomaly", "UpstreamCallsAnomaly", "CostAnomaly"),
    ),
}


def series(shape: Shape, minutes: int, seed: int) -> dict[str, str]:
    """The counters a scrape would see each minute, with ±5 % noise on traffic and ±0.02 on the
    hit ratio: {series: 'v0 v1 ...'}."""
    noise = random.Random(seed)
    totals: dict[str, float] = {}
    values: dict[str, list[str]] = {}

    def add(name: str, amount: float) -> None:
        totals[name] = totals.get(name, 0.0) + amount

    for minute in range(minutes + 1):
        if minute:
            m = shape(minute)
            requests = m.rps * 60 * (1 + 0.05 * noise.uniform(-1, 1))
            hit = min(max(m.hit + 0.02 * noise.uniform(-1, 1), 0.0), 1.0)
            misses = requests * (1 - hit)
            add('http_requests_total{status="200"}', requests * (1 - m.errors))
            add('http_requests_total{status="500"}', requests * m.errors)
            for le in BUCKETS:
                add(f'http_request_duration_seconds_bucket{{le="{le}"}}', requests * (0.9 + 0.1 * (m.slow <= le)))
            add('http_request_duration_seconds_bucket{le="+Inf"}', requests)
            add("cache_hits_total", requests * hit)
            add("cache_misses_total", misses)
            add('claude_api_calls_total{status="success"}', misses)
            add("claude_cost_usd_total", misses * m.cost)
        else:
            for name in _NAMES:
                totals[name] = 0.0
        for name, total in totals.items():
            values.setdefault(name, []).append(f"{total:.6g}" if "cost" in name else str(round(total)))
    return {name: " ".join(found) for name, found in values.items()}


_NAMES = (
    'http_requests_total{status="200"}',
    'http_requests_total{status="500"}',
    *(f'http_request_duration_seconds_bucket{{le="{le}"}}' for le in BUCKETS),
    'http_request_duration_seconds_bucket{le="+Inf"}',
    "cache_hits_total",
    "cache_misses_total",
    'claude_api_calls_total{status="success"}',
    "claude_cost_usd_total",
)


def anomaly_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((RULES / "anomaly.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def _expected(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}]


def build() -> dict[str, Any]:
    rules = anomaly_rules()
    if set(rules) != set(ALERTS):
        raise SystemExit(f"anomaly alerts and ALERTS differ: {sorted(set(rules) ^ set(ALERTS))}")
    tests = []
    for seed, (name, (shape, minutes, firing)) in enumerate(SCENARIOS.items()):
        checks = []
        if firing:  # silent until the fault, then exactly the expected alerts
            for alert in ALERTS:
                checks.append({"eval_time": f"{FAULT_AT - 1}m", "alertname": alert, "exp_alerts": []})
                expected = _expected(rules[alert]) if alert in firing else []
                checks.append({"eval_time": f"{FAULT_AT + 20}m", "alertname": alert, "exp_alerts": expected})
        else:  # silent throughout: checked every half hour once an hour of history exists
            checks += [
                {"eval_time": f"{at}m", "alertname": alert, "exp_alerts": []}
                for at in range(60, minutes + 1, 30)
                for alert in ALERTS
            ]
        tests.append(
            {
                "name": name,
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series(shape, minutes, seed).items()],
                "alert_rule_test": checks,
            }
        )
    return {
        "rule_files": [str(RULES / "recording.yml"), str(RULES / "anomaly.yml")],
        "evaluation_interval": "1m",
        "tests": tests,
    }


def render() -> str:
    header = "# Generated by build_anomaly_tests.py: edit the scenarios there.\n"
    return header + yaml.safe_dump(build(), sort_keys=False, width=120)


if __name__ == "__main__":
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "anomaly_test.yml"
    output.write_text(render())
    print(f"wrote {output}")
