"""Real processes for tests: gunicorn, the fake upstream, a private Redis; each on a free port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtest._procs import BIN, ROOT, find_binary, free_port, gunicorn, redis, service_env, stop, wait_http

__all__ = [
    "BIN",
    "ROOT",
    "FakeUpstreamProcess",
    "Server",
    "free_port",
    "held_burst",
    "job_worker",
    "make_app",
    "metric_total",
    "need_binary",
    "provider_env",
    "provider_server",
    "redis_env",
    "redis_server",
    "service_env",
    "start_server",
    "stop_apps",
    "wait_http",
    "wait_until",
    "waiting_requests",
]

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 60, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` s.
    The deadline is generous on purpose: it bounds a hang, it never decides a result."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(0.02)


def need_binary(name: str) -> str:
    """Return the binary's path; skip the test when missing, or fail when REQUIRE_SERVICES is set
    (CI installs every binary first, so a skip there would hide a gap)."""
    path = find_binary(name)
    if path:
        return path
    message = f"{name} is not installed (needed for this test)"
    if os.environ.get("REQUIRE_SERVICES"):
        pytest.fail(message + "; REQUIRE_SERVICES is set, so this is a failure")
    pytest.skip(message)


class FakeUpstreamProcess:
    """`python -m loadtest.fake_upstream` in a subprocess, driven over its HTTP control API."""

    def __init__(self, latency: float = 0.0, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.fake_upstream", "--port", str(self.port), "--latency", str(latency)],
            cwd=ROOT,
        )
        wait_http(self.url + "/_stats", proc=self.proc)

    def stats(self) -> dict[str, Any]:
        return requests.get(self.url + "/_stats", timeout=5).json()  # type: ignore[no-any-return]

    def calls(self) -> int:
        return int(self.stats()["total"])

    def control(self, **spec: Any) -> dict[str, Any]:
        return requests.post(self.url + "/_control", json=spec, timeout=5).json()  # type: ignore[no-any-return]

    def reset(self, latency: float = 0.0) -> None:
        requests.post(self.url + "/_reset", timeout=5)
        self.control(latency=latency, sticky=None)

    def held(self) -> int:
        """Model calls parked at the gate (see `hold`)."""
        return int(self.stats()["held"])

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Park every model call at a gate until the block ends (or `release()`)."""
        self.control(hold=True)
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        self.control(release=True)

    def stop(self) -> None:
        stop(self.proc)


class Server:
    """A running gunicorn; `url` is its base address."""

    def __init__(self, url: str, proc: subprocess.Popen[Any], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def start_server(overrides: dict[str, str] | None = None, workers: int = 1) -> Iterator[Server]:
    """Run `gunicorn -c config/gunicorn.conf.py wsgi:app` as `make run` does, on a free port."""
    with gunicorn(overrides, workers) as (url, proc, log):
        yield Server(url, proc, log)


def provider_env(provider: str, upstream: FakeUpstreamProcess) -> dict[str, str]:
    """Settings for a server whose provider talks to the fake upstream (template needs none)."""
    if provider == "anthropic":
        return {"ANTHROPIC_API_KEY": "sk-ant-test", "ANTHROPIC_BASE_URL": upstream.url}
    if provider == "openai":
        return {"LLM_PROVIDER": "openai", "OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-test"}
    return {}


@contextlib.contextmanager
def provider_server(provider: str, upstream: FakeUpstreamProcess) -> Iterator[tuple[str, Server]]:
    """A 2-worker server for `provider`, with a short deadline and a breaker that never opens."""
    env = {
        **provider_env(provider, upstream),
        "UPSTREAM_TIMEOUT": "2",
        "UPSTREAM_MAX_RETRIES": "2",
        "BREAKER_FAIL_MAX": "1000",
    }
    with start_server(env, workers=2) as server:
        yield provider, server


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Run a private redis-server on a free port (nothing persisted); yield its URL."""
    with redis(need_binary("redis-server")) as url:
        yield url


def redis_env(url: str) -> dict[str, str]:
    """Settings for a server that shares `url`'s Redis, for tests that count what Redis shares
    (one upstream call, one rate-limit window). The production socket timeout (0.25 s) treats a
    slower reply as an outage and goes on without Redis, as it should; on a loaded test machine
    such a reply is only slowness, and the count would then measure the machine. Tests of the
    outage path itself keep the default."""
    return {"REDIS_URL": url, "REDIS_SOCKET_TIMEOUT": "5"}


def waiting_requests(urls: Sequence[str]) -> int:
    """Requests the servers at `urls` hold waiting on an identical in-flight call, summed over
    their workers (`coalescing_waiting_requests` in /metrics)."""
    waiting = 0.0
    for url in urls:
        for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
            if family.name == "coalescing_waiting_requests":
                waiting += sum(sample.value for sample in family.samples)
    return int(waiting)


def metric_total(urls: Sequence[str], name: str) -> float:
    """A metric summed over every sample (all labels, all workers) of the servers at `urls`."""
    total = 0.0
    for url in urls:
        for family in text_string_to_metric_families(requests.get(url + "/metrics", timeout=10).text):
            total += sum(sample.value for sample in family.samples if sample.name == name)
    return total


def held_burst(
    upstream: FakeUpstreamProcess,
    urls: Sequence[str],
    send: Callable[[int], Any],
    n: int,
    waiting: Callable[[], int] | None = None,
) -> tuple[list[Any], int]:
    """Send `n` requests at once while the upstream holds its answers; release it only when each
    request is either parked at the upstream or waiting on an identical call in flight, so the
    burst is concurrent by construction, whatever the machine's speed. `waiting` counts the
    requests waiting on another's call (default: the coalescing_waiting_requests gauge). Return
    (responses, the number of upstream calls that were parked)."""
    count_waiting = waiting or (lambda: waiting_requests(urls))
    # The gate opens before the pool waits for its threads, also when an assertion fails.
    with ThreadPoolExecutor(max_workers=n) as pool, upstream.hold():
        futures = [pool.submit(send, i) for i in range(n)]

        def everyone_waits() -> int:
            done = [f for f in futures if f.done()]
            if done:  # an answer before the release: report it rather than wait for the deadline
                raise AssertionError(f"{len(done)} request(s) answered while the upstream was held: {done[0].result()}")
            held = upstream.held()
            return held if held + count_waiting() == n else 0

        parked = wait_until(everyone_waits, what=f"{n} requests parked or waiting")
        upstream.release()
        return [f.result() for f in futures], parked


def job_worker(env: dict[str, str], log: Path) -> subprocess.Popen[Any]:
    """`python -m app.jobs.worker` (as `make worker` runs it) with `env`, its output in `log`."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "app.jobs.worker"],
            cwd=ROOT,
            env=service_env(env, free_port(), 1),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


_BUILT: list[Any] = []


def make_app(settings: Mapping[str, str] | None = None) -> Any:
    """The tests' one app factory: the app as a worker builds it (create_app), with
    APP_ENV=testing and exactly `settings` besides; what it starts (a job runner, span export)
    is stopped when the test ends (`stop_apps`, run by an autouse fixture in tests/conftest.py)."""
    from app import create_app

    app = create_app({"APP_ENV": "testing", **(settings or {})})
    _BUILT.append(app)
    return app


def stop_apps() -> None:
    """Stop what the apps built by `make_app` started: their jobs, their span export."""
    from app.parts import parts_of

    while _BUILT:
        parts = parts_of(_BUILT.pop())
        if parts.jobs is not None:
            parts.jobs.stop(grace=1.0)
        if parts.tracing is not None:
            parts.tracing.shutdown()
