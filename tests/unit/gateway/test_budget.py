"""The upstream budget: slots given out by rank then arrival, an interactive caller's wait
bounded by its deadline (503 + Retry-After), and a 429's pause — in one process, and shared by
two processes' budgets through a real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import gevent
import gevent.event
import pytest
import redis

from app.cache import RedisHealth
from app.cache.clients import RedisTopology
from app.errors import ServiceUnavailableError
from app.gateway import _machine_db
from app.gateway.budget import Budget
from app.gateway.slots import LOCAL_SCHEMA, LocalSlots, RedisSlots
from app.localdb import LocalDB
from app.tenancy import ANONYMOUS, Caller
from config.settings import load_settings


def _budgets(kind: str, limit: int, where: str | None) -> tuple[Budget, Budget]:
    """Two budgets sharing one set of slots: two instances' with Redis, two workers' of one
    machine with the SQLite file (each its own connection), one worker's without either."""
    if kind == "local":
        budget = Budget(LocalSlots(limit))
        return budget, budget
    if kind == "sqlite":
        return (
            Budget.build(limit, None, "", local=LocalDB(where or "", LOCAL_SCHEMA, busy_timeout=1.0)),
            Budget.build(limit, None, "", local=LocalDB(where or "", LOCAL_SCHEMA, busy_timeout=1.0)),
        )
    client = redis.Redis.from_url(where)  # type: ignore[arg-type]
    return (
        Budget(RedisSlots(client, "b:", limit), client, "b:"),
        Budget(RedisSlots(redis.Redis.from_url(where), "b:", limit), redis.Redis.from_url(where), "b:"),  # type: ignore[arg-type]
    )


def _where(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "redis":
        return str(request.getfixturevalue("own_redis_url"))
    if kind == "sqlite":
        return str(request.getfixturevalue("tmp_path") / "cache" / "upstream.sqlite3")
    return None


@pytest.mark.parametrize("kind", ["local", "sqlite", "redis"])
def test_slots_go_to_interactive_callers_then_jobs_by_priority_then_arrival(
    kind: str, request: pytest.FixtureRequest
) -> None:
    first, second = _budgets(kind, 1, _where(kind, request))
    order: list[str] = []
    gate = gevent.event.Event()

    def call(budget: Budget, name: str, priority: str) -> None:
        with budget.slot(Caller(priority=priority), 30.0):
            order.append(name)
            if name == "holder":
                gate.wait()

    holder = gevent.spawn(call, first, "holder", "normal")
    _until(lambda: order == ["holder"])
    waiting = []
    for index, (name, priority) in enumerate(
        [("low 1", "low"), ("low 2", "low"), ("normal", "normal"), ("high", "high"), ("sync", "interactive")]
    ):
        waiting.append(gevent.spawn(call, (first, second)[index % 2], name, priority))
        gevent.sleep(0.05)  # arrival order within a rank
    assert order == ["holder"]  # one slot: everyone else waits
    gate.set()
    gevent.joinall([holder, *waiting], timeout=30, raise_error=True)
    assert order == ["holder", "sync", "high", "normal", "low 1", "low 2"]


def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.01)


