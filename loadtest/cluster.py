"""`make cluster`: a whole fleet on this machine, in the foreground — Redis, N service instances
(each a gunicorn with its own workers and port) and the repository's nginx balancing over them.

    python -m loadtest.cluster [--instances 2] [--workers 2] [--job-workers 2] [--port 8080] [--first-port 3101]

Each instance runs with the documented fleet settings: TRUSTED_PROXIES=1 (nginx appends the
client address) and one shared REDIS_URL — the caller's, or a private redis-server started here
when REDIS_URL is unset. Every other variable (provider keys, LOG_LEVEL, ...) passes through.
Beside them run `--job-workers` job workers (`make worker`: python -m app.jobs.worker), which run
the jobs the instances accept. Ctrl-C or SIGTERM stops everything: nginx first (no new requests),
then the job workers (running jobs get their grace, the rest go back to the queue), then each
instance gracefully (in-flight requests finish), then the private Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from loadtest._procs import BIN, EDGE_LOG, ROOT, find_binary, mtail, nginx, redis, stop, wait_http

__all__ = ["main"]


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """`count` distinct free ports, none of `taken` (ports promised to nginx and the instances)."""
    found: list[int] = []
    while len(found) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken and port not in found:
            found.append(port)
    return found


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def _instance(port: int, workers: int, redis_url: str) -> Iterator[subprocess.Popen[Any]]:
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "TRUSTED_PROXIES": "1",
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        start_new_session=True,  # Ctrl-C reaches only this runner, which stops everything in order
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health/live", timeout=60, proc=proc)
        yield proc
    finally:
        stop(proc, signal.SIGTERM, timeout=35)  # graceful: gunicorn's graceful_timeout is 30 s


@contextlib.contextmanager
def _job_worker(redis_url: str, port: int) -> Iterator[subprocess.Popen[Any]]:
    env = {**os.environ, "REDIS_URL": redis_url, "JOB_WORKER_PORT": str(port), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([str(BIN / "python"), "-m", "app.jobs.worker"], cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/live", timeout=60, proc=proc)
        yield proc
    finally:
        stop(proc, signal.SIGTERM, timeout=40)  # graceful: running jobs get 30 s


@contextlib.contextmanager
def _shared_redis() -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    binary = find_binary("redis-server")
    if binary is None:
        raise SystemExit("cluster: REDIS_URL is unset and redis-server is not installed (apt-get install redis-server)")
    with redis(binary) as url:
        yield url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2, help="service instances (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per instance (default 2)")
    parser.add_argument("--job-workers", type=int, default=2, help="job worker processes (default 2)")
    parser.add_argument("--port", type=int, default=8080, help="where nginx listens (default 8080)")
    # Not 3001: that is where `make run` serves, so both can run side by side.
    parser.add_argument("--first-port", type=int, default=3101, help="the first instance's port (default 3101)")
    args = parser.parse_args(argv)
    if args.instances < 1 or args.workers < 1 or args.job_workers < 0:
        parser.error("--instances and --workers must be at least 1, --job-workers at least 0")
    ports = [args.first_port + i for i in range(args.instances)]
    taken = [p for p in (args.port, *ports) if _port_taken(p)]
    if taken:
        raise SystemExit(
            f"cluster: port(s) {', '.join(map(str, taken))} already in use; choose others with "
            "make cluster CLUSTER_PORT=<nginx port> FIRST_PORT=<first instance port> "
            "(python -m loadtest.cluster: --port, --first-port)"
        )
    nginx_bin = find_binary("nginx")
    if nginx_bin is None:
        raise SystemExit("cluster: nginx is not installed (apt-get install nginx)")

    stopping = False

    def request_stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(_shared_redis())
        procs = [stack.enter_context(_instance(port, args.workers, redis_url)) for port in ports]
        # Once the instances hold their ports: the job workers' come from the free ones left.
        worker_ports = _free_ports(args.job_workers, {args.port, *ports})
        job_workers = [stack.enter_context(_job_worker(redis_url, port)) for port in worker_ports]
        edge_dir = stack.enter_context(tempfile.TemporaryDirectory())
        front = stack.enter_context(
            nginx([f"127.0.0.1:{p}" for p in ports], nginx_bin, port=args.port, workdir=edge_dir)
        )
        # The edge tier's counters (prometheus/edge.mtail), where mtail is installed.
        mtail_bin = find_binary("mtail")
        edge_metrics = stack.enter_context(mtail(mtail_bin, f"{edge_dir}/{EDGE_LOG}")) if mtail_bin else None
        print(
            f"\ncluster up: send requests to {front} — nginx over {args.instances} instance(s) × "
            f"{args.workers} worker(s), {len(job_workers)} job worker(s), Redis at {redis_url}",
            flush=True,
        )
        for port in ports:
            print(f"  instance http://127.0.0.1:{port}   metrics http://127.0.0.1:{port}/metrics", flush=True)
        for port in worker_ports:
            print(f"  job worker metrics http://127.0.0.1:{port}/metrics", flush=True)
        if edge_metrics is not None:
            print(f"  edge tier (nginx, via mtail) metrics {edge_metrics}/metrics", flush=True)
        else:
            print("  edge tier metrics: mtail is not installed (apt-get install mtail)", flush=True)
        targets = ", ".join(f'"localhost:{p}"' for p in (*ports, *worker_ports))
        print(f"  Prometheus scrape targets: [{targets}]", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        reported: set[int] = set()
        while not stopping:
            for port, proc in zip(ports, procs, strict=True):
                if proc.poll() is not None and port not in reported:
                    reported.add(port)
                    print(f"cluster: instance on {port} exited ({proc.returncode}); nginx routes around it", flush=True)
            time.sleep(0.2)
        print("cluster: stopping nginx, then the job workers, then each instance gracefully, then Redis", flush=True)
        # ExitStack unwinds in reverse: nginx, job workers, the instances (last started first), Redis.
    print("cluster: stopped", flush=True)


if __name__ == "__main__":
    main()
    sys.exit(0)
