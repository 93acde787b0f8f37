# mypy: ignore-errors
"""The queue-engine comparison behind app/jobs (docs/queue-engines.md): huey, Dramatiq and Celery,
each on a private Redis with gevent workers, measured side by side in one run:

    latency   enqueue → task start, one task at a time on an idle worker (p50, p95)
    kill      a task running when its worker is SIGKILLed: run again? after how long?
    priority  one busy worker; 5 `low` tasks queued, then 1 `high`: which runs next?
    memory    RSS of an idle worker process (with its children)

The engines are not the service's dependencies: run in a scratch virtualenv that has them,
from the repository's root:

    python3.11 -m venv /tmp/engines && /tmp/engines/bin/pip install huey==3.5.4 \\
        'dramatiq[redis]==2.2.1' 'celery[redis]==5.7.0' gevent redis psutil
    /tmp/engines/bin/python -m loadtest.engines

Each engine's worker imports this module with ENGINE set, which then defines only its tasks.
"""

from __future__ import annotations

import os

ENGINE = os.environ.get("ENGINE", "")
REDIS = os.environ.get("ENGINE_REDIS", "redis://127.0.0.1:6379/0")
# The redelivery timeouts the engines offer, set short so one run shows the mechanism; their
# defaults are reported beside the figures (Dramatiq: 60 s; Celery: 1 h; huey: none).
REDELIVER_SECONDS = 10

if ENGINE:
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import redis as redis_lib  # noqa: E402

_r = redis_lib.Redis.from_url(REDIS)


def _noop(sent: float) -> None:
    _r.rpush("latency", time.time() - sent)


def _slow(tag: str) -> None:
    _r.incr(f"begun:{tag}")
    _r.rpush("begun_at", time.time())
    time.sleep(3)
    _r.incr(f"done:{tag}")


def _ordered(name: str) -> None:
    _r.rpush("order", name)
    time.sleep(0.3 if name == "blocker" else 0.05)


if ENGINE == "huey":
    from huey import PriorityRedisHuey

    huey = PriorityRedisHuey("engines", url=REDIS, results=False)
    noop = huey.task()(_noop)
    slow = huey.task()(_slow)
    ordered = huey.task()(_ordered)

elif ENGINE == "dramatiq":
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS, heartbeat_timeout=REDELIVER_SECONDS * 1000, dead_message_ttl=600_000)
    dramatiq.set_broker(broker)
    noop = dramatiq.actor(_noop, actor_name="noop", max_retries=0)
    slow = dramatiq.actor(_slow, actor_name="slow", max_retries=0)
    ordered = dramatiq.actor(_ordered, actor_name="ordered", max_retries=0)

elif ENGINE == "celery":
    from celery import Celery

    celery = Celery("engines", broker=REDIS)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": REDELIVER_SECONDS,
            "priority_steps": list(range(10)),
            "queue_order_strategy": "priority",
        },
    )
    noop = celery.task(name="noop")(_noop)
    slow = celery.task(name="slow")(_slow)
    ordered = celery.task(name="ordered")(_ordered)


# --- the driver (no ENGINE: this process starts Redis and the workers) ----------------------------

_tasks = None  # this module reloaded with ENGINE set: the engine's tasks, to send them


def _worker_command(engine: str, concurrency: int) -> list[str]:
    bin_dir = os.path.dirname(sys.executable)
    if engine == "huey":
        return [f"{bin_dir}/huey_consumer", "loadtest.engines.huey", "-k", "greenlet", "-w", str(concurrency), "-q"]
    if engine == "dramatiq":
        return [f"{bin_dir}/dramatiq-gevent", "loadtest.engines", "-p", "1", "-t", str(concurrency)]
    return [
        f"{bin_dir}/celery",
        "-A",
        "loadtest.engines:celery",
        "worker",
        "-P",
        "gevent",
        "-c",
        str(concurrency),
        "-l",
        "warning",
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
    ]