_HOLDER = """
import sys, gevent
from gevent import monkey
monkey.patch_all()
import redis
from app.gateway.budget import Budget
from app.gateway.slots import LOCAL_SCHEMA, RedisSlots, SqliteSlots
from app.tenancy import ANONYMOUS
from app.localdb import LocalDB
kind, where = sys.argv[1], sys.argv[2]
if kind == "redis":
    slots = RedisSlots(redis.Redis.from_url(where), "b:", 1, hold_seconds=0.6)
else:
    slots = SqliteSlots(LocalDB(where, LOCAL_SCHEMA, busy_timeout=1.0), 1, hold_seconds=0.6)
with Budget(slots).slot(ANONYMOUS, 30.0):
    print("held", flush=True)
    gevent.sleep(600)
"""


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_held_slot_is_kept_while_its_process_lives_and_comes_back_soon_after_it_is_killed(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """A slot's hold is a lease its process renews: it outlives many holds while the process
    lives, and a SIGKILLed holder's slot comes back within about one hold, not minutes later."""
    import subprocess
    import sys

    from loadtest._procs import ROOT

    where = _where(kind, request) or ""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, kind, where], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        budget, _ = _budgets(kind, 1, where)
        with pytest.raises(ServiceUnavailableError), budget.slot(ANONYMOUS, 3.0):  # five holds: renewed all along
            pass
        holder.kill()
        holder.wait()
        killed = time.monotonic()
        with budget.slot(ANONYMOUS, 30.0):
            assert time.monotonic() - killed < 15  # about one hold (0.6 s), far from the 30 s waited for
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.parametrize("kind", ["local", "sqlite", "redis"])
def test_an_interactive_caller_waits_within_its_deadline_then_gets_503(
    kind: str, request: pytest.FixtureRequest
) -> None:
    budget, _ = _budgets(kind, 1, _where(kind, request))
    gate = gevent.event.Event()

    def hold() -> None:
        with budget.slot(ANONYMOUS, 30.0):
            gate.wait()

    holder = gevent.spawn(hold)
    gevent.sleep(0.05)
    with pytest.raises(ServiceUnavailableError) as refused, budget.slot(ANONYMOUS, 0.3):
        pass
    assert refused.value.retry_after is not None and refused.value.message == "Upstream model API busy"
    gate.set()
    holder.join()
    with budget.slot(ANONYMOUS, 0.3) as deadline:  # free again; the slot the refused caller waited for is not kept
        assert deadline > time.monotonic()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_429_pause_is_shared(kind: str, request: pytest.FixtureRequest) -> None:
    first, second = _budgets(kind, 10, _where(kind, request))
    first.pause(1.5)  # long beside the steps below even on a busy machine
    started = time.monotonic()
    with (
        pytest.raises(ServiceUnavailableError) as refused,
        second.slot(ANONYMOUS, 0.2),
    ):  # an interactive caller, 0.2 s left
        pass
    assert refused.value.retry_after is not None and refused.value.retry_after > 0.2
    with second.slot(Caller(priority="low"), 5.0):  # a job waits the pause out
        waited = time.monotonic() - started
    assert waited >= 1.0
    with second.slot(ANONYMOUS, 0.2):  # over: calls go on
        pass


def test_unlimited_budget_still_counts_calls_and_pauses() -> None:
    seen: list[tuple[int, bool]] = []
    budget = Budget.build(0, None, "", lambda held, paused: seen.append((held, paused)))
    assert budget.limit == 0
    with budget.slot(ANONYMOUS, 1.0):
        assert seen[-1] == (1, False)
    budget.pause(0.05)
    assert seen[-1] == (0, True)
    with budget.slot(Caller(priority="high"), 1.0):
        pass
    assert seen[-1] == (0, False)


def test_an_unusable_budget_file_refuses_every_capped_call(tmp_path: Path) -> None:
    """A cap that cannot be counted admits nothing: 503 with Retry-After, never a call."""
    (tmp_path / "file").write_text("")  # CACHE_DIR under a file: the budget file cannot exist
    local, broken = _machine_db(load_settings({"APP_ENV": "testing", "CACHE_DIR": str(tmp_path / "file")}))
    assert local is None and broken is not None and "upstream.sqlite3" in broken
    budget = Budget.build(5, None, "", local=local, broken=broken)
    for _ in range(10):
        with pytest.raises(ServiceUnavailableError) as refused, budget.slot(ANONYMOUS, 1.0):
            pytest.fail("a call went on without a slot")
        assert refused.value.message == "Upstream budget unavailable" and refused.value.retry_after


def test_with_redis_down_a_capped_call_is_refused_at_once_and_a_pause_is_not_waited_for() -> None:
    health = RedisHealth.for_timeout(0.1)
    dead = RedisTopology("redis://127.0.0.1:1/0").service_client(health, socket_timeout=0.1, socket_connect_timeout=0.1)
    budget = Budget(RedisSlots(dead, "x:", 1), dead, "x:")
    started = time.monotonic()
    budget.pause(1.0)  # counted and logged, not raised
    for _ in range(20):
        with pytest.raises(ServiceUnavailableError), budget.slot(ANONYMOUS, 1.0):  # the slots cannot be counted
            pytest.fail("a call went on without a slot")
    uncapped = Budget(None, dead, "x:")
    with uncapped.slot(ANONYMOUS, 1.0):  # no cap: an unreadable pause is not a reason to refuse (the model's 429 is)
        pass
    assert health.failures >= 1
    assert time.monotonic() - started < 5  # after a failure Redis is left alone: no wait per call
