"""`make cluster` as an operator runs it: one command brings up Redis, two instances and nginx,
says where to send requests, answers through nginx, and one SIGTERM stops every process."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest
import requests

from tests.support import ROOT, free_port, need_binary, wait_until

pytestmark = pytest.mark.integration


def _two_free_ports() -> int:
    """A port p with p + 1 free too (the instances take consecutive ports)."""
    while True:
        port = free_port()
        if port < 65000 and all(_free(p) for p in (port, port + 1)):
            return port


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_one_command_starts_the_fleet_and_one_signal_stops_it() -> None:
    need_binary("nginx")
    need_binary("redis-server")
    front, first = free_port(), _two_free_ports()
    command = [sys.executable, "-m", "loadtest.cluster", "--instances", "2", "--workers", "1"]
    proc = subprocess.Popen(
        [*command, "--port", str(front), "--first-port", str(first)],
        cwd=ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "APP_ENV": "testing", "LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        banner = "".join(lines)
        assert f"send requests to http://127.0.0.1:{front}" in banner, banner
        assert f"metrics http://127.0.0.1:{first}/metrics" in banner and f"127.0.0.1:{first + 1}/metrics" in banner
        children = psutil.Process(proc.pid).children(recursive=True)
        names = {c.name() for c in children}
        assert "nginx" in names and "redis-server" in names, names
        body = {"prompt": "through the whole fleet", "mode": "code"}
        answers = [requests.post(f"http://127.0.0.1:{front}/api/optimize", json=body, timeout=30) for _ in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        # The first made by an instance; the rest answered by nginx's edge tier (L3).
        assert answers[0].headers["X-Cache"] == "MISS" and answers[0].headers["X-Cache-Edge"] == "MISS"
        assert {a.headers["X-Cache-Edge"] for a in answers[1:]} == {"HIT"}
        edge = next(line.split()[-1] for line in lines if "edge tier (nginx, via mtail) metrics" in line)
        wait_until(
            lambda: 'edge_requests_total{cache="HIT",operation="optimize"' in requests.get(edge, timeout=10).text,
            what="the edge's hits counted by the cluster's mtail",
        )
        # Jobs: accepted by the instances, run by the cluster's job workers.
        assert sum("app.jobs.worker" in " ".join(c.cmdline()) for c in children) == 2
        worker_metrics = [line.split()[-1] for line in lines if "job worker metrics" in line]
        assert len(worker_metrics) == 2, banner
        job = {"task": "generate-questions", "priority": "high", "input": {"prompt": "a job through the fleet"}}
        accepted = requests.post(f"http://127.0.0.1:{front}/api/jobs", json=job, timeout=30)
        assert accepted.status_code == 202, accepted.text
        location = f"http://127.0.0.1:{front}" + accepted.headers["Location"]
        done = wait_until(
            lambda: (found := requests.get(location, timeout=30).json())["status"] == "succeeded" and found,
            what="the job run by a job worker",
        )
        assert done["result"]["questions"]
        # The job worker that ran it counts it on its own /metrics (one of the two).
        finished = [
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in requests.get(url, timeout=30).text.splitlines()
                if line.startswith("jobs_finished_total{")
            )
            for url in worker_metrics
        ]
        assert sorted(finished) == [0.0, 1.0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_until(
            lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children), what="all stopped"
        )
    finally:
        if proc.poll() is None:  # the test failed with the fleet up: stop it in order, as Ctrl-C does
            fleet = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for child in fleet:  # whatever outlived it (each part runs in its own session)
                if child.is_running():
                    child.kill()
        if proc.stdout is not None:
            proc.stdout.close()
