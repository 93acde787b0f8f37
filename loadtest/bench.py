"""`make bench`: the costs of the performance layer, measured side by side in one run.

    python -m loadtest.bench [--seconds 2] [--connections 50] [--rounds 7]

1. Cache key time per candidate hash for 1 KB, 10 KB and 100 KB requests.
2. L1 cache get (hit) and set; coalescer overhead per call; the gateway's whole hit path.
3. Cached-request throughput through gunicorn versus a bare Flask endpoint that parses the body and returns the same
   bytes on the same server settings (wrk, keep-alive), alternated over several rounds; the
   ratio is the figure that matters.
4. Streams: time to the first delta through /api/optimize-stream minus time to the first delta
   straight from the fake upstream (paired request by request, interleaved), next to the
   /api/optimize miss overhead measured the same way in the same run.
5. A cache miss through the service vs through the floor (loadtest/floor_app.py: a minimal Flask
   + requests proxy to the same upstream), each minus a direct call; CPU per miss.
6. Memory per worker: idle, after 10,000 distinct ~2 KB answers, and with a full cache.
7. 1000 concurrent distinct callers on 2 workers with the model at 2 s: all answered, p99.
8. GraphQL beside REST: a document of 10 cached operations and one of 1 against REST hits, the
   bytes on the wire, 5 misses in one document against a 1 s model (loadtest/bench_graphql.py).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

import psutil
import requests
import sseclient

from loadtest._procs import fake_upstream, gunicorn, redis
from loadtest.bench_graphql import bench_graphql

__all__ = ["main"]


def _fnv1a_32(data: bytes) -> str:
    # The original service's key hash, for reference only: 32 bits and pure Python.
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


def _per_call(fn: Callable[[], Any], min_time: float = 0.2) -> float:
    """Return the best per-call time in seconds over 5 repeats of an auto-sized loop."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * min_time / 0.2))
    return min(timer.repeat(repeat=5, number=number)) / number


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:9.2f} µs"


def bench_keys() -> None:
    from app.gateway.keys import HASHES, canonical_json, request_key
    from app.providers.base import LLMRequest
    from app.services.modes import MODE_REGISTRY

    print("\n== Cache key: canonical JSON + hash, per request size ==")
    mode = MODE_REGISTRY["research"]
    candidates = {**HASHES, "fnv1a-32 (original, pure Python)": _fnv1a_32}
    header = f"{'size':>6} {'canonical JSON':>15}" + "".join(f" {name.split(' ')[0]:>13}" for name in candidates)
    print(header + "   (whole key = JSON + hash)")
    for size in (1_000, 10_000, 100_000):
        request = LLMRequest("optimize", "research", mode.system, (("user", "x" * size),), 4096)
        shape = {"provider": "anthropic", "model": "claude", **request.identity()}
        data = canonical_json(shape)
        json_time = _per_call(functools.partial(canonical_json, shape))
        row = f"{size // 1000:>4}KB {_us(json_time):>15}"
        for name, digest in candidates.items():
            if name.startswith("fnv") and size > 10_000:
                hashed = _per_call(functools.partial(digest, data), min_time=0.05)
            else:
                hashed = _per_call(functools.partial(digest, data))
            row += f" {_us(hashed):>13}"
        print(row)
        whole = _per_call(functools.partial(request_key, "optimize", shape))
        print(f"{'':6} whole key with the chosen hash (sha256): {_us(whole)}")


