"""The edge tier's figures (make bench-edge): nginx serving a cached answer itself against the
same nginx passing the request to Python for an L1 hit, side by side in one run, beside the
ceiling (a second nginx serving the same bytes as a static file to GETs), and what the edge
holds for N answers.

    python -m loadtest.bench_edge [--rounds 5] [--seconds 2] [--answers 10000]

Both arms go through one nginx (the repository's config/nginx.conf) in front of one gunicorn
(2 gevent workers, the offline builder): the edge arm is a plain request (X-Cache-Edge: HIT),
the Python arm the same request with an X-API-Key header, which the edge never answers (no keys
are configured, so the service answers it from L1). Rounds alternate the arms; the figure is the
median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from loadtest._procs import find_binary, free_port, gunicorn, nginx, stop, wait_http
from loadtest.bench import OPTIMIZE, _wrk

_STATIC = """
worker_processes auto;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        location = /answer.json {{ root {root}; default_type application/json; }}
    }}
}}
"""


@contextlib.contextmanager
def _static_nginx(binary: str, data: bytes) -> Iterator[str]:
    """A second nginx serving `data` as a file, the ceiling of an edge hit; yield its file's URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "answer.json").write_bytes(data)
        (Path(root) / "nginx.conf").write_text(_STATIC.format(port=port, root=root))
        user = " user root;" if os.geteuid() == 0 else ""
        proc = subprocess.Popen(
            [
                binary,
                "-c",
                f"{root}/nginx.conf",
                "-p",
                root,
                "-g",
                f"daemon off; pid {root}/pid; error_log {root}/log;{user}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/answer.json"
        try:
            wait_http(url, proc=proc)
            yield url
        finally:
            stop(proc, signal.SIGQUIT, timeout=10)


def _disk_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--answers", type=int, default=10_000, help="distinct answers stored for the size figure")
    args = parser.parse_args(argv)
    binary = find_binary("nginx")
    if binary is None or shutil.which("wrk") is None:
        raise SystemExit("bench-edge needs nginx and wrk (apt-get install nginx wrk)")
    path, body = OPTIMIZE
    with (
        contextlib.ExitStack() as stack,
        tempfile.TemporaryDirectory() as edge,
        gunicorn({"TRUSTED_PROXIES": "1", "RATE_LIMIT": ""}, 2) as (server, _proc, _log),
        nginx([server.removeprefix("http://")], binary, edge=edge) as url,
    ):
        first = requests.post(url + path, json=body, timeout=30)
        again = requests.post(url + path, json=body, timeout=30)
        ceiling = stack.enter_context(_static_nginx(binary, again.content))
        for _ in range(10):  # each worker's L1 (no L2 here) misses once: until one answers from it
            python = requests.post(
                url + path, json=body, headers={"X-API-Key": "bench", "Connection": "close"}, timeout=30
            )
            if python.headers["X-Cache"] == "HIT":
                break
        assert again.headers["X-Cache-Edge"] == "HIT", again.headers
        assert python.headers["X-Cache-Edge"] == "BYPASS" and python.headers["X-Cache"] == "HIT", python.headers
        assert first.json() == again.json() == python.json()
        text = json.dumps(body)
        arms = {"edge hit": {}, "python hit": {"X-API-Key": "bench"}}
        for headers in arms.values():  # warm both paths
            _wrk(url + path, text, 1, args.connections, headers)
        results: dict[str, list[float]] = {name: [] for name in (*arms, "static file")}
        for _ in range(args.rounds):
            for name, headers in arms.items():
                results[name].append(_wrk(url + path, text, args.seconds, args.connections, headers))
            results["static file"].append(_wrk(ceiling, None, args.seconds, args.connections))
        ratios = [e / p for e, p in zip(results["edge hit"], results["python hit"], strict=True)]
        of_ceiling = [e / c for e, c in zip(results["edge hit"], results["static file"], strict=True)]
        shape = f"{args.rounds} rounds × {args.seconds:g} s, wrk -c {args.connections}"
        print(f"\n== Cached answer through one nginx ({shape}) ==")
        for name, values in results.items():
            print(f"{name:>11}: median {statistics.median(values):9.0f} req/s   rounds {[round(v) for v in values]}")
        print(f"edge / python: {statistics.median(ratios):.2f}× (median of rounds; goal ≥ 5×)")
        print(f"edge / static file (the ceiling): {statistics.median(of_ceiling):.2f} (median of rounds)")

        if args.answers:
            started = time.monotonic()
            session = requests.Session()
            for i in range(args.answers):
                answer = session.post(url + path, json={"prompt": f"edge size answer {i}", "mode": "code"}, timeout=30)
                assert answer.headers.get("X-Cache-Edge") == "MISS", answer.headers
            took = time.monotonic() - started
            held = _disk_bytes(Path(edge))
            print(f"\n== The edge holding {args.answers} answers (stored in {took:.0f} s) ==")
            print(f"disk: {held / 1e6:.1f} MB ({held / args.answers:.0f} bytes per answer: headers, key, body)")
            print("memory: nginx's keys zone, about 128 bytes per key (10 MB holds about 80,000 answers)")


if __name__ == "__main__":
    main()
