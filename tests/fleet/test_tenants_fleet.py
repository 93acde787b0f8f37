"""Tenants across a fleet: a key's budget holds when many of its large requests arrive at once
over two instances sharing Redis, with Redis stalling mid-burst (the overshoot the issue asks to
measure)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.support import FakeUpstreamProcess, provider_env, redis_env, start_server, wait_until

pytestmark = pytest.mark.integration

ALICE = {"X-API-Key": "alice-secret"}


def _post(url: str, path: str, body: dict[str, Any], key: dict[str, str]) -> requests.Response:
    return requests.post(url + path, json=body, headers={**key, "Connection": "close"}, timeout=60)


def _burst(urls: list[str], fake: FakeUpstreamProcess, bodies: list[dict[str, Any]], during: Any = None) -> list[Any]:
    """Send every body at once, round-robin over `urls`, the model held until each request is
    refused or waiting at it (`during` runs meanwhile); then let them finish."""
    with fake.hold(), ThreadPoolExecutor(len(bodies)) as pool:
        futures = []
        for i, body in enumerate(bodies):
            futures.append(pool.submit(_post, urls[i % len(urls)], "/api/optimize", body, ALICE))
            if i == len(bodies) // 4 and during is not None:
                during()

        def settled() -> bool:
            answered = sum(1 for f in futures if f.done())
            return answered + fake.held() == len(bodies)

        wait_until(settled, timeout=120, what="each request refused or at the model")
        fake.release()
        return [f.result() for f in futures]


@pytest.mark.parametrize("budget", [3000, 40_000])
def test_a_budget_holds_against_a_burst_of_large_prompts_on_two_instances(
    fake_upstream: FakeUpstreamProcess, redis_url: str, tmp_path: Path, budget: int
) -> None:
    """Alice sends 200 distinct 10 KB prompts at once over two instances of two workers sharing
    Redis, with Redis stalled for a moment mid-burst. Each call
    reserves its input (counted from its text) plus its output cap, so what is spent stays within
    the budget; a stalled Redis refuses (503 + Retry-After), never admits; no reservation is left
    behind or below zero."""
    prefix = f"burst{budget}:"
    base = {**provider_env("anthropic", fake_upstream), **redis_env(redis_url), "RATE_LIMIT": ""}
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.alice]\nsecret = "alice-secret"\ntokens_per_day = {budget}\n')
    # A stall longer than the socket timeout: Redis cannot answer for a while mid-burst.
    env = {**base, "API_KEYS_FILE": str(keys), "REDIS_PREFIX": prefix, "REDIS_SOCKET_TIMEOUT": "1"}
    client = redis.Redis.from_url(redis_url)
    with start_server(env, workers=2) as one, start_server(env, workers=2) as two:
        large = [{"prompt": f"{i:03d} " + "lorem ipsum " * 832, "mode": "code"} for i in range(200)]
        assert all(9_900 <= len(b["prompt"].encode()) <= 10_000 for b in large)  # 10 KB, the longest prompt allowed
        answers = _burst(
            [one.url, two.url], fake_upstream, large, during=lambda: redis.Redis.from_url(redis_url).client_pause(2500)
        )
        if any(a.status_code == 500 for a in answers):
            print(one.output()[-6000:], two.output()[-6000:])
        spent = fake_upstream.stats()["tokens"]

        def counters() -> list[bytes]:
            return [k for k in client.scan_iter(f"{prefix}budget:*") if k.decode().count(":") == 4]

        def used() -> float:
            return sum(float(client.hget(k, "used") or 0) for k in counters())

        # Settlements Redis could not take during the stall are written once it answers again.
        wait_until(lambda: used() == pytest.approx(spent["input"] + spent["output"]), what="every use written")
        reserved = [float(client.hget(k, "reserved") or 0) for k in counters()]
    statuses = Counter(a.status_code for a in answers)
    print(
        f"\nbudget {budget} tokens/day, 200 concurrent 10 KB prompts over 2 instances x 2 workers, Redis stalled"
        f" 2.5 s mid-burst: {dict(statuses)}; tokens spent {spent['input'] + spent['output']}"
        f" = {(spent['input'] + spent['output']) / budget:.2f} x the budget"
    )
    assert set(statuses) <= {200, 429, 503}
    assert spent["input"] + spent["output"] <= budget  # every admitted call's bound was reserved
    assert all(abs(r) < 1e-6 for r in reserved)  # nothing left reserved, nothing negative
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"] == "Budget unavailable" and int(answer.headers["Retry-After"]) >= 1
        if answer.status_code == 429:
            assert "tokens_per_day budget" in answer.json()["details"]
