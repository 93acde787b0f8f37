"""Jobs on real gunicorn servers (and `python -m app.jobs.worker` processes), the fake model API
behind them: the API's answers and errors, visibility across workers, restarts and keys, one
model call for identical jobs and streams, priorities under one upstream slot, cancellation."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from app.services.modes import context_appendix
from tests.integration.test_metrics import scrape, total
from tests.support import (
    FakeUpstreamProcess,
    metric_total,
    provider_env,
    redis_env,
    start_server,
    wait_until,
)

pytestmark = pytest.mark.integration

H = {"Connection": "close"}  # a new connection each time: gunicorn's workers take turns


def _submit(
    url: str, task: str, data: dict[str, Any], priority: str | None = None, **headers: str
) -> requests.Response:
    body: dict[str, Any] = {"task": task, "input": data}
    if priority is not None:
        body["priority"] = priority
    return requests.post(url + "/api/jobs", json=body, headers={**H, **headers}, timeout=30)


def _job(url: str, job_id: str, **headers: str) -> dict[str, Any]:
    response = requests.get(f"{url}/api/jobs/{job_id}", headers={**H, **headers}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return response.json()  # type: ignore[no-any-return]


def _finished(url: str, job_id: str, **headers: str) -> dict[str, Any]:
    return wait_until(
        lambda: (job := _job(url, job_id, **headers))["status"] in ("succeeded", "failed", "cancelled") and job,
        what=f"job {job_id} to finish",
    )


def _optimize(prompt: str, mode: str = "code") -> dict[str, Any]:
    return {"prompt": prompt, "mode": mode}


def _events(text: str) -> list[tuple[str, Any]]:
    """Server-sent events as (name, data) pairs, heartbeats left out."""
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def _user_sha(prompt: str) -> str:
    """How the fake upstream names a call's user message (its `seen` log)."""
    return hashlib.sha256(f"<prompt>\n{prompt}\n</prompt>{context_appendix(None)}".encode()).hexdigest()[:16]


@pytest.fixture
def cache_env(fake_upstream: FakeUpstreamProcess, tmp_path: Path) -> dict[str, str]:
    """A server as `make run` runs it (no Redis), with the fake model behind it."""
    return {**provider_env("anthropic", fake_upstream), "CACHE_DIR": str(tmp_path / "cache")}


def test_a_job_runs_and_every_worker_sees_it_also_after_a_restart(
    fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str]
) -> None:
    with start_server(cache_env, workers=2) as server:
        submitted = _submit(server.url, "optimize", _optimize("a lighthouse at dusk"), "high")
        assert submitted.status_code == 202, submitted.text
        accepted = submitted.json()
        job_id = accepted["id"]
        assert submitted.headers["Location"] == f"/api/jobs/{job_id}"
        assert len(job_id) == 32 and int(job_id, 16) >= 0  # 128 random bits, hex
        assert (accepted["status"], accepted["task"], accepted["priority"]) == ("queued", "optimize", "high")
        assert accepted["links"] == {"self": f"/api/jobs/{job_id}", "events": f"/api/jobs/{job_id}/events"}
        done = _finished(server.url, job_id)
        assert done["status"] == "succeeded" and done["error"] is None
        direct = requests.post(server.url + "/api/optimize", json=_optimize("a lighthouse at dusk"), timeout=30)
        assert direct.headers["X-Cache"] == "HIT"  # the job's answer is the endpoint's, cached
        assert done["result"] == direct.json()
        assert done["createdAt"] <= done["startedAt"] <= done["finishedAt"]
        # Whichever worker answers: the same record.
        assert all(_job(server.url, job_id) == done for _ in range(10))
        queued = requests.get(f"{server.url}/api/jobs/{job_id}", timeout=30)
        assert "Retry-After" not in queued.headers  # finished: nothing to wait for
        assert fake_upstream.calls() == 1

    with start_server(cache_env, workers=2) as server:  # a restart keeps jobs
        assert _job(server.url, job_id) == done
        again = _submit(server.url, "optimize", _optimize("a lighthouse at dusk"))
        assert again.status_code == 202 and again.json()["status"] == "succeeded"  # cached: done at once
        assert fake_upstream.calls() == 1


