"""`make bench-seed`: the seed document's "Before / After optimizations" table, measured.

    python -m loadtest.bench_seed [--requests 1000] [--users 100] [--latency 2.0] [--write docs/performance.md]

Same workload both times: 100 concurrent users sending identical and near-identical prompts to
a service whose upstream is the fake model API at a realistic latency. "Before" turns the
optimizations off (CACHE_ENABLED=false, COALESCING_ENABLED=false, UPSTREAM_KEEPALIVE=false);
"after" is the default configuration. Both run in one invocation on the same machine.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests

from loadtest._procs import fake_upstream, gunicorn, redis

__all__ = ["main"]

BASE_PROMPTS = [
    "Explain the CAP theorem with an example",
    "Write a unit test plan for a payment service",
    "Summarise the main ideas of stoicism",
    "Plan a two-week trip to Japan on a budget",
    "Compare PostgreSQL and MongoDB for an analytics workload",
    "Teach me the basics of music theory",
    "Draft a postmortem template for outages",
    "Explain gradient descent to a teenager",
    "Design a REST API for a library system",
    "Outline a research plan on urban heat islands",
    "Write a cover letter for a data engineer role",
    "Explain how vaccines train the immune system",
    "Create a study schedule for the bar exam",
    "Describe a cinematic sunrise over a harbour",
    "Refactor a 500-line function into smaller parts",
    "Explain Bayesian inference with coins",
    "Write a product launch announcement",
    "Explain how DNS resolution works",
    "Plan a vegetarian meal prep for a week",
    "Explain the causes of the French Revolution",
]
MODES = ["reasoning", "research", "code"]
VARIATIONS = ["", "", "", ".", " please", "?"]  # near-identical: trailing punctuation and politeness
PRICE_IN, PRICE_OUT = 3.0, 15.0  # claude-sonnet-4-5, USD per million tokens

SEED_CLAIMS = {
    "Cache hit rate": ("~40 %", "~65 %"),
    "Upstream calls per 1000 requests": ("1000", "250"),
    "Duplicate upstream calls": ("~60 %", "~25 %"),
    "p50 latency": ("—", "—"),
    "p95 latency": ("8-12 s", "5-8 s"),
    "p99 latency": ("—", "—"),
    "Error rate": ("5-10 %", "1-5 %"),
    "New upstream TCP connections": ("1 per call", "pooled"),
    "Estimated cost per 1000 requests": ("$30", "$7.50"),
}


def workload(n: int, seed: int = 7) -> list[dict[str, str]]:
    """Return n request bodies: popular prompts weighted by a Zipf-like curve, some varied slightly."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(BASE_PROMPTS))]
    bodies = []
    for _ in range(n):
        prompt = rng.choices(BASE_PROMPTS, weights)[0] + rng.choice(VARIATIONS)
        bodies.append({"prompt": prompt, "mode": rng.choice(MODES)})
    return bodies


def run_phase(
    name: str, env: dict[str, str], bodies: list[dict[str, str]], users: int, latency: float, workers: int
) -> dict[str, Any]:
    with fake_upstream(latency) as upstream:
        base = {
            "ANTHROPIC_API_KEY": "sk-ant-bench",
            "ANTHROPIC_BASE_URL": upstream,
            "LLM_MODEL": "claude-sonnet-4-5",
            "RATE_LIMIT": "",
            "UPSTREAM_TIMEOUT": "60",
        }
        with gunicorn({**base, **env}, workers=workers) as (url, _proc, _log):
            local = threading.local()

            def send(body: dict[str, str]) -> tuple[float, int, str]:
                session = getattr(local, "session", None) or requests.Session()
                local.session = session
                started = time.perf_counter()
                try:
                    response = session.post(url + "/api/optimize", json=body, timeout=120)
                    return time.perf_counter() - started, response.status_code, response.headers.get("X-Cache", "")
                except requests.RequestException:
                    return time.perf_counter() - started, 0, ""

            started = time.perf_counter()
            with ThreadPoolExecutor(users) as pool:
                results = list(pool.map(send, bodies))
            wall = time.perf_counter() - started
        stats = requests.get(upstream + "/_stats", timeout=5).json()
    latencies = sorted(r[0] for r in results)
    n = len(results)
    distinct = len({(b["prompt"], b["mode"]) for b in bodies})
    calls = stats["total"]
    cost = (stats["tokens"]["input"] * PRICE_IN + stats["tokens"]["output"] * PRICE_OUT) / 1e6

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))]

    return {
        "name": name,
        "requests": n,
        "distinct": distinct,
        "wall": wall,
        "Cache hit rate": sum(1 for r in results if r[2] == "HIT") / n,
        "Upstream calls per 1000 requests": calls * 1000 / n,
        "Minimum possible calls per 1000": distinct * 1000 / n,
        "Duplicate upstream calls": max(0, calls - distinct) / n,
        "p50 latency": statistics.median(latencies),
        "p95 latency": pct(0.95),
        "p99 latency": pct(0.99),
        "Error rate": sum(1 for r in results if r[1] != 200) / n,
        "New upstream TCP connections": stats["connections"],
        "Estimated cost per 1000 requests": cost * 1000 / n,
        "coalesced": sum(1 for r in results if r[2] == "COALESCED") / n,
    }


