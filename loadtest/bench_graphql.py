"""GraphQL's figures (part of `make bench`; alone: `python -m loadtest.bench_graphql`):

1. Operations per second: one document of 10 cached operations against 10 REST hits of the
   same answers, and one cached operation against one REST hit — both doors on one gunicorn
   (1 gevent worker, production defaults but the rate limit, whose bookkeeping is measured
   elsewhere), wrk with keep-alive, turns alternated round after round; the ratios paired by
   round.
2. Bytes on the wire for those 10 answers: REST (request and answer) against GraphQL with field
   selection (`optimizedPrompt` alone), sent as a document and as a persisted query (GET).
3. Five distinct misses in one document against a model that takes 1 s each: the request's
   wall time, which is the slowest operation's when they run at once (5 s one after another).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any
from urllib.parse import quote

import requests

from loadtest._procs import fake_upstream, gunicorn

__all__ = ["bench_graphql", "main"]

PROMPTS = [f"Explain the CAP theorem with example {i}" for i in range(10)]
SELECTED = "optimizedPrompt"
FULL = "optimizedPrompt mode provider model usage { inputTokens outputTokens }"
_SCRIPT = """
local bodies = {{{bodies}}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "{path}", {{["Content-Type"] = "application/json"}}, bodies[i])
end
"""


def _document(count: int, selection: str) -> str:
    fields = (f"o{i}: optimize(input: {{prompt: $p{i}, mode: reasoning}}) {{ {selection} }}" for i in range(count))
    variables = ", ".join(f"$p{i}: String!" for i in range(count))
    return f"query Batch({variables}) {{ {' '.join(fields)} }}"


def _graphql_body(count: int, selection: str = FULL) -> dict[str, Any]:
    return {"query": _document(count, selection), "variables": {f"p{i}": PROMPTS[i] for i in range(count)}}


def _rest_body(i: int) -> dict[str, str]:
    return {"prompt": PROMPTS[i], "mode": "reasoning"}


def _wrk(url: str, path: str, bodies: list[dict[str, Any]], seconds: float, connections: int) -> float:
    """Requests per second, each connection sending `bodies` in turn (POST, JSON)."""
    lua = ", ".join(json.dumps(json.dumps(body)) for body in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_SCRIPT.format(bodies=lua, path=path))
    try:
        run = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(script.name)
    if "Non-2xx" in run.stdout:
        raise RuntimeError(f"wrk saw error answers:\n{run.stdout}")
    return float(run.stdout.split("Requests/sec:")[1].split()[0])


def _throughput(url: str, seconds: float, connections: int, rounds: int) -> dict[str, float]:
    """Operations per second of each door, paired round by round."""
    turns = {
        "REST, one hit per request": ("/api/optimize", [_rest_body(i) for i in range(10)], 1),
        "GraphQL, 10 cached operations per document": ("/graphql", [_graphql_body(10)], 10),
        "GraphQL, 1 cached operation per document": (
            "/graphql",
            [{"query": _document(1, FULL), "variables": {"p0": prompt}} for prompt in PROMPTS],
            1,
        ),
    }
    for path, bodies, _ in turns.values():  # every answer cached, every document prepared
        for body in bodies:
            requests.post(url + path, json=body, timeout=30).raise_for_status()
    found: dict[str, list[float]] = {name: [] for name in turns}
    for round_ in range(rounds):
        names = list(turns)[round_ % len(turns) :] + list(turns)[: round_ % len(turns)]
        for name in names:
            path, bodies, per_request = turns[name]
            found[name].append(_wrk(url, path, bodies, seconds, connections) * per_request)
        print(
            f"  round {round_ + 1}/{rounds} (operations/s): " + ", ".join(f"{n}: {v[-1]:.0f}" for n, v in found.items())
        )
    rest = found["REST, one hit per request"]
    ratios = {
        name: statistics.median(v / r for v, r in zip(values, rest, strict=True)) for name, values in found.items()
    }
    print(f"{'':48} {'median ops/s':>12} {'ratio to REST':>14}")
    for name, values in found.items():
        print(f"{name:48} {statistics.median(values):12.0f} {ratios[name]:14.2f}")
    return ratios


def _bytes(url: str) -> dict[str, int]:
    """Bytes on the wire (request line + body, answer body) for the 10 answers, by door."""
    rest = sum(
        len(json.dumps(_rest_body(i)))
        + len(requests.post(url + "/api/optimize", json=_rest_body(i), timeout=30).content)
        for i in range(10)
    )
    selected = _graphql_body(10, SELECTED)
    document = len(json.dumps(selected)) + len(requests.post(url + "/graphql", json=selected, timeout=30).content)
    digest = hashlib.sha256(selected["query"].encode()).hexdigest()
    extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}})
    registered = requests.post(url + "/graphql", json={**selected, "extensions": json.loads(extensions)}, timeout=30)
    registered.raise_for_status()  # the protocol's first request, once per client and document
    address = f"/graphql?extensions={quote(extensions)}&variables={quote(json.dumps(selected['variables']))}"
    answer = requests.get(url + address, timeout=30)
    if answer.status_code != 200 or answer.content != registered.content:
        raise RuntimeError(f"the persisted query was not answered as registered: {answer.text[:300]}")
    persisted = len(address) + len(answer.content)
    figures = {"REST": rest, "GraphQL, field selection": document, "GraphQL, selection + persisted query": persisted}
    for name, size in figures.items():
        print(f"  {name:40} {size:8,d} bytes  ({size / rest:.2f} of REST)")
    return figures


def _misses(url: str, samples: int) -> float:
    """Median wall time of a document of 5 distinct misses, the model taking 1 s each."""
    times = []
    for sample in range(samples):
        body = {
            "query": "{ "
            + " ".join(
                f'm{i}: generateQuestions(input: {{prompt: "miss {sample}-{i} {time.time()}"}}) {{ provider }}'
                for i in range(5)
            )
            + " }"
        }
        started = time.perf_counter()
        answer = requests.post(url + "/graphql", json=body, timeout=60)
        times.append(time.perf_counter() - started)
        if answer.status_code != 200 or "errors" in answer.json():
            raise RuntimeError(f"the misses failed: {answer.text[:500]}")
    return statistics.median(times)


def bench_graphql(seconds: float = 2.0, connections: int = 50, rounds: int = 5, samples: int = 3) -> dict[str, float]:
    print("\n== GraphQL beside REST (one gunicorn, 1 gevent worker) ==")
    env = {"LOG_LEVEL": "INFO", "RATE_LIMIT": ""}
    figures: dict[str, float] = {}
    with gunicorn(env, workers=1) as (url, _, _):
        ratios = _throughput(url, seconds, connections, rounds)
        figures["batch_ratio"] = ratios["GraphQL, 10 cached operations per document"]
        figures["single_ratio"] = ratios["GraphQL, 1 cached operation per document"]
        sizes = _bytes(url)
        figures["bytes_selected"] = sizes["GraphQL, field selection"] / sizes["REST"]
        figures["bytes_persisted"] = sizes["GraphQL, selection + persisted query"] / sizes["REST"]
    with fake_upstream(latency=1.0) as upstream:
        model = {"ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": upstream, **env}
        with gunicorn(model, workers=1) as (url, _, _):
            figures["misses_seconds"] = _misses(url, samples)
    print(
        f"  5 distinct misses in one document, model 1 s each: {figures['misses_seconds']:.2f} s (median of {samples})"
    )
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        bench_graphql(args.seconds, args.connections, args.rounds)


if __name__ == "__main__":
    main()
