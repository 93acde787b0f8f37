"""The edge tier's drills on a real nginx in front of a real gunicorn (make test-fleet): 100
identical misses at once reach the service once (nginx's cache lock); with the service down an
expired answer stands in within its stale-if-error bound, then nginx answers 503 in JSON; and a
full or read-only cache disk costs the caching, never an answer."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from loadtest._procs import nginx
from tests.integration.test_edge import _post
from tests.support import FakeUpstreamProcess, need_binary, provider_env, start_server

pytestmark = pytest.mark.integration


def _writing(url: str) -> int:
    """Requests nginx is working on now (stub_status), this one included."""
    status = requests.get(url + "/nginx_status", timeout=5).text
    return int(status.split("Writing:")[1].split()[0])


def test_identical_concurrent_misses_reach_the_service_once(fake_upstream: FakeUpstreamProcess) -> None:
    """100 identical requests while the model holds its answer: nginx's cache lock holds all but
    one at the edge — released only once nginx is working on all 100 (stub_status)."""
    n, body = 100, {"prompt": "one hundred at once", "mode": "code"}
    with (
        start_server({**provider_env("anthropic", fake_upstream), "TRUSTED_PROXIES": "1"}, workers=2) as server,
        nginx([server.url.removeprefix("http://")], need_binary("nginx")) as url,
        ThreadPoolExecutor(n) as pool,
        fake_upstream.hold(),
    ):
        futures = [pool.submit(_post, url, body) for _ in range(n)]
        deadline = time.monotonic() + 60
        while _writing(url) < n + 1 or fake_upstream.held() < 1:
            assert time.monotonic() < deadline, (_writing(url), fake_upstream.held())
            time.sleep(0.05)
        fake_upstream.control(release=True)
        answers = [f.result() for f in futures]
    assert [a.status_code for a in answers] == [200] * n
    assert len({a.text for a in answers}) == 1
    assert sorted(a.headers["X-Cache-Edge"] for a in answers).count("MISS") == 1
    assert fake_upstream.calls() == 1


def test_with_the_service_down_an_expired_answer_stands_in_within_its_bound() -> None:
    """CACHE_DEFAULT_TTL=2, STALE_IF_ERROR_SECONDS=3: the service stopped, the edge serves the
    expired answer marked STALE until 3 s past its freshness, then the JSON 503."""
    env = {"TRUSTED_PROXIES": "1", "CACHE_DEFAULT_TTL": "2", "STALE_IF_ERROR_SECONDS": "3"}
    body = {"prompt": "kept through an outage", "mode": "code"}
    with (
        start_server(env) as server,
        nginx([server.url.removeprefix("http://")], need_binary("nginx")) as url,
    ):
        first = _post(url, body)
        fresh_until = time.time() + int(first.headers["Cache-Control"].split("s-maxage=")[1].split(",")[0])
        assert first.headers["X-Cache-Edge"] == "MISS" and fresh_until > time.time()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
        time.sleep(max(0.0, fresh_until + 0.5 - time.time()))  # expired (waiting out the clock)
        stale = _post(url, body)
        assert stale.status_code == 200 and stale.headers["X-Cache-Edge"] == "STALE"
        assert stale.json() == first.json()
        time.sleep(max(0.0, fresh_until + 3 + 1 - time.time()))  # past the bound
        gone = _post(url, body)
        assert gone.status_code == 503 and gone.json()["error"] == "Service unavailable"
        assert gone.headers["Retry-After"]


@contextlib.contextmanager
def _small_disk() -> Iterator[str]:
    """A 256 KB tmpfs of its own (skipped where this process may not mount one)."""
    with tempfile.TemporaryDirectory() as where:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", where], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
        try:
            yield where
        finally:
            subprocess.run(["umount", "-l", where], check=False)


def test_a_full_or_read_only_cache_disk_costs_the_caching_never_an_answer() -> None:
    """The edge's cache on a disk that fills up, then turns read-only: every request is still
    answered (a miss at the edge each time); space back, the edge caches again, no restart."""
    with (
        _small_disk() as disk,
        start_server({"TRUSTED_PROXIES": "1"}) as server,
        nginx([server.url.removeprefix("http://")], need_binary("nginx"), edge=disk) as url,
    ):
        subprocess.run(["dd", "if=/dev/zero", f"of={disk}/filler", "bs=4k"], capture_output=True, check=False)
        for state in ("full", "read-only"):
            if state == "read-only":
                subprocess.run(["mount", "-o", "remount,ro", disk], check=True)
            answers = [_post(url, {"prompt": f"a {state} disk", "mode": "code"}) for _ in range(3)]
            assert [a.status_code for a in answers] == [200] * 3, state
            assert [a.headers["X-Cache-Edge"] for a in answers] == ["MISS"] * 3, state
            assert len({a.text for a in answers}) == 1
        subprocess.run(["mount", "-o", "remount,rw", disk], check=True)
        (Path(disk) / "filler").unlink()
        body = {"prompt": "space again", "mode": "code"}
        assert [_post(url, body).headers["X-Cache-Edge"] for _ in range(2)] == ["MISS", "HIT"]