def test_bad_submissions_get_the_usual_errors(cache_env: dict[str, str]) -> None:
    with start_server({**cache_env, "JOB_QUEUE_MAX": "1"}, workers=1) as server:
        url = server.url
        unknown = _submit(url, "summarize", {"prompt": "x"})
        assert unknown.status_code == 400 and "'optimize', 'generate-questions'" in unknown.json()["details"]
        priority = _submit(url, "optimize", _optimize("x"), "urgent")
        assert priority.status_code == 400 and "optimize.priority: Input should be 'high'" in priority.json()["details"]
        invalid = _submit(url, "optimize", {"prompt": "x", "mode": "poetry"})
        assert invalid.status_code == 400 and invalid.json()["details"].startswith("optimize.input.mode:")
        extra = requests.post(url + "/api/jobs", json={"task": "optimize", "input": {}, "when": "now"}, timeout=30)
        assert extra.status_code == 400
        media = requests.post(url + "/api/jobs", data="{}", headers={"Content-Type": "text/plain"}, timeout=30)
        assert media.status_code == 415
        for path in ("/api/jobs/0123456789abcdef0123456789abcdef", "/api/jobs/not-an-id", "/api/jobs/x/events"):
            missing = requests.get(url + path, timeout=30)
            assert missing.status_code == 404 and missing.json()["error"] == "Job not found", path
        assert requests.delete(url + "/api/jobs/0123456789abcdef0123456789abcdef", timeout=30).status_code == 404
        assert requests.put(url + "/api/jobs/0123456789abcdef0123456789abcdef", timeout=30).status_code == 405


def test_a_full_queue_answers_503_with_retry_after(
    fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str]
) -> None:
    env = {**cache_env, "JOB_QUEUE_MAX": "2", "UPSTREAM_MAX_CONCURRENCY": "1", "JOB_CONCURRENCY": "1"}
    with fake_upstream.hold(), start_server(env, workers=1) as server:
        first = _submit(server.url, "optimize", _optimize("queue 0")).json()["id"]
        wait_until(lambda: fake_upstream.held() == 1, what="the first job's call")
        accepted = [_submit(server.url, "optimize", _optimize(f"queue {i}")) for i in (1, 2)]
        assert [a.status_code for a in accepted] == [202, 202]
        full = _submit(server.url, "optimize", _optimize("queue 3"))
        assert full.status_code == 503 and full.json()["error"] == "Job queue full"
        assert int(full.headers["Retry-After"]) >= 1
        assert _job(server.url, first)["status"] == "running"


def test_visible_only_to_the_key_that_submitted_it(cache_env: dict[str, str]) -> None:
    with start_server({**cache_env, "API_KEYS": "key-a,key-b"}, workers=2) as server:
        url = server.url
        assert _submit(url, "optimize", _optimize("mine")).status_code == 401
        job_id = _submit(url, "optimize", _optimize("mine"), **{"X-API-Key": "key-a"}).json()["id"]
        assert _finished(url, job_id, **{"X-API-Key": "key-a"})["status"] == "succeeded"
        other = requests.get(f"{url}/api/jobs/{job_id}", headers={"X-API-Key": "key-b"}, timeout=30)
        assert other.status_code == 404
        assert (
            requests.delete(f"{url}/api/jobs/{job_id}", headers={"X-API-Key": "key-b"}, timeout=30).status_code == 404
        )
        assert (
            requests.get(f"{url}/api/jobs/{job_id}/events", headers={"X-API-Key": "key-b"}, timeout=30).status_code
            == 404
        )


