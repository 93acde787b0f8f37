"""The on-machine cache tier (DiskCache) and the app around it: shared by every worker of a
machine, kept across restarts, warming L1 at start, and every fault — a directory that cannot
be made, a corrupt or locked database, a full disk, a value it did not write — served around:
warned once with the path and the reason, counted, reported by /health/ready, never a crash."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import pytest
from flask import Flask
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.cache import CachedValue, DiskCache
from app.parts import parts_of
from tests.support import make_app

BODY = {"prompt": "Explain the CAP theorem with one example", "mode": "reasoning"}


def _value(data: bytes = b'{"p":"x","v":"template","m":"t","u":[0,0]}', fresh_for: float = 60) -> CachedValue:
    now = time.time()
    return CachedValue(data, stored_at=now, fresh_until=now + fresh_for)


def _app(directory: Path | str, **settings: str) -> Flask:
    return make_app({"CACHE_DIR": str(directory), **settings})


def _samples(app: Flask) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = parts_of(app).instruments.registry  # type: ignore[union-attr]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def _hits(app: Flask, tier: str) -> float:
    return sum(
        v for (name, labels), v in _samples(app).items() if name == "cache_hits_total" and ("tier", tier) in labels
    )


# --- the tier itself --------------------------------------------------------------------------------


def test_two_handles_on_one_directory_share_entries(tmp_path: Path) -> None:
    """Two workers of one machine: what one stores, the other reads."""
    one, two = DiskCache(str(tmp_path), 10**7, 60), DiskCache(str(tmp_path), 10**7, 60)
    assert one.set("k", _value(b"shared"))
    assert two.get("k").data == b"shared"  # type: ignore[union-attr]
    assert two.size()[0] == 1


def test_the_directory_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    DiskCache(str(directory), 10**7, 60)
    assert directory.is_dir() and (directory.stat().st_mode & 0o777) == 0o700


def test_recent_is_most_recently_stored_first_and_skips_nothing_fresh(tmp_path: Path) -> None:
    disk = DiskCache(str(tmp_path), 10**7, 60)
    for i in range(5):
        now = time.time()
        disk.set(f"k{i}", CachedValue(f"v{i}".encode(), stored_at=now + i, fresh_until=now + 60))
    recent = disk.recent(3, time.monotonic() + 5)
    assert [key for key, _ in recent] == ["k4", "k3", "k2"]


def test_a_value_it_did_not_write_is_never_unpickled(tmp_path: Path, warned: _Records) -> None:
    with diskcache.Cache(str(tmp_path)) as raw:
        raw.set("k", {"a pickled": "object"})  # what a foreign writer could leave there
    disk = DiskCache(str(tmp_path), 10**7, 60)
    assert disk.get("k") is None
    assert disk.failures == 1 and "not written by this service" in disk.last_error


# --- faults ----------------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def warned() -> Iterator[_Records]:
    """The disk tier's log records (the app's loggers do not propagate to pytest's capture)."""
    handler, logger = _Records(), logging.getLogger("app.cache.disk")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _assert_degraded(app: Flask, directory: str, reason: str, warned: _Records) -> None:
    """The app serves, warned with the path and the reason, counts the errors, says degraded."""
    client = app.test_client()
    answers = [client.post("/api/optimize", json=BODY) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["X-Cache"] for a in answers] == ["MISS", "HIT", "HIT"]  # L1 still works
    ready = client.get("/health/ready").get_json()
    assert ready["status"] == "degraded", ready
    check = ready["checks"]["diskCache"]
    assert check["status"] == "warn" and check["path"] == directory and reason in check["lastError"]
    warnings = [record.getMessage() for record in warned.records]
    assert warnings and directory in warnings[0] and reason in warnings[0]
    assert len(warnings) == 1  # once per interval, not once per request
    errors = _samples(app)[("cache_disk_errors_total", ())]
    assert errors >= 1
    assert client.get("/stats").get_json()["cache"]["disk"]["errors"] == errors


def test_a_directory_that_cannot_be_made(tmp_path: Path, warned: _Records) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    directory = str(blocker / "cache")
    _assert_degraded(_app(directory), directory, "NotADirectoryError", warned)


def test_a_read_only_directory(tmp_path: Path, warned: _Records) -> None:
    directory = tmp_path / "read-only"
    directory.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: make the filesystem read-only
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(directory)]).returncode:
            pytest.skip("root, and no read-only mount possible here: permissions do not bind root")
    else:
        directory.chmod(0o500)
    try:
        _assert_degraded(_app(directory), str(directory), "Error", warned)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(directory)], check=False)  # lazily: pool threads hold files


def test_a_corrupt_database(tmp_path: Path, warned: _Records) -> None:
    (tmp_path / "cache.db").write_bytes(b"this is not an SQLite database" * 100)
    _assert_degraded(_app(tmp_path), str(tmp_path), "DatabaseError", warned)


def test_a_database_locked_by_another_process(tmp_path: Path, warned: _Records) -> None:
    # The database made by another process (an open connection here would keep the lock away).
    made = f"import diskcache; diskcache.Cache({str(tmp_path)!r}).close()"
    subprocess.run([sys.executable, "-c", made], check=True)
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(tmp_path / 'cache.db')!r}, isolation_level=None)\n"
            "c.execute('PRAGMA locking_mode=EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        began = time.monotonic()
        app = _app(tmp_path)
        _assert_degraded(app, str(tmp_path), "Timeout", warned)
        assert time.monotonic() - began < 30  # each operation bounded, never a hang
    finally:
        locker.kill()
        locker.wait()
        if locker.stdout is not None:
            locker.stdout.close()