def bench_in_process() -> None:
    import gevent  # noqa: F401  (the coalescer and gateway use gevent primitives)

    from app.cache import CachedValue, MemoryCache
    from app.gateway import Core, Gateway
    from app.gateway.breaker import Breaker
    from app.gateway.observer import NullObserver
    from app.gateway.streams import InFlight
    from app.gateway.upstream import UpstreamCaller
    from app.providers.base import LLMRequest
    from app.providers.template import TemplateProvider
    from app.services.answers import text_answer
    from app.services.modes import MODE_REGISTRY

    print("\n== In-process costs ==")
    cache = MemoryCache(500 * 2**20, 10_000)
    value = CachedValue(b"x" * 2_000, time.time(), time.time() + 3600)
    for i in range(10_000):
        cache.set(f"k{i}", value)
    counter = iter(range(10**9))
    print(f"L1 get (hit, 10k entries):        {_us(_per_call(lambda: cache.get('k5000')))}")
    print(f"L1 set (new key, evicting):       {_us(_per_call(lambda: cache.set(f'n{next(counter)}', value)))}")
    inflight = InFlight()
    direct = _per_call(lambda: (lambda: 1)())
    through = _per_call(lambda: inflight.run("key", lambda: 1, 30))
    print(f"Coalescer overhead per call:      {_us(through - direct)}  (InFlight.run minus a direct call)")
    mode = MODE_REGISTRY["reasoning"]
    provider = TemplateProvider()
    gateway = Gateway(
        Core(
            UpstreamCaller(provider, Breaker("t", 5, 30), NullObserver(), 0),
            l1=MemoryCache(2**26, 1000),
            inflight=InFlight(),
        )
    )
    request = LLMRequest(
        "optimize",
        "reasoning",
        mode.system,
        (("user", "p" * 1000),),
        4096,
        inputs={
            "prompt": "p" * 1000,
            "context": None,
            "sections": list(mode.sections),
            "drafts": list(mode.drafts),
            "context_at": mode.context_at,
        },
    )
    gateway.complete(request, text_answer)
    bare_hit = _per_call(lambda: gateway.complete(request, text_answer))
    print(f"Gateway.complete, cache hit (1KB):{_us(bare_hit)}  (key + L1 + decode)")
    # With Redis, each ask is also counted for predictive warming (app/cache/popularity.py): a
    # forward-decayed weight added in memory, sent every 10 s (no flush falls in this measure).
    from app.cache import RedisHealth
    from app.cache.popularity import Popularity

    counting = Gateway(
        Core(
            UpstreamCaller(provider, Breaker("t", 5, 30), NullObserver(), 0),
            l1=MemoryCache(2**26, 1000),
            inflight=InFlight(),
            popularity=Popularity(None, "bench:", RedisHealth.for_timeout(0.25), 1000),
        )
    )
    counting.complete(request, text_answer)
    counted_hit = _per_call(lambda: counting.complete(request, text_answer))
    print(
        f"  ... counting asks for warming:  {_us(counted_hit)}  ({counted_hit / bare_hit:.2f}x the hit without;"
        f" +{_us(counted_hit - bare_hit).strip()} per request)"
    )


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def _wrk(url: str, body: str | None, seconds: float, connections: int, headers: dict[str, str] | None = None) -> float:
    """wrk's requests per second: POSTs of `body`, or GETs when it is None."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if body is not None:
            script.write(_WRK_SCRIPT.format(body=json.dumps(body)))
        for name, value in (headers or {}).items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
    try:
        run = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "-s", script.name, url],
            capture_output=True,
            text=True,
        )
        out = run.stdout
        if run.returncode != 0:
            raise RuntimeError(f"wrk failed ({run.returncode}): {run.stderr or out}")
    finally:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


OPTIMIZE = ("/api/optimize", {"prompt": "Explain the CAP theorem with one example", "mode": "reasoning"})
QUESTIONS = ("/api/generate-questions", {"prompt": "Explain the CAP theorem with one example"})


def bench_throughput(
    seconds: float,
    connections: int,
    rounds: int,
    variants: dict[str, dict[str, str]] | None = None,
    endpoint: tuple[str, dict[str, Any]] = OPTIMIZE,
) -> dict[str, list[float]]:
    """Requests per second of each variant and of the bare app on `endpoint` (path, body), every
    server up at once and measured in short turns, round after round, each round in a new order;
    return each one's figures by round (`paired` turns two of them into a ratio)."""
    path, payload = endpoint
    print(f"\n== Cached-request throughput of {path} through gunicorn (1 gevent worker, wrk keep-alive) ==")
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): throughput comparison skipped")
        return {}
    body = json.dumps(payload)
    variants = variants or {"service (template provider, cache hit)": {}}
    results: dict[str, list[float]] = {name: [] for name in (BARE, *variants)}
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        workers: dict[str, psutil.Process] = {}
        for name, env in variants.items():
            urls[name], proc, _ = stack.enter_context(gunicorn(env, workers=1))
            workers[name] = psutil.Process(proc.pid).children()[0]
            first = requests.post(
                urls[name] + path, data=body, headers={"Content-Type": "application/json"}, timeout=10
            )
            first.raise_for_status()
        answer = stack.enter_context(tempfile.NamedTemporaryFile("wb", suffix=".json"))
        answer.write(first.content)  # the service's exact answer bytes, for the bare app to return
        answer.flush()
        urls[BARE], proc, _ = stack.enter_context(
            gunicorn({"BARE_BODY_FILE": answer.name}, workers=1, app="loadtest.bare_wsgi:app")
        )
        workers[BARE] = psutil.Process(proc.pid).children()[0]
        for url in urls.values():  # warm: each server's first turn is not its first second
            _wrk(url + path, body, 1, connections)
        names = list(results)
        for round_ in range(rounds):
            # This machine's speed drifts 2x within a minute on a busy day: short turns, and a
            # rotating order so that no server always follows the same one.
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                results[name].append(_wrk(urls[name] + path, body, seconds, connections))
                _settle(workers[name])
            line = ", ".join(
                f"{name.split(':')[0] if name == BARE else name}: {results[name][-1]:.0f}" for name in names
            )
            print(f"  round {round_ + 1}/{rounds} (req/s): {line}", flush=True)
    bare = results[BARE]
    print(f"{'':56} {'median req/s':>12} {'ratio to bare':>14}   rounds")
    for name, values in results.items():
        ratio = paired(values, bare)
        print(f"{name:56} {statistics.median(values):12.0f} {ratio:14.2f}   {', '.join(f'{v:.0f}' for v in values)}")
    return results


