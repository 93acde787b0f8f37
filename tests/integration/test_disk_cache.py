"""The on-machine cache tier on a real gunicorn with 2 workers and no Redis (as `make run` runs):
one model call per distinct prompt whichever worker answers, answers kept across a restart, and
each worker's L1 warmed from disk at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.support import FakeUpstreamProcess, metric_total, provider_env, start_server

pytestmark = pytest.mark.integration


def _post(url: str, body: dict) -> requests.Response:
    # A new connection each time: gunicorn's workers take turns, as callers behind nginx see them.
    response = requests.post(url + "/api/optimize", json=body, headers={"Connection": "close"}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return response


def _hits(url: str, tier: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cache_hits_total" and sample.labels.get("tier") == tier
    )


def test_one_machine_pays_once_per_prompt_and_keeps_answers_across_restarts(
    fake_upstream: FakeUpstreamProcess, tmp_path: Path
) -> None:
    env = {**provider_env("anthropic", fake_upstream), "CACHE_DIR": str(tmp_path / "cache")}
    bodies = [{"prompt": f"one machine, one cache: prompt {i}", "mode": "code"} for i in range(20)]
    with start_server(env, workers=2) as server:  # as `make run` runs: 2 workers, no Redis
        statuses = [_post(server.url, bodies[0]).headers["X-Cache"] for _ in range(10)]
        assert statuses == ["MISS"] + ["HIT"] * 9  # whichever worker answers
        assert fake_upstream.calls() == 1
        for body in bodies[1:]:
            _post(server.url, body)
        assert fake_upstream.calls() == 20

    with start_server(env, workers=2) as server:  # a restart: every deploy does this
        warm = requests.get(server.url + "/health/ready", timeout=10).json()["checks"]["cacheWarm"]
        answers = [_post(server.url, bodies[i % 20]) for i in range(100)]
        assert {a.headers["X-Cache"] for a in answers} == {"HIT"}
        assert fake_upstream.calls() == 20  # nothing paid twice
        # Each worker warmed its L1 from disk at start: the first 100 repeated requests are L1 hits.
        assert (_hits(server.url, "l1"), _hits(server.url, "disk")) == (100, 0)
        assert warm["entries"] == 20
        print(f"\nrestart: each worker warmed 20 answers in {warm['seconds'] * 1000:.1f} ms; 100 requests, 100 L1 hits")


def test_a_worker_without_the_answer_in_l1_reads_the_others_from_disk(
    fake_upstream: FakeUpstreamProcess, tmp_path: Path
) -> None:
    """Two processes on one cache directory (two workers of one machine: which one accepts a
    connection is the kernel's choice, so two single-worker servers stand in for them)."""
    env = {**provider_env("anthropic", fake_upstream), "CACHE_DIR": str(tmp_path / "cache")}
    body = {"prompt": "written by one process, read by another", "mode": "research"}
    with start_server(env, workers=1) as one, start_server(env, workers=1) as two:
        assert _post(one.url, body).headers["X-Cache"] == "MISS"
        assert _post(two.url, body).headers["X-Cache"] == "HIT"
        assert (_hits(two.url, "disk"), _hits(two.url, "l1")) == (1, 0)
        assert _post(two.url, body).headers["X-Cache"] == "HIT"
        assert _hits(two.url, "l1") == 1  # copied into its L1 on the way
        assert fake_upstream.calls() == 1
        stats = requests.get(two.url + "/stats", timeout=10).json()["cache"]
        assert stats["hitsByTier"]["disk"] == 1 and stats["disk"]["errors"] == 0
        assert metric_total([one.url], "cache_disk_entries") == 1  # reported by the writer