def test_prefer_respond_async_makes_a_job_and_events_replay_the_stream(
    fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str]
) -> None:
    with start_server(cache_env, workers=2) as server:
        body = _optimize("a haiku about queues")
        response = requests.post(
            server.url + "/api/optimize", json=body, headers={**H, "Prefer": "respond-async, wait=10"}, timeout=30
        )
        assert response.status_code == 202 and response.headers["Preference-Applied"] == "respond-async"
        job = response.json()
        assert (job["task"], job["priority"]) == ("optimize", "normal")
        with requests.get(server.url + job["links"]["events"], stream=True, timeout=30) as events:
            assert events.headers["Content-Type"].startswith("text/event-stream")
            text = b"".join(events.iter_content(None)).decode()
        events_ = _events(text)
        names = [name for name, _ in events_]
        assert names[0] == "status" and "refined_delta" in names and "refined" in names and "done" in names
        assert events_[-1] == ("status", {"id": job["id"], "status": "succeeded"}) or names[-1] == "done"
        deltas = "".join(data["delta"] for name, data in events_ if name == "refined_delta")
        refined = next(data for name, data in events_ if name == "refined")
        # The same answer as the stream endpoint sends (now from the cache), and the job's result.
        stream = requests.post(server.url + "/api/optimize-stream", json=body, timeout=30).text
        assert refined == next(data for name, data in _events(stream) if name == "refined")
        assert deltas == refined["refined"] == _job(server.url, job["id"])["result"]["optimizedPrompt"]
        plain = requests.post(server.url + "/api/optimize", json=body, timeout=30)
        assert plain.status_code == 200 and "Preference-Applied" not in plain.headers


def test_fifty_identical_jobs_and_a_stream_make_one_model_call(
    fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str]
) -> None:
    body = _optimize("fifty callers, one answer")
    with start_server(cache_env, workers=1) as server, fake_upstream.hold():
        stream = requests.post(server.url + "/api/optimize-stream", json=body, stream=True, timeout=60)
        wait_until(lambda: fake_upstream.held() == 1, what="the stream's call")
        with ThreadPoolExecutor(10) as pool:
            ids = [r.json()["id"] for r in pool.map(lambda _: _submit(server.url, "optimize", body), range(50))]
        wait_until(
            lambda: all(_job(server.url, i)["status"] == "running" for i in ids), what="every job to join the call"
        )
        fake_upstream.release()
        assert stream.status_code == 200 and stream.text.rstrip().endswith('"status":"finished"}')
        results = [_finished(server.url, i) for i in ids]
    assert {r["status"] for r in results} == {"succeeded"}
    assert len({r["result"]["optimizedPrompt"] for r in results}) == 1
    assert fake_upstream.calls() == 1


def test_priorities_under_one_upstream_slot(fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str]) -> None:
    """5 low jobs queued, then 1 high, while the one slot is busy: the high one goes next — but a
    synchronous request arriving meanwhile goes before all of them."""
    env = {**cache_env, "UPSTREAM_MAX_CONCURRENCY": "1"}
    with start_server(env, workers=2) as server:  # one budget for the instance: both workers' calls
        with fake_upstream.hold():
            blocker = _submit(server.url, "optimize", _optimize("blocker")).json()["id"]
            wait_until(lambda: fake_upstream.held() == 1, what="the blocker's call")
            lows = [_submit(server.url, "optimize", _optimize(f"low {i}"), "low").json()["id"] for i in range(5)]
            high = _submit(server.url, "optimize", _optimize("high"), "high").json()["id"]
            wait_until(
                lambda: all(_job(server.url, i)["status"] == "running" for i in [*lows, high]),
                what="every job waiting for the slot",
            )
            with ThreadPoolExecutor(1) as pool:
                sync = pool.submit(
                    requests.post, server.url + "/api/optimize", json=_optimize("synchronous"), timeout=60
                )
                wait_until(
                    lambda: metric_total([server.url], "http_active_requests") >= 2,
                    what="the synchronous request to wait for the slot",
                )
                fake_upstream.release()
                assert sync.result().status_code == 200
        for job_id in [blocker, high, *lows]:
            assert _finished(server.url, job_id)["status"] == "succeeded"
    order = [seen["user_sha"] for seen in fake_upstream.stats()["seen"]]
    expected = ["blocker", "synchronous", "high", *(f"low {i}" for i in range(5))]
    assert order == [_user_sha(p) for p in expected]
    assert fake_upstream.stats()["maxInFlight"] == 1


