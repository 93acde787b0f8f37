"""The fleet under its own faults: the repository's nginx over 2 instances of 2 workers sharing a
private Redis, the fake model API behind them, steady load in front. Each test prints its
figures (docs/operations.md collects them): what callers saw, what was lost, how long recovery
took. Nothing here waits on a guessed latency: faults are placed by gates and polled states."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis
import requests

from loadtest._procs import nginx
from loadtest._procs import redis as redis_process
from loadtest.soak import worker_greenlets
from loadtest.steady import Outcome, SteadyLoad, raw_burst
from tests.support import (
    FakeUpstreamProcess,
    Server,
    free_port,
    metric_total,
    need_binary,
    provider_env,
    redis_env,
    start_server,
    wait_until,
    waiting_requests,
)

pytestmark = pytest.mark.integration


@dataclass
class Fleet:
    url: str  # nginx
    instances: list[Server]
    redis_url: str
    redis_proc: subprocess.Popen[bytes] | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.instances]


@contextlib.contextmanager
def fleet(upstream: FakeUpstreamProcess, redis_url: str, **env: str) -> Iterator[Fleet]:
    """nginx over two instances of 2 workers each, sharing `redis_url`. Redis is given a patient
    socket timeout (`redis_env`): on a loaded machine a reply slower than the production 0.25 s
    is an outage to the service, and a drill of something else (an instance stopped, the model
    slow) would then measure the machine; the slow-Redis drill sets its own timeout."""
    settings = {
        **provider_env("anthropic", upstream),
        **redis_env(redis_url),
        "TRUSTED_PROXIES": "1",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    with start_server(settings, workers=2) as one, start_server(settings, workers=2) as two:
        addresses = [s.url.removeprefix("http://") for s in (one, two)]
        with nginx(addresses, need_binary("nginx")) as url:
            yield Fleet(url, [one, two], redis_url)


@pytest.fixture
def private_redis() -> Iterator[str]:
    with redis_process(need_binary("redis-server")) as url:
        yield url


def _figures(name: str, **figures: object) -> None:
    print(f"\nFLEET {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def _statuses(outcomes: list) -> dict[object, int]:
    counts: dict[object, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts


def test_an_instance_stopped_under_load_loses_nothing(fake_upstream: FakeUpstreamProcess, private_redis: str) -> None:
    """SIGTERM to one instance while 50 callers keep sending through nginx: it drains its
    requests, nginx sends new ones to the other, and no caller sees a failure."""
    fake_upstream.control(latency=0.05)
    with fleet(fake_upstream, private_redis) as f:
        with SteadyLoad(f.url, 50) as load:
            wait_until(lambda: load.done >= 200, what="steady load")
            victim = f.instances[0].proc
            before = load.done
            stopped_at = time.monotonic()
            victim.send_signal(signal.SIGTERM)
            victim.wait(60)
            drained = time.monotonic() - stopped_at
            wait_until(lambda: load.done >= before + 300, what="load after the stop")
        outcomes = load.outcomes
    _figures(
        "sigterm",
        requests=len(outcomes),
        failed=len(load.failures()),
        statuses=_statuses(outcomes),
        drain_seconds=round(drained, 2),
    )
    assert load.failures() == [], {o.detail for o in load.failures()}


def test_a_killed_leader_hands_its_call_to_followers_elsewhere(
    fake_upstream: FakeUpstreamProcess, private_redis: str
) -> None:
    """Instance A leads a call (parked at the upstream) that 10 callers on instance B wait for;
    A is SIGKILLed. B's callers take the call over once A's lease lapses, all answer within
    their deadline, and no lock is left behind."""
    lease = 2
    with fleet(fake_upstream, private_redis, REDIS_LEASE_SECONDS=str(lease), UPSTREAM_TIMEOUT="20") as f:
        leader, survivor = f.instances
        body = {"prompt": "led by the instance about to die", "mode": "code"}
        with ThreadPoolExecutor(11) as pool, fake_upstream.hold():
            led = pool.submit(requests.post, leader.url + "/api/optimize", json=body, timeout=60)
            wait_until(lambda: fake_upstream.held() == 1, what="the leader's call at the upstream")
            followers = [
                pool.submit(requests.post, survivor.url + "/api/optimize", json=body, timeout=60) for _ in range(10)
            ]
            wait_until(lambda: waiting_requests([survivor.url]) == 10, what="10 followers waiting")
            killed_at = time.monotonic()
            _kill_instance(leader)
            fake_upstream.release()  # the killed call's connection is gone; the next one is answered
            answers = [future.result() for future in followers]
            took = time.monotonic() - killed_at
            with pytest.raises(requests.ConnectionError):
                led.result()  # its caller was on the killed instance
        statuses = [a.status_code for a in answers]
        with redis.Redis.from_url(private_redis) as client:
            locks = list(client.scan_iter("pb:*lock*"))
    _figures(
        "sigkill-leader",
        followers_answered=statuses.count(200),
        seconds_to_answer=round(took, 2),
        lease_seconds=lease,
        upstream_calls=fake_upstream.calls(),
        locks_left=len(locks),
    )
    assert statuses == [200] * 10
    assert took < 20  # within the deadline: they took over, they did not wait it out
    assert locks == []


def test_redis_stopped_then_back(fake_upstream: FakeUpstreamProcess) -> None:
    """Redis stops mid-load: no 5xx, answers from L1 and the upstream, readiness degraded but 200.
    Redis back on the same port: the shared cache works again by itself, no restart."""
    fake_upstream.control(latency=0.02)
    binary = need_binary("redis-server")
    port = free_port()
    with redis_process(binary, port) as redis_url, fleet(fake_upstream, redis_url) as f:
        with SteadyLoad(f.url, 30) as load:
            wait_until(lambda: load.done >= 200, what="steady load")
            _redis_down(redis_url)
            down_at = time.monotonic()
            before = load.done
            wait_until(lambda: load.done >= before + 300, what="load without Redis")
            ready = [requests.get(u + "/health/ready", timeout=5) for u in f.urls]
            with redis_process(binary, port):
                back_at = time.monotonic()
                shared = {"prompt": f"shared again {time.time()}", "mode": "code"}

                def shared_again() -> bool:
                    first = requests.post(f.urls[0] + "/api/optimize", json=shared, timeout=10)
                    second = requests.post(f.urls[1] + "/api/optimize", json=shared, timeout=10)
                    return first.status_code == 200 and second.headers.get("X-Cache") == "HIT"

                wait_until(shared_again, timeout=60, what="the shared cache back")
                recovered = time.monotonic() - back_at
                after = [requests.get(u + "/health/ready", timeout=5).json()["status"] for u in f.urls]
        outcomes = load.outcomes
    during = [o for o in outcomes if o.started >= down_at]
    _figures(
        "redis-stopped",
        requests_without_redis=len(during),
        failed=len(load.failures()),
        statuses=_statuses(outcomes),
        ready_while_down=[(r.status_code, r.json()["status"]) for r in ready],
        seconds_to_share_again=round(recovered, 2),
    )
    assert load.failures() == []
    assert all(r.status_code == 200 and r.json()["status"] == "degraded" for r in ready)
    assert after == ["ready", "ready"]


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_the_rate_limit_without_redis_fails_open_or_closed_as_set(mode: str) -> None:
    """Redis down: "open" (the default) serves, each worker counting in its own memory;
    "closed" answers 503 with Retry-After. Redis back: the shared count resumes by itself."""
    binary = need_binary("redis-server")
    port = free_port()
    env = {"RATE_LIMIT": "3/minute", "RATE_LIMIT_ON_REDIS_ERROR": mode}
    with redis_process(binary, port) as redis_url, start_server({**env, "REDIS_URL": redis_url}, workers=1) as one:

        def send(i: int) -> requests.Response:
            return requests.post(one.url + "/api/optimize", json={"prompt": f"{mode} {i}", "mode": "code"}, timeout=10)

        assert send(0).status_code == 200  # counted in Redis
        _redis_down(redis_url)
        down = [send(i) for i in range(1, 6)]
        with redis_process(binary, port):
            back = wait_until(lambda: _served(send(9)), timeout=60, what="the limit served from Redis again")
    statuses = [r.status_code for r in down]
    _figures(f"rate-limit-{mode}", while_down=statuses, after=back.status_code)
    if mode == "open":
        assert statuses == [200, 200, 200, 429, 429]  # a fresh count in the worker's memory: 3 a minute
    else:
        assert statuses == [503] * 5
        assert all(r.headers["Retry-After"] == "5" and r.json()["error"] == "Rate limit unavailable" for r in down)
    assert back.headers["RateLimit-Policy"].endswith('comment="shared by all workers"')


def _served(response: requests.Response) -> requests.Response | None:
    return response if response.status_code in (200, 429) and "RateLimit-Remaining" in response.headers else None


def _lost_mid_relay(outcome: Outcome) -> bool:
    """A stream relayed from another process that ended with the documented error event after
    relaying some of its events (status 200, no `done`): the leader's publishing or this relay's
    reads failed, and the rest could not be read back from L2 either (app.gateway.streaming says
    "Lost the identical stream ..." or "Lost part of the identical stream ...", only once some
    events were relayed)."""
    lost = ("Lost the identical stream", "Lost part of the identical stream")
    return outcome.kind == "stream" and outcome.status == 599 and any(text in outcome.detail for text in lost)


def test_a_slow_redis_costs_a_request_one_socket_timeout_at_most(
    fake_upstream: FakeUpstreamProcess, private_redis: str
) -> None:
    """Redis answers nothing for a second at a time (DEBUG SLEEP, over and over): requests keep
    coming back 200, none waits on Redis longer than about one REDIS_SOCKET_TIMEOUT, and the
    workers do not pile up greenlets."""
    timeout = 0.5
    fake_upstream.control(latency=0.02)
    env = {"REDIS_SOCKET_TIMEOUT": str(timeout), "RATE_LIMIT": "100000/minute"}
    with fleet(fake_upstream, private_redis, **env) as f:
        with SteadyLoad(f.url, 30) as load:
            # Each worker first counts its greenlets 10 s after it starts, on a request.
            counted = lambda: sum(1 for n in worker_greenlets(f.urls).values() if n > 0)  # noqa: E731
            wait_until(lambda: load.done >= 200 and counted() == 4, what="steady load")
            greenlets_before = metric_total(f.urls, "process_worker_greenlets")
            stop = threading.Event()

            def keep_redis_asleep() -> None:
                with redis.Redis.from_url(private_redis, socket_timeout=10) as sleeper:
                    while not stop.is_set():
                        sleeper.execute_command("DEBUG", "SLEEP", "1")

            with ThreadPoolExecutor(1) as pool:
                sleeping = pool.submit(keep_redis_asleep)
                slow_from = time.monotonic()
                before = load.done
                wait_until(
                    lambda: load.done >= before + 300 and time.monotonic() - slow_from > 12, what="load on a slow Redis"
                )
                greenlets_during = metric_total(f.urls, "process_worker_greenlets")
                slow_until = time.monotonic()
                stop.set()
                sleeping.result()
        during = sorted(o.seconds for o in load.outcomes if slow_from <= o.started <= slow_until - 1)
        before_slow = sorted(o.seconds for o in load.outcomes if o.started < slow_from)
    p99 = during[int(len(during) * 0.99)]
    p99_before = before_slow[int(len(before_slow) * 0.99)]
    failures = [o for o in load.failures() if not _lost_mid_relay(o)]
    _figures(
        "redis-slow",
        requests_while_slow=len(during),
        failed=len(load.failures()),
        p50_ms=round(statistics.median(during) * 1000, 1),
        p99_ms=round(p99 * 1000, 1),
        p99_before_ms=round(p99_before * 1000, 1),
        max_ms=round(during[-1] * 1000, 1),
        socket_timeout_ms=timeout * 1000,
        greenlets=(greenlets_before, greenlets_during),
        streams_lost_mid_relay=len(load.failures()) - len(failures),
    )
    # A stream relayed from another process whose Redis read fails after some of its events were
    # sent cannot be finished (it would have a hole): its callers get the documented error event.
    # Every other request is answered; a relay that fails before any event streams on its own.
    assert failures == [], failures[:3]
    # One socket timeout at most on top of what the same load took before Redis slowed (measured
    # in the same run, so a busy machine moves both). A request that waited on each of its Redis
    # calls (limiter, cache, lock, publish: 4 x 0.5 s) would be far past this.
    assert p99 < p99_before + 3 * timeout
    assert greenlets_during <= greenlets_before + 4 * 30  # at most the callers' own requests


def test_an_unreachable_upstream_opens_the_breaker_and_it_closes_by_itself(
    fake_upstream: FakeUpstreamProcess, private_redis: str
) -> None:
    """The model API refuses connections for a while: callers get fast 503s with Retry-After once
    the breaker opens, and when it is back the breaker closes by itself."""
    outage = float(os.environ.get("FLEET_OUTAGE_SECONDS", "8"))
    reset = 2
    upstream = FakeUpstreamProcess()
    port = upstream.port
    env = {"BREAKER_FAIL_MAX": "3", "BREAKER_RESET_TIMEOUT": str(reset), "UPSTREAM_MAX_RETRIES": "0"}
    try:
        with fleet(upstream, private_redis, **env) as f:
            upstream.stop()  # connection refused from now on
            down_at = time.monotonic()
            seen: list[tuple[float, int, str | None, float]] = []
            n = 0
            while time.monotonic() - down_at < outage:
                n += 1
                started = time.monotonic()
                r = requests.post(f.url + "/api/optimize", json={"prompt": f"down {n}", "mode": "code"}, timeout=30)
                seen.append(
                    (started - down_at, r.status_code, r.headers.get("Retry-After"), time.monotonic() - started)
                )
                time.sleep(0.05)
            upstream = FakeUpstreamProcess(port=port)  # back on the same address
            back_at = time.monotonic()

            def closed_everywhere() -> bool:
                # Each worker's breaker closes by itself at its first trial call after the reset
                # timeout; keep calling until every worker of every instance reports closed.
                for i in range(4):
                    body = {"prompt": f"up {time.time()} {i}", "mode": "code"}
                    requests.post(f.url + "/api/optimize", json=body, timeout=30)
                return all(metric_total([u], "circuit_breaker_state") == 0 for u in f.urls)

            wait_until(closed_everywhere, timeout=60, what="every breaker closed")
            recovered = time.monotonic() - back_at
            after = [
                requests.post(f.url + "/api/optimize", json={"prompt": f"after {i}", "mode": "code"}, timeout=30)
                for i in range(10)
            ]
    finally:
        upstream.stop()
    fast = [s for s in seen if s[1] == 503 and s[2]]
    statuses = {s[1] for s in seen}
    _figures(
        "upstream-refused",
        outage_seconds=outage,
        requests=len(seen),
        statuses=sorted(statuses),
        fast_503=len(fast),
        p50_503_ms=round(statistics.median(s[3] for s in fast) * 1000, 1) if fast else None,
        seconds_to_close=round(recovered, 2),
    )
    assert statuses <= {502, 503}  # refused: a clean 502 until the breaker opens, then 503
    assert fast and all(int(s[2]) >= 1 for s in fast)
    assert max(s[3] for s in fast) < 1.0  # an open breaker answers at once, never waits on the upstream
    assert recovered < reset + 30
    assert [r.status_code for r in after] == [200] * 10  # closed again on every instance that saw it


def test_a_thousand_callers_on_a_slow_upstream_stay_bounded(
    fake_upstream: FakeUpstreamProcess, private_redis: str
) -> None:
    """1000 distinct callers in flight together through nginx (arriving over 3 s), the model taking
    `FLEET_SLOW_UPSTREAM_SECONDS` (5 s here; 10 s in docs/operations.md): every caller is answered,
    each worker's memory and descriptors stay bounded, /health/live answers fast the whole time,
    and no worker opens more upstream connections than UPSTREAM_POOL_SIZE."""
    import psutil

    callers, pool = 1000, 200
    latency = float(os.environ.get("FLEET_SLOW_UPSTREAM_SECONDS", "5"))
    fake_upstream.control(latency=latency)
    env = {"UPSTREAM_POOL_SIZE": str(pool), "UPSTREAM_TIMEOUT": str(10 * latency + 30)}
    with fleet(fake_upstream, private_redis, **env) as f:
        workers = [w for s in f.instances for w in psutil.Process(s.proc.pid).children()]
        rss_before = {w.pid: w.memory_info().rss for w in workers}
        host, port = f.url.removeprefix("http://").split(":")
        peaks = {"rss": dict(rss_before), "fds": {w.pid: w.num_fds() for w in workers}}
        idle = sorted(_probe(u) for u in f.urls for _ in range(25))
        probes: list[float] = []
        with ThreadPoolExecutor(1) as pool_:
            burst = pool_.submit(raw_burst, host, int(port), callers, 3.0)
            while not burst.done():
                probes.extend(_probe(url) for url in f.urls)
                for w in workers:
                    peaks["rss"][w.pid] = max(peaks["rss"][w.pid], w.memory_info().rss)
                    peaks["fds"][w.pid] = max(peaks["fds"][w.pid], w.num_fds())
                time.sleep(0.1)
            statuses = [status for status, _ in burst.result()]
        stats = fake_upstream.stats()
    probes.sort()
    growth = max((peaks["rss"][p] - rss_before[p]) / MIB for p in rss_before)
    _figures(
        "slow-upstream-1000",
        upstream_seconds=latency,
        answered=statuses.count(200),
        statuses=sorted(set(statuses)),
        upstream_connections=stats["connections"],
        pool_limit=pool * len(workers),
        max_in_flight_at_upstream=stats["maxInFlight"],
        live_p99_ms=round(probes[int(len(probes) * 0.99)] * 1000, 1),
        live_probes=len(probes),
        live_idle_p50_ms=round(statistics.median(idle) * 1000, 1),
        rss_growth_mib_max=round(growth, 1),
        fds_peak_max=max(peaks["fds"].values()),
    )
    assert statuses == [200] * callers
    assert stats["connections"] <= pool * len(workers)  # never more than the pools allow
    # Behaviour, not speed: liveness answered every probe throughout, and none waited on the
    # upstream (5 s here). The speed figure is printed above and recorded in docs/operations.md:
    # p99 19-20 ms on a quiet day, 45-75 ms with two CPU burners alongside; on a slow day the
    # burst's own parsing queues a probe for over a second (1.4-1.9 s seen), still short of 5 s.
    assert probes[-1] < latency
    assert growth < 100  # MiB per worker for 1000 requests in flight: bounded, nowhere near a leak
    assert max(peaks["fds"].values()) < 2 * callers


MIB = 1 << 20


def _probe(url: str) -> float:
    """Seconds /health/live took to answer 200."""
    started = time.monotonic()
    assert requests.get(url + "/health/live", timeout=5).status_code == 200
    return time.monotonic() - started


def test_slow_clients_starve_gunicorn_alone_but_not_behind_nginx(private_redis: str) -> None:
    """Connections that never finish their headers: 2,100 of them leave a 2-worker gunicorn
    facing clients directly no slot for a real request (each worker holds 1000 connections);
    3,000 of them through nginx leave real requests answered, p99 under a second."""
    env = {"REDIS_URL": private_redis, "TRUSTED_PROXIES": "1", "WORKER_CONNECTIONS": "1000"}
    with start_server(env, workers=2) as one:
        with _idle_connections(one.url, 2100):
            wait_until(lambda: _established(one) >= 2000, what="both workers full of idle connections")
            with pytest.raises(requests.Timeout):
                requests.post(one.url + "/api/optimize", json={"prompt": "direct", "mode": "code"}, timeout=3)
        with nginx([one.url.removeprefix("http://")], need_binary("nginx")) as url, _idle_connections(url, 3000):
            times = []
            with requests.Session() as session:
                for i in range(100):
                    started = time.monotonic()
                    r = session.post(url + "/api/optimize", json={"prompt": f"real {i}", "mode": "code"}, timeout=15)
                    times.append(time.monotonic() - started)
                    assert r.status_code == 200
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    _figures(
        "slow-clients",
        direct_idle_connections=2100,
        direct_real_request="timed out",
        nginx_idle_connections=3000,
        real_requests=len(times),
        p99_ms=round(p99 * 1000, 1),
    )
    assert p99 < 1.0


# --- helpers -------------------------------------------------------------------------------------


def _kill_instance(server: Server) -> None:
    """SIGKILL the instance's master and its workers at once, as a crash or the OOM killer would."""
    import psutil

    master = psutil.Process(server.proc.pid)
    for process in [*master.children(recursive=True), master]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    server.proc.wait(10)


@contextlib.contextmanager
def _idle_connections(url: str, count: int) -> Iterator[None]:
    """`count` connections that send the start of a request and never the rest."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(count):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"POST /api/optimize HTTP/1.1\r\nHost: x\r\n")
            sockets.append(s)
        yield
    finally:
        for s in sockets:
            s.close()


def _established(server: Server) -> int:
    """Connections the server's workers hold open."""
    import psutil

    workers = psutil.Process(server.proc.pid).children()
    return sum(len([c for c in w.net_connections("tcp") if c.status == "ESTABLISHED"]) for w in workers)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _redis_down(url: str) -> None:
    """Stop the Redis at `url` at once (SHUTDOWN NOSAVE: as abrupt as a crash, nothing saved)."""
    with redis.Redis.from_url(url) as client:
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        wait_until(lambda: not _pings(client), timeout=10, what="redis down")
