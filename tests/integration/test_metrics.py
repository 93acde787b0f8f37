"""Metrics across 2 gunicorn workers are true for the whole server; /stats agrees with /metrics."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import FakeUpstreamProcess, Server, held_burst, start_server, wait_until

pytestmark = pytest.mark.integration

WORKERS = 2


def scrape(server: Server) -> dict[str, list[tuple[dict[str, str], float]]]:
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(requests.get(server.url + "/metrics", timeout=5).text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def _fresh(url: str, path: str, body: dict) -> requests.Response:
    # A new connection per request, so the kernel spreads them over both workers.
    return requests.post(url + path, json=body, headers={"Connection": "close"}, timeout=10)


@pytest.fixture(scope="module")
def server(_fake_upstream_process: FakeUpstreamProcess) -> Iterator[Server]:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ANTHROPIC_BASE_URL": _fake_upstream_process.url,
        "LLM_MODEL": "claude-sonnet-4-5",
        "LOG_LEVEL": "INFO",
    }
    with start_server(env, workers=WORKERS) as server:
        wait_until(
            lambda: requests.get(server.url + "/stats", timeout=5).json()["workers"] == WORKERS,
            what="both workers to report",
        )
        yield server


def test_counts_are_summed_over_workers(server: Server, fake_upstream: FakeUpstreamProcess) -> None:
    before = scrape(server)
    prompts = [f"metrics prompt {i}" for i in range(10)]
    statuses = Counter()
    for _ in range(4):
        for prompt in prompts:
            response = _fresh(server.url, "/api/optimize", {"prompt": prompt, "mode": "research"})
            statuses[response.headers["X-Cache"]] += 1
    bad = [_fresh(server.url, "/api/optimize", {"prompt": "x", "mode": "nope"}) for _ in range(3)]
    assert {r.status_code for r in bad} == {400}
    after = scrape(server)
    pids = (
        {lab["pid"] for lab, _ in after["process_worker_rss_bytes"]} if "process_worker_rss_bytes" in after else set()
    )

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    upstream = fake_upstream.stats()
    assert delta("http_requests_total", endpoint="optimize.optimize") == 43
    assert delta("http_requests_total", endpoint="optimize.optimize", status="400") == 3
    assert delta("cache_hits_total", cache_type="optimize") == statuses["HIT"]
    assert delta("cache_misses_total", cache_type="optimize") == statuses["MISS"] == upstream["total"]
    assert 10 <= upstream["total"] <= 10 * WORKERS
    assert delta("claude_tokens_total", type="input") == upstream["tokens"]["input"]
    assert delta("claude_tokens_total", type="output") == upstream["tokens"]["output"]
    assert delta("claude_api_calls_total", status="success") == upstream["total"]
    expected_cost = (upstream["tokens"]["input"] * 3 + upstream["tokens"]["output"] * 15) / 1e6
    assert delta("claude_cost_usd_total") == pytest.approx(expected_cost)
    assert total(after, "http_request_duration_seconds_count", endpoint="optimize.optimize") >= 43
    assert total(after, "cache_entries") == upstream["total"]  # live sum over both workers
    print(f"\nworkers seen in /metrics: {sorted(pids)}; X-Cache {dict(statuses)}; upstream calls {upstream['total']}")


def test_coalescing_counters_match_what_callers_saw(server: Server, fake_upstream: FakeUpstreamProcess) -> None:
    before = scrape(server)
    body = {"prompt": "metrics coalescing burst", "mode": "code"}
    responses, parked = held_burst(fake_upstream, [server.url], lambda _: _fresh(server.url, "/api/optimize", body), 30)
    after = scrape(server)
    seen = Counter(r.headers["X-Cache"] for r in responses)
    coalesced = total(after, "coalesced_requests_total") - total(before, "coalesced_requests_total")
    assert coalesced == seen["COALESCED"] == 30 - parked
    assert fake_upstream.calls() == seen["MISS"] == parked
    assert total(after, "coalescing_waiting_requests") == 0  # nobody is left waiting


def test_stats_agrees_with_metrics(server: Server) -> None:
    _fresh(server.url, "/api/generate-questions", {"prompt": "stats check"})
    samples = scrape(server)
    stats = requests.get(server.url + "/stats", timeout=5).json()
    assert stats["workers"] == WORKERS
    assert stats["cache"]["hits"] == total(samples, "cache_hits_total")
    assert stats["cache"]["misses"] == total(samples, "cache_misses_total")
    assert stats["cache"]["entries"] == total(samples, "cache_entries")
    assert stats["cache"]["bytes"] == total(samples, "cache_bytes")
    assert stats["cache"]["maxBytes"] == WORKERS * 500 * 1024 * 1024
    assert stats["upstream"]["tokens"]["input"] == total(samples, "claude_tokens_total", type="input")
    assert stats["upstream"]["calls"]["success"] == total(samples, "claude_api_calls_total", status="success")
    assert stats["coalescing"]["coalesced"] == total(samples, "coalesced_requests_total")
    low, high = stats["upstream"]["p95LatencyBucketMs"]
    assert low <= stats["upstream"]["p95LatencyMsEstimate"] <= high and high > 0
    assert stats["upstream"]["costUsd"] == pytest.approx(total(samples, "claude_cost_usd_total"), abs=1e-6)
    assert len(stats["memory"]["rssBytesPerWorker"]) == WORKERS
    assert stats["memory"]["rssBytesTotal"] > 0


def test_the_access_log_is_a_trace_the_replayer_reads(server: Server, tmp_path: Path) -> None:
    """Each answer's line names its request by a digest (never the prompt), with its mode and
    sizes: `python -m loadtest.traces from-log` turns a real server's log into a trace, and the
    replayer finds in it the repeats that were sent."""
    from loadtest.replay import replay
    from loadtest.traces import from_access_log

    tag = f"trace-{time.time_ns()}"
    sent = [
        ("/api/optimize", {"prompt": f"{tag} a", "mode": "video"}),
        ("/api/optimize", {"prompt": f"{tag} b", "mode": "code"}),
        ("/api/optimize", {"prompt": f"{tag} a", "mode": "video"}),
        ("/api/generate-questions", {"prompt": f"{tag} c"}),
        ("/api/optimize", {"prompt": f"{tag} b", "mode": "code"}),
        ("/api/optimize", {"prompt": f"{tag} a", "mode": "video"}),
    ]
    ids = []
    for path, body in sent:
        answer = requests.post(server.url + path, json=body, timeout=30)
        assert answer.status_code == 200
        ids.append(answer.headers["X-Request-ID"])

    def ours() -> list[str]:
        lines = [line for line in server.output().splitlines() if any(i in line for i in ids)]
        return lines if len(lines) == len(ids) else []

    lines = wait_until(ours, what="the six access lines")
    assert f"{tag} a" not in server.output()  # a digest, never the prompt
    trace = from_access_log(lines)
    assert [(r.endpoint, r.mode) for r in trace] == [
        ("optimize", "video"), ("optimize", "code"), ("optimize", "video"),
        ("generate-questions", ""), ("optimize", "code"), ("optimize", "video"),
    ]  # fmt: skip
    keys = [r.key for r in trace]
    assert keys[0] == keys[2] == keys[5] and keys[1] == keys[4] and len(set(keys)) == 3
    assert all(r.size > 0 and r.answer > 0 for r in trace)
    assert replay(trace, "lru", 10**9, 100, ttl=3600).hits == 3  # one cache: each repeat a hit


def test_metric_labels_are_route_names_not_paths(server: Server) -> None:
    for path in ("/api/x1", "/api/x2", "/whatever/123"):
        requests.get(server.url + path, timeout=5)
    endpoints = {lab.get("endpoint") for lab, _ in scrape(server)["http_requests_total"]}
    assert not any(e and e.startswith("/") for e in endpoints)
    assert "none" in endpoints


def test_one_json_log_line_per_request_without_prompts(server: Server) -> None:
    secret_prompt = "a prompt that must never reach the logs 7f3a"
    response = _fresh(server.url, "/api/optimize", {"prompt": secret_prompt, "mode": "text"})
    request_id = response.headers["X-Request-ID"]

    def logged() -> list[dict]:
        return [
            json.loads(line) for line in server.output().splitlines() if request_id in line and line.startswith("{")
        ]

    lines = wait_until(logged, what="the access log line")
    output = server.output()
    assert secret_prompt not in output
    assert "sk-ant-test" not in output
    assert len(lines) == 1
    entry = lines[0]
    assert entry["status"] == 200 and entry["endpoint"] == "optimize.optimize" and entry["cache"] == "MISS"
    assert entry["model"] == "claude-sonnet-4-5" and entry["input_tokens"] > 0 and entry["upstream_ms"] > 0
    timing = response.headers["Server-Timing"]
    assert "total;dur=" in timing and "upstream;dur=" in timing and "cache;dur=" in timing