def _settle(worker: psutil.Process, deadline: float = 10.0) -> None:
    """Wait (up to `deadline` seconds) until `worker` has stopped working after its turn: a
    server with tracing on goes on exporting its queue of spans for up to a second after the
    load stops, which took that CPU from whichever server was measured next (always the same
    one, in a rotating order)."""
    ends = time.monotonic() + deadline
    used = sum(worker.cpu_times()[:2])
    while time.monotonic() < ends:
        time.sleep(0.1)
        now = sum(worker.cpu_times()[:2])
        if now - used < 0.005:  # under 5 % of a core for 0.1 s: idle
            return
        used = now


def paired(values: list[float], base: list[float]) -> float:
    """The median of the round-by-round ratios: each round's two figures were measured minutes
    apart, so the machine's drift between rounds (2x on a busy day) cancels out."""
    return statistics.median(v / b for v, b in zip(values, base, strict=True))


class _SpanSink:
    """Accepts OTLP/HTTP exports and drops them, so tracing runs its whole export path."""

    def __enter__(self) -> str:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _first_delta(session: requests.Session, url: str, body: dict[str, Any], name: str) -> float:
    """Seconds from sending `body` to the first event named `name` (the stream is then read out)."""
    started = time.perf_counter()
    with session.post(url, json=body, stream=True, timeout=30) as response:
        events = sseclient.SSEClient(response.iter_content(chunk_size=None)).events()
        first = next(e for e in events if e.event == name)
        elapsed = time.perf_counter() - started
        assert first.data
        for _ in events:
            pass
    return elapsed