def test_cancelling_a_running_job_stops_its_model_call(
    fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str]
) -> None:
    body = _optimize("cancel me")
    with start_server(cache_env, workers=2) as server:
        with fake_upstream.hold():
            job_id = _submit(server.url, "optimize", body).json()["id"]
            wait_until(lambda: fake_upstream.held() == 1, what="the job's call")
            cancelled = requests.delete(f"{server.url}/api/jobs/{job_id}", timeout=30)
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            # The runner notices within a second, whichever worker took the DELETE.
            wait_until(lambda: metric_total([server.url], "job_run_seconds_count") == 1, what="the job to stop")
        assert _job(server.url, job_id)["status"] == "cancelled" and _job(server.url, job_id)["result"] is None
        again = requests.post(server.url + "/api/optimize", json=body, timeout=30)
        assert again.headers["X-Cache"] == "MISS"  # the stopped call stored nothing
        assert requests.delete(f"{server.url}/api/jobs/{job_id}", timeout=30).json()["status"] == "cancelled"


@pytest.mark.parametrize("shared", ["one worker", "two workers and Redis"])
def test_cancelling_a_followed_job_ends_its_events_and_stops_its_call(
    fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str], shared: str, request: pytest.FixtureRequest
) -> None:
    """Followers of a job's events do not keep its call alive: DELETE while the model is mid-
    stream ends every follower's events with `cancelled` at once (no `refined`), closes the
    model's stream, stores nothing, and GET agrees."""
    env, workers = cache_env, 1
    if shared != "one worker":
        env = {**cache_env, **redis_env(request.getfixturevalue("redis_url")), "REDIS_PREFIX": "cancel:"}
        env["JOB_RUNNER"], workers = "server", 2
    fake_upstream.control(stream_chunks=20, faults=[{"action": "stream_pause", "after": 3}])
    body = _optimize(f"cancel while followed ({shared})", "video")
    with start_server(env, workers=workers) as server:
        job_id = _submit(server.url, "optimize", body).json()["id"]
        wait_until(lambda: fake_upstream.stats()["paused"] == 1, what="the job's stream, paused mid-way")
        with ThreadPoolExecutor(3) as pool:
            followers = [
                pool.submit(requests.get, f"{server.url}/api/jobs/{job_id}/events", headers=H, timeout=60)
                for _ in range(3)
            ]
            wait_until(lambda: metric_total([server.url], "stream_followers_total") >= 3, what="the followers joined")
            cancelled = requests.delete(f"{server.url}/api/jobs/{job_id}", timeout=30)
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            texts = [f.result().text for f in followers]  # they end while the model is still paused
        # The call is stopped while the model still sends nothing (the producer closed its stream).
        wait_until(
            lambda: total(scrape(server), "streams_finished_total", outcome="cancelled") >= 1,
            what="the job's upstream stream cancelled",
        )
        assert fake_upstream.stats()["paused"] == 1
        for text in texts:
            events = _events(text)
            assert events[-1] == ("status", {"id": job_id, "status": "cancelled"}), events[-3:]
            assert "refined" not in [name for name, _ in events]
        fake_upstream.control(resume=True)
        wait_until(lambda: fake_upstream.stats()["streams"].get("aborted") == 1, what="the model's stream closed")
        assert fake_upstream.stats()["streams"].get("completed", 0) == 0
        assert _job(server.url, job_id)["status"] == "cancelled"
        again = requests.post(server.url + "/api/optimize", json=body, timeout=30)
        assert again.headers["X-Cache"] == "MISS"  # the stopped call stored nothing