def _fmt(metric: str, value: float) -> str:
    if metric.endswith("latency"):
        return f"{value:.2f} s"
    if metric in ("Cache hit rate", "Duplicate upstream calls", "Error rate"):
        return f"{100 * value:.1f} %"
    if metric.startswith("Estimated cost"):
        return f"${value:.2f}"
    return f"{value:.0f}"


def table(before: dict[str, Any], after: dict[str, Any], shared: dict[str, Any] | None) -> str:
    extra = " Measured, on + Redis |" if shared else ""
    lines = [
        "| Metric | Seed claim, before | Measured, optimizations off | Seed claim, after "
        f"| Measured, optimizations on |{extra}",
        "|---|---|---|---|---|" + ("---|" if shared else ""),
    ]
    for metric, (claim_before, claim_after) in SEED_CLAIMS.items():
        row = (
            f"| {metric} | {claim_before} | {_fmt(metric, before[metric])} | {claim_after} "
            f"| {_fmt(metric, after[metric])} |"
        )
        lines.append(row + (f" {_fmt(metric, shared[metric])} |" if shared else ""))
    minimum = before["Minimum possible calls per 1000"]
    lines.append(
        f"| Minimum possible calls per 1000 (distinct requests) | — | {minimum:.0f} | — | {minimum:.0f} |"
        + (f" {minimum:.0f} |" if shared else "")
    )
    lines.append(
        f"| Coalesced (answered by an identical call in flight) | — | {100 * before['coalesced']:.1f} % "
        f"| — | {100 * after['coalesced']:.1f} % |" + (f" {100 * shared['coalesced']:.1f} % |" if shared else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--latency", type=float, default=2.0, help="fake upstream seconds per answer")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--write", type=Path, help="also write the report (markdown) to this file")
    args = parser.parse_args(argv)
    bodies = workload(args.requests)
    off = {"CACHE_ENABLED": "false", "COALESCING_ENABLED": "false", "UPSTREAM_KEEPALIVE": "false"}
    before = run_phase("off", off, bodies, args.users, args.latency, args.workers)
    after = run_phase("on", {}, bodies, args.users, args.latency, args.workers)
    shared = None
    binary = shutil.which("redis-server")
    if binary is not None:  # the shared layer: one upstream call per distinct request across workers
        with redis(binary) as redis_url:
            shared = run_phase("on+redis", {"REDIS_URL": redis_url}, bodies, args.users, args.latency, args.workers)
    command = "make bench-seed  # python -m loadtest.bench_seed " + " ".join(argv or sys.argv[1:])
    report = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores; "
        f"{args.requests} requests ({before['distinct']} distinct) from {args.users} concurrent users; "
        f"fake upstream latency {args.latency} s; {args.workers} gunicorn workers.\n"
        f"Command: `{command.strip()}`\n\n{table(before, after, shared)}\n\n"
        f"Wall time: {before['wall']:.1f} s off, {after['wall']:.1f} s on"
        + (f", {shared['wall']:.1f} s on + Redis.\n" if shared else ".\n")
    )
    print(report)
    if args.write:
        args.write.write_text(
            args.write.read_text().split("<!-- bench-seed -->")[0] + "<!-- bench-seed -->\n" + report
            if args.write.exists()
            else report
        )


if __name__ == "__main__":
    main()
