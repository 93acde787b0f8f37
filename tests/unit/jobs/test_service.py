"""The job service in one process (the app built as a worker builds it, its runner started by
hand): submit, run, cancel, re-queue, and the figures it reports."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.jobs.service import Jobs
from app.parts import parts_of
from tests.support import make_app


def _until(condition: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.02)
    return value


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app({"CACHE_DIR": str(tmp_path / "cache"), "JOB_LEASE_SECONDS": "1"})  # type: ignore[no-any-return]


def _jobs(app: Flask) -> Jobs:
    jobs = parts_of(app).jobs
    assert jobs is not None
    return jobs


def _status(client: FlaskClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200
    return response.get_json()  # type: ignore[no-any-return]


def test_a_job_is_run_by_the_runner_and_its_figures_are_reported(app: Flask) -> None:
    client = app.test_client()
    submitted = client.post("/api/jobs", json={"task": "generate-questions", "input": {"prompt": "tides"}})
    assert submitted.status_code == 202
    job_id = submitted.get_json()["id"]
    assert _status(client, job_id)["status"] == "queued"
    jobs = _jobs(app)
    assert client.get("/health/ready").get_json()["checks"]["jobs"] == {"status": "ok", "queued": 1, "running": 0}
    jobs.keep()  # the figures: one queued
    metrics = parts_of(app).instruments.metrics  # type: ignore[union-attr]
    assert metrics.jobs_queued.labels("normal")._value.get() == 1
    jobs.runner.start()
    assert jobs.runner.wait_started(10)
    done = _until(lambda: (job := _status(client, job_id))["status"] == "succeeded" and job)
    assert done["result"]["questions"] and done["error"] is None
    with client.get(f"/api/jobs/{job_id}/events") as events:
        text = events.get_data(as_text=True)
    assert text.startswith("event: status") and '"status":"succeeded"' in text and "refined" not in text
    cached = client.post("/api/jobs", json={"task": "generate-questions", "input": {"prompt": "tides"}})
    assert cached.get_json()["status"] == "succeeded"  # answered from the cache at once
    jobs.keep()
    assert metrics.jobs_queued.labels("normal")._value.get() == 0
    assert metrics.jobs_oldest._value.get() == 0


def test_an_optimize_job_s_events_end_with_the_stream_s_events(app: Flask) -> None:
    client = app.test_client()
    jobs = _jobs(app)
    jobs.runner.start()
    body = {"prompt": "a quiet harbour", "mode": "video"}
    job_id = client.post("/api/optimize", json=body, headers={"Prefer": "respond-async"}).get_json()["id"]
    with client.get(f"/api/jobs/{job_id}/events") as events:
        text = events.get_data(as_text=True)
    stream = client.post("/api/optimize-stream", json=body).get_data(as_text=True)
    assert text.endswith(stream)


def test_a_job_whose_runner_went_silent_is_run_again(app: Flask) -> None:
    client = app.test_client()
    jobs = _jobs(app)
    job_id = client.post("/api/jobs", json={"task": "optimize", "input": {"prompt": "x", "mode": "code"}}).get_json()[
        "id"
    ]
    task = jobs.queue.take()  # a runner takes it — which claims it — and dies before running it
    assert task is not None and task.args == (job_id,)
    assert jobs.store.get(job_id).status == "running"  # type: ignore[union-attr]
    jobs.runner.start()  # another runner: the lease (1 s) ends, the job is queued again and run
    done = _until(lambda: (job := _status(client, job_id))["status"] == "succeeded" and job)
    assert done["result"]["optimizedPrompt"]
    assert jobs.store.get(job_id).attempts == 2  # type: ignore[union-attr]


def test_cancel_before_it_runs(app: Flask) -> None:
    client = app.test_client()
    job_id = client.post("/api/jobs", json={"task": "optimize", "input": {"prompt": "y", "mode": "code"}}).get_json()[
        "id"
    ]
    cancelled = client.delete(f"/api/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    jobs = _jobs(app)
    jobs.runner.start()
    assert jobs.runner.wait_started(10)
    gevent.sleep(0.3)  # the runner takes the task and skips it
    assert _status(client, job_id)["status"] == "cancelled" and _status(client, job_id)["result"] is None
    assert client.delete(f"/api/jobs/{job_id}").get_json()["status"] == "cancelled"
    assert jobs.queue.size() == 0


def test_without_a_place_to_keep_them_jobs_answer_503() -> None:
    client = make_app().test_client()  # no CACHE_DIR, no REDIS_URL
    response = client.post("/api/jobs", json={"task": "optimize", "input": {"prompt": "x", "mode": "code"}})
    assert response.status_code == 503 and response.get_json()["error"] == "Jobs unavailable"
    # Prefer: respond-async is a preference: without jobs the answer comes at once
    plain = client.post("/api/optimize", json={"prompt": "x", "mode": "code"}, headers={"Prefer": "respond-async"})
    assert plain.status_code == 200 and "Preference-Applied" not in plain.headers


def test_a_deleted_job_database_fails_closed_and_says_so(app: Flask, tmp_path: Path) -> None:
    """The file deleted while the service runs: every job request is refused (503, never a 202
    into a file that vanishes at the next restart) and readiness fails naming it."""
    client = app.test_client()
    job_id = client.post("/api/jobs", json={"task": "optimize", "input": {"prompt": "z", "mode": "code"}}).get_json()[
        "id"
    ]
    (tmp_path / "cache" / "jobs.sqlite3").unlink()
    assert client.get(f"/api/jobs/{job_id}").status_code == 503
    refused = client.post("/api/jobs", json={"task": "optimize", "input": {"prompt": "after", "mode": "code"}})
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.get_json()["status"] == "degraded"  # the rest still serves
    assert ready.get_json()["checks"]["jobs"]["status"] == "warn"
    assert "jobs.sqlite3 was deleted while in use" in ready.get_json()["checks"]["jobs"]["error"]


def test_a_submission_the_store_refuses_is_not_kept(app: Flask, tmp_path: Path) -> None:
    """The store cannot keep the job (its table gone): 503, and nothing is queued — the record
    and its place on the queue are one write, so there is no half to run or to clean up."""
    client = app.test_client()
    jobs = _jobs(app)
    with sqlite3.connect(tmp_path / "cache" / "jobs.sqlite3") as db:
        db.execute("alter table job rename to job_gone")
    refused = client.post("/api/jobs", json={"task": "optimize", "input": {"prompt": "never", "mode": "code"}})
    assert refused.status_code == 503 and refused.get_json()["error"] == "Jobs unavailable"
    with sqlite3.connect(tmp_path / "cache" / "jobs.sqlite3") as db:
        db.execute("alter table job_gone rename to job")
    assert jobs.store.counts()[0] == {"high": 0, "normal": 0, "low": 0}
    assert jobs.queue.take() is None


def test_a_job_store_broken_at_start_refuses_jobs_and_respond_async(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "jobs.sqlite3").write_bytes(b"not a database, " * 512)
    client = make_app({"CACHE_DIR": str(cache)}).test_client()
    submitted = client.post("/api/jobs", json={"task": "optimize", "input": {"prompt": "x", "mode": "code"}})
    assert submitted.status_code == 503 and "cannot be opened" in submitted.get_json()["details"]
    asked = client.post("/api/optimize", json={"prompt": "x", "mode": "code"}, headers={"Prefer": "respond-async"})
    assert asked.status_code == 503 and int(asked.headers["Retry-After"]) >= 1  # never silently synchronous
    ready = client.get("/health/ready").get_json()
    assert ready["status"] == "degraded" and ready["checks"]["jobs"]["status"] == "warn"
    assert "jobs.sqlite3" in ready["checks"]["jobs"]["error"]


def test_a_job_whose_runner_died_after_storing_the_answer_is_not_paid_twice(
    tmp_path: Path, fake_upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner dies (its greenlet killed) right after the answer reached the cache and before
    the record says so: the job is queued again when its lease ends, and its second run is
    answered from the cache — the model is called once."""
    app = make_app(
        {
            "CACHE_DIR": str(tmp_path / "cache"),
            "JOB_LEASE_SECONDS": "1",
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "ANTHROPIC_BASE_URL": fake_upstream.url,
        }
    )
    jobs = _jobs(app)
    disk = jobs.prompts.gateway.l2
    store = disk.set
    deaths = []

    def store_then_die(*args: Any, **kwargs: Any) -> Any:
        stored = store(*args, **kwargs)
        if not deaths:
            deaths.append(time.monotonic())
            raise gevent.GreenletExit()  # what SIGKILL does to the process, at this exact point
        return stored

    monkeypatch.setattr(disk, "set", store_then_die)
    client = app.test_client()
    try:
        job_id = client.post("/api/jobs", json={"task": "generate-questions", "input": {"prompt": "once"}}).get_json()[
            "id"
        ]
        jobs.runner.start()
        done = _until(lambda: (job := _status(client, job_id))["status"] == "succeeded" and job)
    finally:
        jobs.stop(grace=1.0)
    assert deaths and done["result"]["questions"]
    assert jobs.store.get(job_id).attempts == 2  # type: ignore[union-attr]  # run again after the death
    assert fake_upstream.calls() == 1
