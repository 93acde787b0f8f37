"""Locust load tests mirroring the original's k6 runs, with our cache and coalescing statistics.

    LOADTEST_PROFILE=basic|stress  LOADTEST_TIME_SCALE=1.0  locust -f loadtest/locustfile.py --headless -H URL

basic: ramp 10 -> 20 users over ~3.5 min; health, optimize (5 prompts x modes, with context),
       generate-questions, 20 % the editor's GraphQL panel (three operations), 10 % /metrics;
       think 1-3 s. Thresholds: p95 < 5 s, failures < 10 %,
       hit rate > 30 %.
stress: ramp to 100 then 150 users over 11 min; optimize `reasoning` with 3 prompts; think 0.1 s;
        429 counts as acceptable. Thresholds: p95 < 10 s, failures < 20 %, hit rate > 50 %.
A run that misses a threshold exits non-zero. LOADTEST_TIME_SCALE shrinks every stage (0.05 for
a smoke run in CI).
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from typing import Any

from locust import HttpUser, LoadTestShape, between, constant, events, task

PROFILE = os.environ.get("LOADTEST_PROFILE", "basic")
SCALE = float(os.environ.get("LOADTEST_TIME_SCALE", "1.0"))

PROMPTS = [
    "Explain how transformers handle long documents",
    "Write a migration plan from a monolith to services",
    "Summarise the causes of the 2008 financial crisis",
    "Design a week of beginner strength training",
    "Compare three approaches to caching in web services",
]
MODES = ["reasoning", "research", "socratic", "code", "text", "learning", "optimize"]
STRESS_PROMPTS = PROMPTS[:3]

# (end time in seconds, users, spawn rate) per stage, before scaling
STAGES = {
    "basic": [(30, 10, 2), (90, 10, 2), (120, 20, 2), (180, 20, 2), (210, 0, 5)],
    "stress": [(60, 50, 5), (180, 100, 5), (360, 100, 5), (480, 150, 10), (600, 150, 10), (660, 0, 20)],
}
THRESHOLDS = {
    "basic": {"p95_ms": 5000, "failure_ratio": 0.10, "hit_ratio": 0.30},
    "stress": {"p95_ms": 10000, "failure_ratio": 0.20, "hit_ratio": 0.50},
}

# LOADTEST_THRESHOLDS (JSON) overrides some, e.g. '{"hit_ratio": 0.6}'.
THRESHOLDS[PROFILE].update(json.loads(os.environ.get("LOADTEST_THRESHOLDS") or "{}"))

cache_outcomes: Counter[str] = Counter()


@events.request.add_listener
def _count_cache(response: Any = None, name: str = "", **_: Any) -> None:
    if response is not None and name.startswith("POST /api/"):
        cache_outcomes[response.headers.get("X-Cache", "NONE")] += 1


def _answer(response: Any, allow_429: bool = False) -> None:
    if response.status_code == 200 or (allow_429 and response.status_code == 429):
        response.success()
    else:
        response.failure(f"HTTP {response.status_code}")


class BasicUser(HttpUser):
    """The original basic scenario: a person using the app, thinking between steps."""

    wait_time = between(1, 3)

    @task
    def session(self) -> None:
        self.client.get("/health", name="GET /health")
        prompt, mode = random.choice(PROMPTS), random.choice(MODES)
        body = {
            "prompt": prompt,
            "mode": mode,
            "context": {"backgroundLevel": "intermediate", "intendedUse": "team wiki"},
        }
        with self.client.post("/api/optimize", json=body, name="POST /api/optimize", catch_response=True) as r:
            _answer(r)
        with self.client.post(
            "/api/generate-questions", json={"prompt": prompt}, name="POST /api/generate-questions", catch_response=True
        ) as r:
            _answer(r)
        if random.random() < 0.2:  # the editor's screen: three operations in one GraphQL request
            with self.client.post("/graphql", json=_panel(prompt), name="POST /graphql", catch_response=True) as r:
                _answer(r)
                if r.status_code == 200 and "errors" in r.json():
                    r.failure(f"GraphQL errors: {r.json()['errors'][0]['message']}")
        if random.random() < 0.1:
            self.client.get("/metrics", name="GET /metrics")


PANEL = """query Panel($text: EnhancementInput!, $scene: SceneChangeInput!) {
  enhance: getEnhancementSuggestions(input: $text) { suggestions { text } }
  scene: detectSceneChange(input: $scene) { isSceneChange confidence }
  ideas: getCreativeSuggestions(input: {elementType: mood}) { suggestions { text } }
}"""


def _panel(prompt: str) -> dict[str, Any]:
    text = {"highlightedText": prompt.split()[0], "fullPrompt": prompt}
    scene = {"changedField": "location", "newValue": "a night market", "fullPrompt": prompt}
    return {"query": PANEL, "variables": {"text": text, "scene": scene}}


class StressUser(HttpUser):
    """The original stress scenario: many users hammering one mode with a few prompts."""

    wait_time = constant(0.1)

    @task
    def optimize(self) -> None:
        body = {"prompt": random.choice(STRESS_PROMPTS), "mode": "reasoning"}
        with self.client.post("/api/optimize", json=body, name="POST /api/optimize", catch_response=True) as r:
            _answer(r, allow_429=True)


class StagesShape(LoadTestShape):
    """The profile's stages, each duration multiplied by LOADTEST_TIME_SCALE."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        for end, users, rate in STAGES[PROFILE]:
            if elapsed < end * SCALE:
                return users, rate
        return None


if PROFILE == "stress":
    del BasicUser  # one user class per profile: locust runs every class left in the module
else:
    del StressUser


def summary(environment: Any) -> dict[str, float]:
    """Return the run's figures: p95, failure ratio, cache hit / coalesced / avoided ratios."""
    total = environment.stats.total
    answered = sum(cache_outcomes.values())
    hits, coalesced = cache_outcomes["HIT"], cache_outcomes["COALESCED"]
    return {
        "requests": total.num_requests,
        "p95_ms": total.get_response_time_percentile(0.95) or 0.0,
        "failure_ratio": total.fail_ratio,
        "hit_ratio": hits / answered if answered else 0.0,
        "coalesced_ratio": coalesced / answered if answered else 0.0,
        "upstream_calls_avoided": (hits + coalesced + cache_outcomes["STALE"]) / answered if answered else 0.0,
    }


@events.quitting.add_listener
def _check_thresholds(environment: Any, **_: Any) -> None:
    figures = summary(environment)
    limits = THRESHOLDS[PROFILE]
    missed = []
    if figures["p95_ms"] > limits["p95_ms"]:
        missed.append(f"p95 {figures['p95_ms']:.0f} ms > {limits['p95_ms']} ms")
    if figures["failure_ratio"] > limits["failure_ratio"]:
        missed.append(f"failure ratio {figures['failure_ratio']:.3f} > {limits['failure_ratio']}")
    if figures["hit_ratio"] < limits["hit_ratio"]:
        missed.append(f"cache hit ratio {figures['hit_ratio']:.3f} < {limits['hit_ratio']}")
    print(f"\n== {PROFILE} load test summary ==")
    for name, value in figures.items():
        print(f"  {name:24} {value:.3f}" if isinstance(value, float) else f"  {name:24} {value}")
    print(f"  X-Cache                  {dict(cache_outcomes)}")
    if missed:
        print("THRESHOLDS MISSED: " + "; ".join(missed))
        environment.process_exit_code = 1
    else:
        print("all thresholds met")