def _start(engine: str, url: str, concurrency: int) -> subprocess.Popen:
    env = {**os.environ, "ENGINE": engine, "ENGINE_REDIS": url}
    return subprocess.Popen(
        _worker_command(engine, concurrency),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _send(engine: str, task: str, *args: object, priority: str = "normal") -> None:
    fn = getattr(_tasks, task)
    if engine == "huey":
        fn.schedule(args=args, delay=0, priority={"high": 20, "normal": 10, "low": 0}[priority])
    elif engine == "dramatiq":
        # Dramatiq's priority orders only the messages a worker has prefetched; on Redis a
        # queue per priority is its other way (and then no order within a worker's fetch).
        fn.send_with_options(args=args, priority={"high": 0, "normal": 50, "low": 100}[priority])
    else:
        fn.apply_async(args=args, priority={"high": 0, "normal": 5, "low": 9}[priority])


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def _rss(proc: subprocess.Popen) -> int:
    import psutil

    parent = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


def measure(engine: str, redis_binary: str, samples: int) -> dict[str, object]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [redis_binary, "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["ENGINE"], os.environ["ENGINE_REDIS"] = engine, url
    global _r, _tasks
    _r = redis_lib.Redis.from_url(url)
    _wait(_ping, 10)
    import importlib

    import loadtest.engines as tasks  # the module as the workers import it, for this engine

    _tasks = importlib.reload(tasks)
    result: dict[str, object] = {"engine": engine}
    worker = _start(engine, url, 4)
    try:
        # memory, once idle and connected
        _send(engine, "noop", time.time())
        _wait(lambda: _r.llen("latency") >= 1, 60)
        time.sleep(1)
        result["idle_rss_mib"] = round(_rss(worker) / 2**20, 1)
        _r.delete("latency")
        # latency: one at a time
        for _ in range(samples):
            before = _r.llen("latency")
            _send(engine, "noop", time.time())
            _wait(lambda before=before: _r.llen("latency") > before, 30)
            time.sleep(0.05)
        latencies = sorted(float(x) * 1000 for x in _r.lrange("latency", 0, -1))
        result["start_ms_p50"] = round(statistics.median(latencies), 1)
        result["start_ms_p95"] = round(latencies[int(len(latencies) * 0.95) - 1], 1)
        # priority: one busy worker
        os.killpg(worker.pid, 9)
        worker.wait()
        worker = _start(engine, url, 1)
        time.sleep(2)
        _send(engine, "ordered", "blocker")
        _wait(lambda: _r.llen("order") >= 1, 30)
        for i in range(5):
            _send(engine, "ordered", f"low{i}", priority="low")
        _send(engine, "ordered", "high", priority="high")
        _wait(lambda: _r.llen("order") >= 7, 30)
        order = [x.decode() for x in _r.lrange("order", 0, -1)]
        result["priority_order"] = " ".join(order)
        result["high_runs_next"] = len(order) > 1 and order[1] == "high"
        # kill: SIGKILL mid-task, a fresh worker
        _send(engine, "slow", "k")
        _wait(lambda: _r.get("begun:k") is not None, 30)
        killed_at = time.time()
        os.killpg(worker.pid, 9)
        worker.wait()
        worker = _start(engine, url, 1)
        again = _wait(lambda: int(_r.get("begun:k") or 0) >= 2, REDELIVER_SECONDS * 6)
        result["killed_task_run_again"] = again
        if again:
            result["rerun_after_s"] = round(float(_r.lrange("begun_at", -1, -1)[0]) - killed_at, 1)
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
        server.terminate()
        server.wait()
    return result


def _ping() -> bool:
    try:
        return bool(_r.ping())
    except redis_lib.RedisError:
        return False


def main() -> None:
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is needed")
    samples = int(os.environ.get("SAMPLES", "100"))
    rows = [measure(engine, binary, samples) for engine in ("huey", "dramatiq", "celery")]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