def test_a_full_disk(tmp_path: Path, warned: _Records) -> None:
    directory = tmp_path / "small"
    directory.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(directory)]).returncode:
        pytest.skip("no tmpfs mount possible here (needs root): a full disk cannot be made")
    try:
        disk = DiskCache(str(directory), 10**9, 60)
        stored = [disk.set(f"k{i}", _value(os.urandom(20_000))) for i in range(100)]  # 2 MB into 600 KB
        assert stored[0] and not all(stored)
        assert disk.failures >= 1 and ("full" in disk.last_error or "No space" in disk.last_error)
        time.sleep(1.1)  # the pause after a failure
        assert disk.get("k0") is not None  # what fitted is still served
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)  # lazily: pool threads hold files


# --- the app: one machine, one cache ------------------------------------------------------------


def test_a_second_worker_finds_the_first_ones_answer_on_disk(tmp_path: Path) -> None:
    one, two = _app(tmp_path), _app(tmp_path)  # two workers of one instance
    assert one.test_client().post("/api/optimize", json=BODY).headers["X-Cache"] == "MISS"
    again = two.test_client().post("/api/optimize", json=BODY)
    assert again.headers["X-Cache"] == "HIT"
    assert _hits(two, "disk") == 1
    assert two.test_client().post("/api/optimize", json=BODY).headers["X-Cache"] == "HIT"
    assert _hits(two, "l1") == 1  # copied into L1 on the way
    stats = two.test_client().get("/stats").get_json()["cache"]
    assert stats["hitsByTier"] == {"disk": 1, "l1": 1, "redis": 0}


def test_a_restarted_worker_warms_its_l1_from_disk(tmp_path: Path) -> None:
    before = _app(tmp_path)
    prompts = [f"prompt number {i}" for i in range(20)]
    for prompt in prompts:
        before.test_client().post("/api/optimize", json={"prompt": prompt, "mode": "code"})
    after = _app(tmp_path, CACHE_WARM_ENTRIES="2000")
    assert parts_of(after).warm is not None and parts_of(after).warm[0] == 20  # type: ignore[index]
    client = after.test_client()
    statuses = [client.post("/api/optimize", json={"prompt": p, "mode": "code"}).headers["X-Cache"] for p in prompts]
    assert statuses == ["HIT"] * 20
    assert (_hits(after, "l1"), _hits(after, "disk")) == (20, 0)
    warm = client.get("/health/ready").get_json()["checks"]["cacheWarm"]
    assert warm["entries"] == 20 and warm["status"] == "ok"


def test_warming_is_bounded_and_off_at_zero(tmp_path: Path) -> None:
    before = _app(tmp_path)
    for i in range(5):
        before.test_client().post("/api/optimize", json={"prompt": f"p{i}", "mode": "code"})
    assert parts_of(_app(tmp_path, CACHE_WARM_ENTRIES="2")).warm[0] == 2  # type: ignore[index]
    assert parts_of(_app(tmp_path, CACHE_WARM_ENTRIES="0")).warm[0] == 0  # type: ignore[index]


def test_no_disk_tier_with_redis_or_when_turned_off(tmp_path: Path) -> None:
    assert parts_of(_app(tmp_path, CACHE_DISK_MAX_BYTES="0")).prompts.gateway.l2 is None
    assert parts_of(_app("")).prompts.gateway.l2 is None
    with_redis = _app(tmp_path, REDIS_URL="redis://127.0.0.1:1/0", COALESCING_ENABLED="false")
    assert type(parts_of(with_redis).prompts.gateway.l2).__name__ == "RedisCache"


@pytest.fixture
def stored_answer(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    app = _app(tmp_path)
    answer = app.test_client().post("/api/optimize", json=BODY).get_json()
    yield tmp_path, answer


def test_the_disk_holds_the_same_encoding_as_redis(stored_answer: tuple[Path, dict[str, Any]]) -> None:
    directory, answer = stored_answer
    with diskcache.Cache(str(directory)) as raw:
        (key,) = list(raw.iterkeys())
        value = CachedValue.decode(raw.get(key))
    assert value is not None and json.loads(value.data)["p"] == answer["optimizedPrompt"]
    assert key.startswith("optimize:")


def test_sqlite_errors_are_the_failures_counted(tmp_path: Path) -> None:
    disk = DiskCache(str(tmp_path), 10**7, 60)
    disk.close()
    (tmp_path / "cache.db").write_bytes(b"garbage")
    reopened = DiskCache(str(tmp_path), 10**7, 60)
    assert reopened.get("k") is None and reopened.failures >= 1


def test_a_worker_warms_its_l1_from_redis_too(redis_url: str) -> None:
    """With REDIS_URL, L2 is Redis: a new worker warms from it, most recently stored first."""
    import redis as redis_py

    redis_py.Redis.from_url(redis_url).flushdb()
    settings = {"REDIS_URL": redis_url, "COALESCING_ENABLED": "false", "REDIS_SOCKET_TIMEOUT": "5"}
    before = make_app({**settings})
    prompts = [f"warm from redis {i}" for i in range(12)]
    for prompt in prompts:
        before.test_client().post("/api/optimize", json={"prompt": prompt, "mode": "code"})
    after = make_app({"CACHE_WARM_ENTRIES": "5", **settings})
    assert parts_of(after).warm is not None and parts_of(after).warm[0] == 5  # type: ignore[index]
    client = after.test_client()
    for prompt in prompts[-5:]:  # the five most recent are in L1 already
        assert client.post("/api/optimize", json={"prompt": prompt, "mode": "code"}).headers["X-Cache"] == "HIT"
    assert (_hits(after, "l1"), _hits(after, "redis")) == (5, 0)
    assert client.post("/api/optimize", json={"prompt": prompts[0], "mode": "code"}).headers["X-Cache"] == "HIT"
    assert _hits(after, "redis") == 1  # an older one: read from Redis
