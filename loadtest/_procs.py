"""Process helpers shared by benchmarks, load tests and the test suite: ports, waits, gunicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

__all__ = ["BIN", "ROOT", "fake_upstream", "free_port", "gunicorn", "redis", "stop", "wait_http"]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until `url` answers anything; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1).close()
            return
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process and wait; kill it if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def service_env(overrides: dict[str, str], port: int, workers: int) -> dict[str, str]:
    """The environment for a private server: ours only, none of the caller's provider settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "ANTHROPIC_", "OPENAI_", "REDIS_"))}
    env.update(
        {
            "APP_ENV": "testing",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEB_CONCURRENCY": str(workers),
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(overrides)
    return env


@contextlib.contextmanager
def gunicorn(
    overrides: dict[str, str] | None = None, workers: int = 1, app: str = "wsgi:app"
) -> Iterator[tuple[str, subprocess.Popen[Any], Path]]:
    """Run `gunicorn -c config/gunicorn.conf.py <app>` on a free port; yield (url, process, log)."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", app],
            cwd=ROOT,
            env=service_env(overrides or {}, port, workers),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health/live" if app == "wsgi:app" else url, timeout=30, proc=proc)
        yield url, proc, Path(log.name)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n--- server output ---\n{Path(log.name).read_text(errors='replace')}") from None
    finally:
        # SIGQUIT: gunicorn's quick shutdown. A gevent worker notices SIGTERM only at its next
        # one-second tick, which made every private server cost ~0.8 s more to stop; tests that
        # prove graceful shutdown send SIGTERM themselves.
        stop(proc, signal.SIGQUIT)
        Path(log.name).unlink(missing_ok=True)


@contextlib.contextmanager
def fake_upstream(latency: float = 0.0, video_latency: float | None = None) -> Iterator[str]:
    """Run `python -m loadtest.fake_upstream` on a free port; yield its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "loadtest.fake_upstream", "--port", str(port), "--latency", str(latency)]
    if video_latency is not None:
        command += ["--video-latency", str(video_latency)]
    proc = subprocess.Popen(command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/_stats", proc=proc)
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def redis(binary: str) -> Iterator[str]:
    """Run a private redis-server on a free port (nothing persisted); yield its URL."""
    import redis as redis_py

    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis_py.Redis(port=port)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    break
                except redis_py.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            client.close()
            stop(proc)