def _whole(session: requests.Session, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = session.post(url, json=body, timeout=30)
    response.raise_for_status()
    return time.perf_counter() - started


def bench_streams(samples: int) -> dict[str, float]:
    """Stream TTFT overhead and JSON miss overhead, each paired with a direct call to the fake;
    once with deltas paced as a model writes them (10 ms apart), once all in one burst."""
    figures: dict[str, float] = {}
    for pace, label in ((0.01, "paced: deltas 10 ms apart, as a model writes"), (0.0, "burst: all deltas at once")):
        print(f"\n== Stream time to first delta vs /api/optimize miss ({label}), {samples} pairs each ==", flush=True)
        lanes = _stream_overheads(samples, pace)
        tag = "paced" if pace else "burst"
        for lane, values in lanes.items():
            values.sort()
            figures[f"{tag}_{lane}_p50"] = statistics.median(values)
            figures[f"{tag}_{lane}_p99"] = values[min(len(values) - 1, int(len(values) * 0.99))]
        stream50, stream99, json50, json99 = (
            figures[f"{tag}_{name}"] for name in ("stream_p50", "stream_p99", "json_p50", "json_p99")
        )
        print(f"{'':44} {'p50':>9} {'p99':>9}")
        print(f"{'stream: TTFT through the service - direct':44} {_ms(stream50)} {_ms(stream99)}")
        print(f"{'/api/optimize miss: service - direct':44} {_ms(json50)} {_ms(json99)}")
        print(
            f"ratio stream TTFT overhead / JSON miss overhead: p50 {stream50 / json50:.2f}, "
            f"p99 {stream99 / json99:.2f} (<= 1.00: a stream adds no more than a miss)"
        )
    return figures


def _stream_overheads(samples: int, pace: float) -> dict[str, list[float]]:
    """Per pair: (through the service - straight from the fake) for a stream's first delta and
    for a whole /api/optimize miss, interleaved request by request."""
    overheads: dict[str, list[float]] = {"stream": [], "json": []}
    with fake_upstream(latency=0.02) as upstream:
        requests.post(upstream + "/_control", json={"stream_interval": pace}, timeout=5).raise_for_status()
        env = {"ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": upstream, "LOG_LEVEL": "WARNING"}
        with gunicorn(env, workers=1) as (url, _, _), requests.Session() as direct, requests.Session() as service:
            message = {"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "s"}
            for i in range(samples):
                user = [{"role": "user", "content": f"bench prompt {i}"}]
                body = {"prompt": f"bench prompt {i}", "mode": "code"}
                stream_body = {**message, "messages": user, "stream": True}
                json_body = {**body, "prompt": f"json {body['prompt']}"}
                timings = {
                    ("stream", "through"): partial(
                        _first_delta, service, url + "/api/optimize-stream", body, "refined_delta"
                    ),
                    ("stream", "straight"): partial(
                        _first_delta, direct, upstream + "/v1/messages", stream_body, "content_block_delta"
                    ),
                    ("json", "through"): partial(_whole, service, url + "/api/optimize", json_body),
                    ("json", "straight"): partial(
                        _whole, direct, upstream + "/v1/messages", {**message, "messages": user}
                    ),
                }
                # Each call's cost depends on what ran just before it (a process woken from idle is
                # slower): rotate the order every pair, so no lane always follows the same call.
                order = list(timings)
                order = order[i % 4 :] + order[: i % 4]
                took = {name: timings[name]() for name in order}
                for lane in overheads:
                    overheads[lane].append(took[lane, "through"] - took[lane, "straight"])
                if (i + 1) % max(1, samples // 4) == 0:
                    print(f"  {i + 1}/{samples} pairs", flush=True)
    return overheads


def bench_misses(samples: int) -> dict[str, float]:
    """A cache miss through the service vs through the floor app (loadtest/floor_app.py), each
    minus a direct call to the fake, paired and in rotating order; and CPU per miss."""
    print(f"\n== Cache miss: service vs the floor (a minimal Flask + requests proxy), {samples} triples ==", flush=True)
    lanes: dict[str, list[float]] = {"service": [], "floor": []}
    cpu: dict[str, float] = {}
    with fake_upstream(latency=0.02) as upstream:
        env = {"ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": upstream, "LOG_LEVEL": "INFO"}
        with (
            gunicorn(env, workers=1) as (service_url, service_proc, _),
            gunicorn(env, workers=1, app="loadtest.floor_wsgi:app") as (floor_url, floor_proc, _),
            requests.Session() as session,
        ):
            workers = {
                "service": psutil.Process(service_proc.pid).children()[0],
                "floor": psutil.Process(floor_proc.pid).children()[0],
            }
            before = {name: sum(w.cpu_times()[:2]) for name, w in workers.items()}
            message = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "s"}
            for i in range(samples):
                prompt = f"miss bench {i} {time.time()}"
                calls = {
                    "service": partial(
                        _whole, session, service_url + "/api/optimize", {"prompt": "s " + prompt, "mode": "code"}
                    ),
                    "floor": partial(
                        _whole, session, floor_url + "/api/optimize", {"prompt": "f " + prompt, "mode": "code"}
                    ),
                    "straight": partial(
                        _whole,
                        session,
                        upstream + "/v1/messages",
                        {**message, "messages": [{"role": "user", "content": prompt}]},
                    ),
                }
                order = list(calls)
                order = order[i % 3 :] + order[: i % 3]
                took = {name: calls[name]() for name in order}
                for lane in lanes:
                    lanes[lane].append(took[lane] - took["straight"])
                if (i + 1) % max(1, samples // 4) == 0:
                    print(f"  {i + 1}/{samples} triples", flush=True)
            cpu = {name: (sum(w.cpu_times()[:2]) - before[name]) / samples for name, w in workers.items()}
    figures: dict[str, float] = {}
    for lane, values in lanes.items():
        values.sort()
        figures[f"{lane}_p50"] = statistics.median(values)
        figures[f"{lane}_p99"] = values[min(len(values) - 1, int(len(values) * 0.99))]
    figures["cpu_ratio"] = cpu["service"] / cpu["floor"] if cpu.get("floor") else float("nan")
    print(f"{'':44} {'p50':>9} {'p99':>9} {'CPU/miss':>10}")
    for lane in lanes:
        p50, p99 = _ms(figures[lane + "_p50"]), _ms(figures[lane + "_p99"])
        print(f"{lane + ' - direct':44} {p50} {p99} {cpu[lane] * 1000:8.2f}ms")
    print(
        f"ratio service / floor: overhead p50 {figures['service_p50'] / figures['floor_p50']:.2f}, "
        f"p99 {figures['service_p99'] / figures['floor_p99']:.2f}, "
        f"CPU per miss {figures['cpu_ratio']:.2f} (goal <= 1.25)"
    )
    return figures


def bench_disk_tier(samples: int, answers: int = 10_000) -> dict[str, float]:
    """The on-machine cache tier: a disk hit against an L1 hit and a miss (in-process, the
    template provider), what the tier adds to a miss through gunicorn (the same server with and
    without it, paired), and the disk and memory `answers` answers take."""
    import gevent  # noqa: F401  (the disk tier runs its operations in gevent's thread pool)

    from app.cache import DiskCache, MemoryCache
    from app.gateway import Core, Gateway
    from app.gateway.breaker import Breaker
    from app.gateway.observer import NullObserver
    from app.gateway.upstream import UpstreamCaller
    from app.providers.base import LLMRequest
    from app.providers.template import TemplateProvider
    from app.services.answers import text_answer
    from app.services.modes import MODE_REGISTRY

    print(f"\n== The on-machine cache tier (disk): hits, what it adds to a miss, {answers} answers ==", flush=True)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory:

        def gateway(l1: bool, disk: bool) -> Gateway:
            upstream = UpstreamCaller(TemplateProvider(), Breaker("t", 5, 30), NullObserver(), 0)
            return Gateway(
                Core(
                    upstream,
                    l1=MemoryCache(2**26, 10_000) if l1 else None,
                    l2=DiskCache(os.path.join(directory, "tier"), 2**30, 86400) if disk else None,
                )
            )

        mode = MODE_REGISTRY["code"]
        inputs = {
            "prompt": "p" * 1000,
            "context": None,
            "sections": list(mode.sections),
            "drafts": list(mode.drafts),
            "context_at": mode.context_at,
        }
        request = LLMRequest("optimize", "code", mode.system, (("user", "p" * 1000),), 4096, inputs=inputs)
        with_l1, disk_only, neither = gateway(True, True), gateway(False, True), gateway(False, False)
        with_l1.complete(request, text_answer)  # stored in L1 and on disk
        l1_hit = _per_call(lambda: with_l1.complete(request, text_answer))
        disk_hit = _per_call(lambda: disk_only.complete(request, text_answer))
        miss = _per_call(lambda: neither.complete(request, text_answer, read=False, write=False))
        figures.update(l1_hit=l1_hit, disk_hit=disk_hit, template_miss=miss)
        print(f"L1 hit:   {_us(l1_hit)}")
        print(f"disk hit: {_us(disk_hit)}  ({disk_hit / l1_hit:.1f}x an L1 hit; a model call takes ms to s)")
        print(f"miss with the offline template provider (no network): {_us(miss)}")

        tier = DiskCache(os.path.join(directory, "sized"), 2**30, 86400)
        rss_before = psutil.Process().memory_info().rss
        answer = json.dumps({"p": "x" * 2_000, "v": "anthropic", "m": "claude", "u": [100, 500]}).encode()
        now = time.time()
        from app.cache import CachedValue

        for i in range(answers):
            tier.set(f"optimize:{i:064x}", CachedValue(answer, now, now + 3600))
        entries, size = tier.size()
        grew = psutil.Process().memory_info().rss - rss_before
        figures.update(disk_bytes_per_answer=size / max(1, entries), rss_growth_mib=grew / 2**20)
        warming = Gateway(
            Core(
                UpstreamCaller(TemplateProvider(), Breaker("t", 5, 30), NullObserver(), 0),
                l1=MemoryCache(2**30, 10_000),
                l2=tier,
            )
        )
        began = time.perf_counter()
        warmed = warming.core.warm(2_000, 2.0)
        figures["warm_seconds"] = time.perf_counter() - began
        print(f"warming L1 with the {warmed} most recent of them at start: {figures['warm_seconds'] * 1000:.0f} ms")
        print(
            f"{entries} answers of {len(answer)} bytes: {size / 2**20:.1f} MiB on disk "
            f"({size / max(1, entries):.0f} bytes each); this process grew {grew / 2**20:.1f} MiB (SQLite's page cache)"
        )

    if samples:
        lanes: dict[str, list[float]] = {"disk tier": [], "no disk tier": []}
        with fake_upstream(latency=0.02) as upstream, tempfile.TemporaryDirectory() as cache_dir:
            base = {"ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": upstream, "LOG_LEVEL": "INFO"}
            with (
                gunicorn({**base, "CACHE_DIR": cache_dir}, workers=1) as (with_url, _, _),
                gunicorn({**base, "CACHE_DIR": ""}, workers=1) as (without_url, _, _),
                requests.Session() as session,
            ):
                urls = {"disk tier": with_url, "no disk tier": without_url}
                for i in range(samples):
                    order = list(urls) if i % 2 else list(reversed(urls))
                    for lane in order:
                        body = {"prompt": f"disk tier miss {lane} {i} {time.time()}", "mode": "code"}
                        lanes[lane].append(_whole(session, urls[lane] + "/api/optimize", body))
        p50 = {lane: statistics.median(values) for lane, values in lanes.items()}
        figures["miss_ratio"] = p50["disk tier"] / p50["no disk tier"]
        print(
            f"a miss through gunicorn (model 20 ms), p50 of {samples}: with the disk tier {_ms(p50['disk tier'])}, "
            f"without {_ms(p50['no disk tier'])}: {figures['miss_ratio']:.3f}x (goal <= 1.05)"
        )
    return figures


def bench_jobs(samples: int) -> dict[str, float]:
    """A job's submission (validated, the cache checked, its record and queue entry written to
    SQLite) against a cached answer of the same endpoint, through gunicorn, interleaved pair by
    pair on one keep-alive connection."""
    print(f"\n== Job submission vs a cached answer (POST /api/jobs vs POST /api/optimize HIT), {samples} pairs ==")
    lanes: dict[str, list[float]] = {"submit": [], "hit": []}
    with tempfile.TemporaryDirectory() as directory:
        env = {"CACHE_DIR": os.path.join(directory, "cache"), "LOG_LEVEL": "INFO"}
        with gunicorn(env, workers=1) as (url, _, _), requests.Session() as session:
            cached = {"prompt": "a cached prompt for the job bench", "mode": "code"}
            _whole(session, url + "/api/optimize", cached)
            for i in range(samples + 20):
                job = {"task": "optimize", "priority": "normal", "input": {"prompt": f"job bench {i}", "mode": "code"}}
                hit = _whole(session, url + "/api/optimize", cached)
                started = time.perf_counter()
                response = session.post(url + "/api/jobs", json=job, timeout=30)
                submit = time.perf_counter() - started
                assert response.status_code == 202, response.text
                if i >= 20:  # after the warm-up
                    lanes["hit"].append(hit)
                    lanes["submit"].append(submit)
    figures = {f"{lane}_p50": statistics.median(values) for lane, values in lanes.items()}
    figures["ratio_p50"] = figures["submit_p50"] / figures["hit_p50"]
    print(f"cached answer p50 {_ms(figures['hit_p50'])}; job submission p50 {_ms(figures['submit_p50'])}")
    print(f"submission / cached answer, p50: {figures['ratio_p50']:.2f} (goal <= 2)")
    return figures


def bench_memory(answers: int = 10_000) -> dict[str, float]:
    """RSS of one worker: idle, after `answers` distinct ~2 KB cached answers, and the growth per
    byte of CACHE_MAX_BYTES once a smaller cache is full (offline provider: no upstream needed)."""
    from concurrent.futures import ThreadPoolExecutor

    print(f"\n== Memory per worker: idle, {answers} distinct ~2 KB answers cached, a full cache ==", flush=True)
    prompt = "Explain the trade-offs of this design in detail. " * 24  # ~1.2 KB: ~2 KB answers
    figures: dict[str, float] = {}
    full_limit = 8 << 20
    for label, env in (("default bounds", {}), ("CACHE_MAX_BYTES=8 MiB", {"CACHE_MAX_BYTES": str(full_limit)})):
        with gunicorn({"LOG_LEVEL": "WARNING", **env}, workers=1) as (url, proc, _), requests.Session() as session:
            worker = psutil.Process(proc.pid).children()[0]
            requests.post(url + "/api/optimize", json={"prompt": "warm up", "mode": "code"}, timeout=10)
            idle = worker.memory_info().rss

            def send(i: int) -> int:
                body = {"prompt": f"{i} {prompt}", "mode": "research"}
                return session.post(url + "/api/optimize", json=body, timeout=30).status_code

            with ThreadPoolExecutor(8) as pool:
                for done, _status in enumerate(pool.map(send, range(answers)), 1):
                    if done % (answers // 4) == 0:
                        print(f"  {label}: {done}/{answers} answers", flush=True)
            stats = session.get(url + "/stats", timeout=10).json()
            grown = worker.memory_info().rss
        cached = stats["cache"]["bytes"]
        print(
            f"  {label}: idle {idle / MIB:.1f} MiB, after {grown / MIB:.1f} MiB (+{(grown - idle) / MIB:.1f}); "
            f"L1 holds {stats['cache']['entries']} answers, {cached / MIB:.1f} MiB counted"
        )
        if env:
            figures["full_growth_per_limit_byte"] = (grown - idle) / full_limit
            print(f"  RSS growth / CACHE_MAX_BYTES with the cache full: {figures['full_growth_per_limit_byte']:.2f}")
        else:
            figures.update(idle_mib=idle / MIB, after_mib=grown / MIB, growth_per_counted_byte=(grown - idle) / cached)
            ratio = figures["growth_per_counted_byte"]
            print(f"  RSS growth / bytes the cache counts: {ratio:.2f} (goal: idle <= 150 MiB)")
    return figures


MIB = 1 << 20


def bench_concurrency(callers: int = 1000, latency: float = 2.0) -> dict[str, float]:
    """`callers` distinct requests in flight at once on 2 workers, the model taking `latency`:
    all answered? p99 against the model's own time; and the same for the floor app (the least a
    Flask proxy does per call), for what this machine allows."""
    from loadtest.steady import raw_burst

    print(f"\n== {callers} concurrent distinct callers, model at {latency:g} s, 2 workers ==", flush=True)
    figures: dict[str, float] = {}
    with fake_upstream(latency=latency) as upstream:
        env = {"ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": upstream, "LOG_LEVEL": "WARNING"}
        for name, app in (("service", "wsgi:app"), ("floor", "loadtest.floor_wsgi:app")):
            with gunicorn(env, workers=2, app=app) as (url, _, _):
                host, port = url.removeprefix("http://").split(":")
                results = raw_burst(host, int(port), callers, ramp=0.5)
            seconds = sorted(took for status, took in results if status == 200)
            errors = sum(1 for status, _ in results if status != 200)
            p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] if seconds else float("nan")
            print(
                f"  {name}: answered {len(seconds)}/{callers}, errors {errors}; "
                f"p50 {statistics.median(seconds):.2f} s, p99 {p99:.2f} s = {p99 / latency:.2f}x the model's time"
                + (" (goal <= 1.2x)" if name == "service" else ""),
                flush=True,
            )
            figures |= {f"{name}_answered": len(seconds), f"{name}_errors": errors, f"{name}_p99_ratio": p99 / latency}
    return figures


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f}ms"


BARE = "bare Flask: parse the body, same bytes"
DEFAULTS = "service: production defaults (metrics, access log INFO)"
TRACED_10 = "service: tracing 10% sampled"
LIMITED = "service: rate limit on (memory)"
LIMITED_REDIS = "service: rate limit on (Redis)"


def _variants(sink: str, redis_url: str | None) -> dict[str, dict[str, str]]:
    """The service as run in production (metrics on, the JSON access log at INFO, tracing off),
    and each optional part on or off against it. The limit is never reached: its bookkeeping
    is what is measured."""
    info = {"LOG_LEVEL": "INFO"}
    traced = {**info, "OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}
    limit = {**info, "RATE_LIMIT": "100000000/minute"}
    variants = {
        DEFAULTS: info,
        "service: access log off (LOG_LEVEL=WARNING)": {"LOG_LEVEL": "WARNING"},
        "service: metrics off, access log off": {"METRICS_ENABLED": "false", "LOG_LEVEL": "WARNING"},
        TRACED_10: {**traced, "OTEL_TRACES_SAMPLER_ARG": "0.1"},
        "service: tracing 100% sampled": {**traced, "OTEL_TRACES_SAMPLER_ARG": "1.0"},
        LIMITED: limit,
    }
    if redis_url:
        variants[LIMITED_REDIS] = {**limit, "REDIS_URL": redis_url}
    return variants


def _chart(path: str, figures: dict[str, tuple[float, float, bool]]) -> None:
    """Bars of each ratio against its goal (a tick on the bar): green where the goal is met."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figures)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.4))
    for i, name in enumerate(names):
        value, goal, higher_is_better = figures[name]
        met = value >= goal if higher_is_better else value <= goal
        ax.barh(i, value, color="#3a923a" if met else "#c0392b")
        ax.plot([goal, goal], [i - 0.4, i + 0.4], color="black", linewidth=2)
        ax.text(value + 0.02, i, f"{value:.2f} (goal {'≥' if higher_is_better else '≤'} {goal:g})", va="center")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, max(max(v for v, _, _ in figures.values()), 1.3) + 0.7)
    ax.set_xlabel("ratio, measured side by side in one run (black tick: the goal)")
    ax.set_title(f"make bench, {time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nchart written to {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--variants",
        default="",
        help="comma-separated words: measure only the service variants whose name holds one (and the "
        "production defaults they are compared with); fewer servers per round, less drift between them",
    )
    parser.add_argument("--stream-pairs", type=int, default=200)
    parser.add_argument("--miss-triples", type=int, default=600)
    parser.add_argument("--memory-answers", type=int, default=10_000)
    parser.add_argument(
        "--disk-samples",
        type=int,
        default=300,
        help="paired misses with and without the disk tier (0: in-process figures only; -1: skip)",
    )
    parser.add_argument("--callers", type=int, default=1000)
    parser.add_argument("--job-pairs", type=int, default=300, help="job submissions paired with cached answers")
    parser.add_argument("--graphql-rounds", type=int, default=5, help="GraphQL against REST (0: skip)")
    parser.add_argument("--chart", help="write the ratios as a PNG chart here (needs matplotlib)")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    bench_keys()
    bench_in_process()
    chart: dict[str, tuple[float, float, bool]] = {}
    if not args.skip_throughput:
        redis_binary = shutil.which("redis-server")
        with _SpanSink() as sink, redis(redis_binary) if redis_binary else contextlib.nullcontext() as redis_url:
            variants = _variants(sink, redis_url)
            wanted = [word.strip() for word in args.variants.split(",") if word.strip()]
            if wanted:
                variants = {
                    name: env for name, env in variants.items() if name == DEFAULTS or any(w in name for w in wanted)
                }
            measured = bench_throughput(args.seconds, args.connections, args.rounds, variants)
            questions = bench_throughput(
                args.seconds, args.connections, args.rounds, {DEFAULTS: {"LOG_LEVEL": "INFO"}}, QUESTIONS
            )
        if measured:
            production = measured[DEFAULTS]
            chart["cached answer / bare Flask, optimize"] = (paired(production, measured[BARE]), 0.85, True)
            chart["cached answer / bare Flask, questions"] = (paired(questions[DEFAULTS], questions[BARE]), 0.85, True)
            if TRACED_10 in measured:
                chart["tracing 10% / tracing off"] = (paired(measured[TRACED_10], production), 0.90, True)
            if LIMITED in measured:
                chart["rate limit (memory) / off"] = (paired(measured[LIMITED], production), 0.95, True)
            for name, (value, _, _) in chart.items():
                print(f"{name}: {value:.2f} (round by round)")
            if LIMITED_REDIS in measured:
                print(f"rate limit (Redis) / off: {paired(measured[LIMITED_REDIS], production):.2f} (reported)")
    if args.stream_pairs:
        streams = bench_streams(args.stream_pairs)
        for pct in ("p50", "p99"):
            chart[f"stream TTFT overhead / miss, paced {pct}"] = (
                streams[f"paced_stream_{pct}"] / streams[f"paced_json_{pct}"],
                1.0,
                False,
            )
    if args.miss_triples:
        misses = bench_misses(args.miss_triples)
        chart["miss overhead / floor p50"] = (misses["service_p50"] / misses["floor_p50"], 1.25, False)
        chart["miss overhead / floor p99"] = (misses["service_p99"] / misses["floor_p99"], 1.25, False)
        chart["CPU per miss / floor"] = (misses["cpu_ratio"], 1.25, False)
    if args.disk_samples >= 0:
        disk = bench_disk_tier(args.disk_samples)
        if "miss_ratio" in disk:
            chart["miss with the disk tier / without"] = (disk["miss_ratio"], 1.05, False)
    if args.job_pairs:
        jobs = bench_jobs(args.job_pairs)
        chart["job submission / cached answer p50"] = (jobs["ratio_p50"], 2.0, False)
    if args.memory_answers:
        memory = bench_memory(args.memory_answers)
        chart["idle RSS / 150 MiB"] = (memory["idle_mib"] / 150, 1.0, False)
    if args.callers:
        crowd = bench_concurrency(args.callers)
        chart[f"p99 of {args.callers} callers / model time"] = (crowd["service_p99_ratio"], 1.2, False)
        chart[f"  the floor app, same {args.callers} callers"] = (crowd["floor_p99_ratio"], 1.2, False)
    if args.graphql_rounds and shutil.which("wrk") is not None:
        graph = bench_graphql(args.seconds, args.connections, args.graphql_rounds)
        chart["GraphQL: 10 cached operations / 10 REST hits"] = (graph["batch_ratio"], 3.0, True)
        chart["GraphQL: 1 cached operation / 1 REST hit"] = (graph["single_ratio"], 0.6, True)
        chart["GraphQL: 5 misses in one document / 1 s model"] = (graph["misses_seconds"], 1.2, False)
    if args.chart and chart:
        _chart(args.chart, chart)


if __name__ == "__main__":
    main()
