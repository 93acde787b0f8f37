"""Every store fails closed, on a real server: a cap or a budget that cannot be counted refuses
(503 + Retry-After) and never reaches the model; a job store that cannot be trusted refuses every
job request; readiness names each broken store."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support import FakeUpstreamProcess, provider_env, start_server, wait_until

pytestmark = pytest.mark.integration

CORRUPT = b"not a database, " * 512


def _corrupt(name: str) -> Callable[[Path], None]:
    return lambda cache: (cache / name).write_bytes(CORRUPT)


def _blocked(name: str) -> Callable[[Path], None]:
    """A directory where the file should be: it cannot be opened as a database."""
    return lambda cache: (cache / name).mkdir()


# (name, break the cache directory, settings, headers, the refusal's error, the readiness check)
BROKEN = [
    (
        "upstream cap, file corrupt",
        _corrupt("upstream.sqlite3"),
        {"UPSTREAM_MAX_CONCURRENCY": "5"},
        {},
        "Upstream budget unavailable",
        "upstreamBudget",
    ),
    (
        "key budget, file corrupt",
        _corrupt("upstream.sqlite3"),
        {"API_KEYS_FILE": "KEYS"},
        {"X-API-Key": "alice-secret"},
        "Budget unavailable",
        "keyBudgets",
    ),
]


@pytest.mark.parametrize(("name", "breaks", "env", "headers", "error", "check"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_cap_or_budget_that_cannot_be_counted_refuses(
    fake_upstream: FakeUpstreamProcess,
    tmp_path: Path,
    name: str,
    breaks: Callable[[Path], None],
    env: dict[str, str],
    headers: dict[str, str],
    error: str,
    check: str,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    breaks(cache)
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.alice]\nsecret = "alice-secret"\ntokens_per_day = 1000000\n')
    settings = {k: str(keys) if v == "KEYS" else v for k, v in env.items()}
    with start_server(
        {**provider_env("anthropic", fake_upstream), "CACHE_DIR": str(cache), **settings}, workers=2
    ) as s:

        def ask(i: int) -> requests.Response:
            body = {"prompt": f"capped {i}", "mode": "code"}
            return requests.post(s.url + "/api/optimize", json=body, headers=headers, timeout=60)

        with fake_upstream.hold(), ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(ask, range(20)))
        assert fake_upstream.calls() == 0  # nothing reached the model
        for answer in answers:
            assert answer.status_code == 503 and answer.json()["error"] == error, answer.text
            assert int(answer.headers["Retry-After"]) >= 1
        ready = requests.get(s.url + "/health/ready", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"][check]["status"] == "fail"
        assert "upstream.sqlite3" in ready.json()["checks"][check].get("error", "upstream.sqlite3")


def test_a_job_database_deleted_while_running_accepts_nothing_more(tmp_path: Path) -> None:
    """Two workers share the file; it is deleted under them: no submission is accepted after
    that (each would go into a file that vanishes at the next restart), and readiness fails."""
    cache = tmp_path / "cache"
    with start_server({"CACHE_DIR": str(cache)}, workers=2) as s:
        job = {"task": "optimize", "input": {"prompt": "before", "mode": "code"}}
        assert requests.post(s.url + "/api/jobs", json=job, timeout=30).status_code == 202
        (cache / "jobs.sqlite3").unlink()
        after = [
            requests.post(
                s.url + "/api/jobs",
                json={"task": "optimize", "input": {"prompt": f"after {i}", "mode": "code"}},
                timeout=30,
            )
            for i in range(20)
        ]
        assert [a.status_code for a in after] == [503] * 20
        wait_until(
            lambda: (
                "deleted" in requests.get(s.url + "/health/ready", timeout=30).json()["checks"]["jobs"].get("error", "")
            ),
            what="readiness to name the deleted file",
        )
