"""Process helpers shared by benchmarks, load tests and the test suite: ports, waits, gunicorn."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import requests

__all__ = [
    "BIN",
    "EDGE_LOG",
    "ROOT",
    "fake_upstream",
    "find_binary",
    "free_port",
    "gunicorn",
    "mtail",
    "nginx",
    "redis",
    "render_nginx_conf",
    "stop",
    "wait_http",
]

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EDGE_LOG = "edge.log"  # nginx's edge log, in its work directory (config/nginx.conf: log_format edge)


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
    """The environment for a private server: ours only — none of the caller's settings of the
    service (a CACHE_DIR or API_KEYS exported in the shell must not reach a test's server), only
    what the process itself needs (PATH, HOME, locale, ...) and `overrides`."""
    from config.settings import variables

    ours = set(variables())
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ours and not k.startswith(("LLM_", "ANTHROPIC_", "OPENAI_", "REDIS_", "OTEL_", "JOB_", "CACHE_"))
    }
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
def redis(binary: str, port: int | None = None, persist: str | None = None) -> Iterator[str]:
    """Run a private redis-server on a free port, or on `port` (to restart one where it was);
    nothing persisted, or with `persist` (a directory) an append-only file fsynced on every
    write, kept there for the next start; yield its URL."""
    import redis as redis_py

    port = port or free_port()
    with tempfile.TemporaryDirectory() as workdir:
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if persist else ["--appendonly", "no"]
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *durability,
                "--dir",
                persist or workdir,
                "--loglevel",
                "warning",
                "--enable-debug-command",
                "local",  # chaos tests stall it with DEBUG SLEEP
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the caller does not cut it short
        )
        try:
            _wait_redis(redis_py.Redis(port=port), proc)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(proc)


_UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+( [^;]*)?;\n", re.MULTILINE)


def render_nginx_conf(
    listen: str, servers: list[str], workdir: str, conf: str | None = None, edge: str | None = None
) -> str:
    """The repository's config/nginx.conf, listening on `listen` (host:port), balancing over
    `servers` (host:port each, with the file's own max_fails/fail_timeout), its temporary files
    in `workdir` (the edge tier's cache too, unless `edge` names its directory): the one file,
    whether a test or `make cluster` runs it."""
    text = conf if conf is not None else (ROOT / "config" / "nginx.conf").read_text()
    found = list(_UPSTREAM_SERVER.finditer(text))
    if not found:
        raise ValueError("config/nginx.conf has no 'server 127.0.0.1:PORT ...;' line in its upstream block")
    indent, params = found[0].group(1), found[0].group(2) or ""
    lines = "".join(f"{indent}server {address}{params};\n" for address in servers)
    text = text[: found[0].start()] + lines + _UPSTREAM_SERVER.sub("", text[found[0].end() :])
    text = text.replace("listen 8080;", f"listen {listen};")
    temp = f"http {{\n    client_body_temp_path {workdir}/body;\n    proxy_temp_path {workdir}/proxy;"
    text = text.replace(
        "proxy_cache_path /var/cache/nginx/prompt-builder ", f"proxy_cache_path {edge or workdir + '/edge'} ", 1
    )
    text = text.replace("/var/log/nginx/prompt-builder-edge.log", f"{workdir}/{EDGE_LOG}")
    return text.replace("http {", temp, 1)


def find_binary(name: str) -> str | None:
    """A system binary on PATH, or where Debian puts daemons (/usr/sbin is not on every PATH)."""
    found = shutil.which(name)
    if found:
        return found
    return next((str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if os.access(p, os.X_OK)), None)


@contextlib.contextmanager
def nginx(
    servers: list[str], binary: str, port: int | None = None, edge: str | None = None, workdir: str | None = None
) -> Iterator[str]:
    """Run the repository's nginx.conf in front of `servers` on a free port (or `port`), its
    edge cache in `edge` (default: in its work directory, `workdir` or a temporary one, which
    holds its edge log too: EDGE_LOG); yield its URL."""
    port = port or free_port()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory())
        path = Path(workdir) / "nginx.conf"
        path.write_text(render_nginx_conf(f"127.0.0.1:{port}", servers, workdir, edge=edge))
        proc = subprocess.Popen(
            [
                binary,
                "-c",
                str(path),
                "-p",
                workdir,
                "-g",
                f"daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log;"
                + (" user root;" if os.geteuid() == 0 else ""),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the caller does not cut it short
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/health/live", proc=proc)
            yield url
        except RuntimeError as exc:
            log = Path(workdir) / "error.log"
            detail = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{exc}\n--- nginx error log ---\n{detail}") from None
        finally:
            stop(proc, signal.SIGQUIT, timeout=35)  # graceful: requests in flight finish


@contextlib.contextmanager
def mtail(binary: str, log: str, port: int | None = None) -> Iterator[str]:
    """Run mtail with the repository's edge program (prometheus/edge.mtail) reading `log`, on a
    free port (or `port`); yield its URL (its counters at /metrics)."""
    port = port or free_port()
    Path(log).touch()
    proc = subprocess.Popen(
        [
            binary,
            "--progs",
            str(ROOT / "prometheus" / "edge.mtail"),
            "--logs",
            log,
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--poll_interval",
            "100ms",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/metrics", proc=proc)
        yield url
    finally:
        stop(proc, signal.SIGTERM, timeout=10)


@contextlib.contextmanager
def redis_cluster(binary: str, cli: str, primaries: int = 3) -> Iterator[str]:
    """Run a private Redis Cluster of `primaries` primaries (no replicas) on free loopback ports,
    joined with `redis-cli --cluster create`; yield its redis+cluster:// URL."""
    import redis as redis_py

    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        nodes = []
        for i in range(primaries):
            port, bus = free_port(), free_port()
            node_dir = Path(workdir) / str(i)
            node_dir.mkdir()
            proc = subprocess.Popen(
                [
                    binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(bus),
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(node_dir),
                    "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
            stack.callback(stop, proc)
            nodes.append(f"127.0.0.1:{port}")
        for node in nodes:
            _wait_redis(redis_py.Redis(port=int(node.rsplit(":", 1)[1])))
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for node in nodes:
            client = redis_py.Redis(port=int(node.rsplit(":", 1)[1]))
            while client.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
                time.sleep(0.1)
            client.close()
        yield "redis+cluster://" + ",".join(nodes)


def _wait_redis(client: Any, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until `client`'s server answers PING (failing early if `proc` exits); close it."""
    import redis as redis_py

    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except redis_py.ConnectionError:
                if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
    finally:
        client.close()


@contextlib.contextmanager
def redis_sentinel(binary: str, service: str = "mymaster") -> Iterator[str]:
    """Run a private Redis primary and one Sentinel watching it, on free loopback ports; yield
    the redis+sentinel:// URL naming `service`."""
    import redis as redis_py

    with redis(binary) as primary_url, tempfile.TemporaryDirectory() as workdir:
        primary_port = int(primary_url.rsplit(":", 1)[1].split("/")[0])
        port = free_port()
        conf = Path(workdir) / "sentinel.conf"  # Sentinel rewrites its own file: a private copy
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor {service} 127.0.0.1 {primary_port} 1\n"
            f"sentinel down-after-milliseconds {service} 5000\n"
        )
        proc = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            _wait_redis(redis_py.Redis(port=port))
            client = redis_py.Redis(port=port)
            deadline = time.monotonic() + 20
            while not cast("dict[str, Any]", client.sentinel_masters()).get(service):
                if time.monotonic() > deadline:
                    raise RuntimeError("Sentinel does not know the primary")
                time.sleep(0.1)
            client.close()
            yield f"redis+sentinel://127.0.0.1:{port}/{service}"
        finally:
            stop(proc)
