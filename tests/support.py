"""Real processes for tests: gunicorn, the fake upstream, a private Redis; each on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from loadtest._procs import BIN, ROOT, free_port, gunicorn, redis, service_env, stop, wait_http

__all__ = [
    "BIN",
    "ROOT",
    "FakeUpstreamProcess",
    "Server",
    "free_port",
    "need_binary",
    "provider_env",
    "provider_server",
    "redis_server",
    "service_env",
    "start_server",
    "wait_http",
]


def need_binary(name: str) -> str:
    """Return the binary's path; skip the test when missing, or fail when REQUIRE_SERVICES is set
    (CI installs every binary first, so a skip there would hide a gap)."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path:
        return path
    message = f"{name} is not installed (needed for this test)"
    if os.environ.get("REQUIRE_SERVICES"):
        pytest.fail(message + "; REQUIRE_SERVICES is set, so this is a failure")
    pytest.skip(message)


class FakeUpstreamProcess:
    """`python -m loadtest.fake_upstream` in a subprocess, driven over its HTTP control API."""

    def __init__(self, latency: float = 0.0) -> None:
        self.port = free_port()
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