@pytest.mark.parametrize("shared", ["one worker", "two workers and Redis"])
def test_an_optimize_job_s_events_follow_its_stream_live(
    fake_upstream: FakeUpstreamProcess, cache_env: dict[str, str], shared: str, request: pytest.FixtureRequest
) -> None:
    """While an optimize job runs, its events are its stream's own deltas, as they are written
    (then status succeeded) — from the runner's worker, or through Redis from another — and
    following them makes no model call of its own."""
    env, workers = cache_env, 1
    if shared != "one worker":
        env = {**cache_env, **redis_env(request.getfixturevalue("redis_url")), "REDIS_PREFIX": "live:"}
        env["JOB_RUNNER"], workers = "server", 2
    body = _optimize(f"live events ({shared})", "video")
    with start_server(env, workers=workers) as server:
        with fake_upstream.hold():
            job_id = _submit(server.url, "optimize", body).json()["id"]
            wait_until(lambda: fake_upstream.held() == 1, what="the job's stream")
            with ThreadPoolExecutor(4) as pool:
                followers = [
                    pool.submit(requests.get, f"{server.url}/api/jobs/{job_id}/events", headers=H, timeout=60)
                    for _ in range(4)  # over both workers, when there are two
                ]
                wait_until(
                    lambda: metric_total([server.url], "stream_followers_total") >= 4, what="the followers joined"
                )
                fake_upstream.release()
                texts = [f.result().text for f in followers]
        assert _finished(server.url, job_id)["status"] == "succeeded"
    assert fake_upstream.calls() == 1
    for text in texts:
        names = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
        assert names[0] == "status" and '"status":"running"' in text
        assert names[-4:] == ["refined_delta", "refined", "done", "status"] or (
            names.index("done") < len(names) - 1 and names[-1] == "status"
        ), names
        assert text.rstrip().endswith('"status":"succeeded"}')


def test_a_worker_keeps_one_redis_client_for_commands_and_one_pool_for_blocking_reads(
    fake_upstream: FakeUpstreamProcess, own_redis_url: str
) -> None:
    """Every kind of request in turn — a miss, a hit, a stream, a job run by this worker — and
    the worker holds Redis connections of two named pools only (commands; blocking reads): no
    other client of its own (the cache, coalescing, budgets and the job store share one)."""
    import os

    import redis

    env = {
        **provider_env("anthropic", fake_upstream),
        **redis_env(own_redis_url),
        "JOB_RUNNER": "server",
        "REDIS_PREFIX": "pools:",
    }
    with start_server(env, workers=1) as server:
        for _ in range(2):  # a miss, then a hit
            assert requests.post(server.url + "/api/optimize", json=_optimize("pools"), timeout=30).status_code == 200
        stream = requests.post(server.url + "/api/optimize-stream", json=_optimize("pools, streamed"), timeout=30)
        assert stream.status_code == 200 and stream.text.rstrip().endswith('"status":"finished"}')
        job = _submit(server.url, "optimize", _optimize("pools, as a job"))
        assert job.status_code == 202
        assert _finished(server.url, job.json()["id"])["status"] == "succeeded"
        clients = redis.Redis.from_url(own_redis_url).client_list()
    ours = [c for c in clients if c["name"] != "" or c["cmd"] not in ("client|list", "client")]
    names = [c["name"] for c in ours]
    assert all(name.startswith("prompt-builder:") for name in names), names  # no stray unnamed client
    pids = {name.rsplit(":", 1)[1] for name in names}
    assert len(pids) == 1 and pids != {str(os.getpid())}, names  # the worker's own
    service = [n for n in names if n.startswith("prompt-builder:service:")]
    reader = [n for n in names if n.startswith("prompt-builder:reader:")]
    assert service and reader and len(names) == len(service) + len(reader), names
    # A pool holds as many connections as were in use at once: the requests, and beside them the
    # job runner's keeper, the lease keeper and the end markers sent off the callers' time.
    assert len(service) <= 4 and len(reader) <= 2, names
