"""Per-key budgets on each store (a worker's memory, a machine's SQLite file, a real Redis):
a bound per call reserved, replaced by the use; refusal naming the budget and its reset; a
call's reservation renewed while its process lives and given back soon after it is killed; a
store that cannot count refuses, and a settlement it could not take is written later, once."""

from __future__ import annotations

import time
from pathlib import Path

import gevent
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.coordination.redis_reservations import RedisReservations
from app.coordination.reservation import MemoryReservations, Reservations, SqliteReservations
from app.gateway.slots import LOCAL_SCHEMA
from app.localdb import LocalDB
from app.security.spend import BudgetExceededError, BudgetUnavailableError, Spend, cost_usd, input_token_bound
from config.keys import KeySpec, digest

ALICE = KeySpec("alice", digest("a"), budgets=(("tokens_per_day", 1000.0), ("cost_per_month_usd", 1.0)))
KEYS = (ALICE, KeySpec("bob", digest("b")))


@pytest.fixture(params=["memory", "sqlite", "redis"])
def spend(request: pytest.FixtureRequest, tmp_path: Path) -> Spend:
    if request.param == "redis":
        store = RedisReservations(redis.Redis.from_url(request.getfixturevalue("own_redis_url")))
    elif request.param == "sqlite":
        store = SqliteReservations(LocalDB(str(tmp_path / "upstream.sqlite3"), LOCAL_SCHEMA))
    else:
        store = MemoryReservations()
    seen: list[tuple[str, str, float]] = []
    found = Spend(KEYS, store, "t:", lambda *args: seen.append(args))
    found.seen = seen  # type: ignore[attr-defined]
    return found


def _usage(spend: Spend) -> float:
    store = spend._store
    assert store is not None
    return store.usage(spend._counter("alice", "tokens_per_day", time.time())[0])[0]


def test_calls_are_admitted_while_the_budget_holds_their_bound(spend: Spend) -> None:
    assert spend.admit("bob", 4096, 0.0) is None and spend.admit(None, 4096, 0.0) is None
    tickets = [spend.admit("alice", 300, 0.01) for _ in range(3)]  # 900 of 1000 reserved
    with pytest.raises(BudgetExceededError) as refused:
        spend.admit("alice", 300, 0.01)
    assert "key 'alice': its tokens_per_day budget (1000) is spent; it resets at " in refused.value.details
    assert refused.value.status_code == 429 and 1 <= refused.value.retry_after <= 86400  # type: ignore[operator]
    tickets[0].release()  # a call that failed uses nothing
    tickets[1].settle(120, 0.001)  # the use replaces the bound: 120 used, 300 reserved
    tickets[1].settle(120, 0.001)  # settled once, counted once
    assert ("alice", "tokens_per_day", 0.12) in spend.seen  # type: ignore[attr-defined]
    assert spend.admit("alice", 580, 0.01) is not None  # 120 + 300 + 580 = 1000
    with pytest.raises(BudgetExceededError):
        spend.admit("alice", 1, 0.0)
    assert _usage(spend) == pytest.approx(120)


_CALLER = """
import sys, gevent, redis
from app.coordination.redis_reservations import RedisReservations
from app.coordination.reservation import SqliteReservations
from app.gateway.slots import LOCAL_SCHEMA
from app.localdb import LocalDB
from app.security.spend import Spend
from tests.unit.security.test_spend import KEYS
kind, where = sys.argv[1], sys.argv[2]
store = (
    RedisReservations(redis.Redis.from_url(where))
    if kind == "redis"
    else SqliteReservations(LocalDB(where, LOCAL_SCHEMA))
)
assert Spend(KEYS, store, "t:", hold=0.6).admit("alice", 1000, 0.0) is not None  # never settled
print("admitted", flush=True)
gevent.sleep(600)
"""


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_calls_reservation_lives_with_its_process_and_ends_soon_after_it_is_killed(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A reservation is its call's lease: renewed while the calling process lives (past many
    holds), given back within about one hold once that process is SIGKILLed — not at the call's
    deadline, nor at the end of the day."""
    import subprocess
    import sys

    from loadtest._procs import ROOT

    if kind == "redis":
        where = request.getfixturevalue("own_redis_url")
        store: Reservations = RedisReservations(redis.Redis.from_url(where))
    else:
        where = str(tmp_path / "upstream.sqlite3")
        store = SqliteReservations(LocalDB(where, LOCAL_SCHEMA))
    spend = Spend(KEYS, store, "t:")
    caller = subprocess.Popen([sys.executable, "-c", _CALLER, kind, where], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert caller.stdout is not None and caller.stdout.readline().strip() == "admitted"
        held_until = time.monotonic() + 2.0  # over three holds
        while time.monotonic() < held_until:
            with pytest.raises(BudgetExceededError):
                spend.admit("alice", 1, 0.0)
            time.sleep(0.2)
        caller.kill()
        caller.wait()
        killed = time.monotonic()
        while True:
            try:
                ticket = spend.admit("alice", 1000, 0.0)
                break
            except BudgetExceededError:
                assert time.monotonic() - killed < 15, "the killed call's reservation never ended"
                time.sleep(0.05)
        assert ticket is not None
        ticket.release()
    finally:
        caller.kill()
        caller.wait()
        if caller.stdout is not None:
            caller.stdout.close()


def test_a_store_that_cannot_count_refuses() -> None:
    dead = redis.Redis(port=1, socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0))
    for store in (None, RedisReservations(dead)):
        spend = Spend(KEYS, store, "t:")
        with pytest.raises(BudgetUnavailableError) as refused:
            spend.admit("alice", 10, 0.0)
        assert refused.value.status_code == 503 and refused.value.retry_after
        assert spend.admit("bob", 10, 0.0) is None  # a key without budgets is not counted


def test_a_settlement_the_store_could_not_take_is_written_later_once(own_redis_url: str) -> None:
    """Redis stalls (CLIENT PAUSE) while a call settles: the settlement is kept, written by the
    next step, and counted once although the stalled attempt also landed."""
    client = redis.Redis.from_url(own_redis_url, socket_timeout=0.2)
    spend = Spend(KEYS, RedisReservations(client), "t:")
    ticket = spend.admit("alice", 500, 0.0)
    assert ticket is not None
    redis.Redis.from_url(own_redis_url).client_pause(600)
    ticket.settle(200, 0.0)
    assert spend.unwritten == 1
    time.sleep(0.8)  # the pause ends (a bound on Redis's own timer, not a result)
    spend.admit("alice", 100, 0.0)  # the next step writes what was kept
    assert spend.unwritten == 0
    assert _usage(spend) == pytest.approx(200)


def test_a_kept_settlement_is_written_by_the_last_flush_of_an_exiting_worker(own_redis_url: str) -> None:
    """A worker exits while a use it could not write is kept (its retry is 2 s away): the exit's
    flush writes it when the store answers, and says so when it cannot."""
    client = redis.Redis.from_url(own_redis_url, socket_timeout=0.2)
    spend = Spend(KEYS, RedisReservations(client), "t:")
    ticket = spend.admit("alice", 500, 0.0)
    assert ticket is not None
    admin = redis.Redis.from_url(own_redis_url)
    admin.client_pause(10_000, all=False)  # writes wait; the UNPAUSE below does not
    ticket.settle(300, 0.0)
    assert spend.unwritten == 1
    assert spend.flush() is False and spend.unwritten == 1  # still stalled: kept, and said
    admin.execute_command("CLIENT", "UNPAUSE")
    assert spend.flush() is True and spend.unwritten == 0  # at once, not after the retry's 2 s
    assert _usage(spend) == pytest.approx(300)


def test_the_input_bound_counts_bytes() -> None:
    assert input_token_bound(["abc"]) == 1 + 4
    assert input_token_bound(["x" * 10_000, "y"]) == 3334 + 4 + 1 + 4
    assert input_token_bound(["\u4e2d" * 100]) == 100 + 4  # three bytes each: one token each at most


def test_cost_uses_the_price_table() -> None:
    prices = {"claude-sonnet-4": (3.0, 15.0)}
    assert cost_usd(prices, "claude-sonnet-4-20250514", 1_000_000, 0) == pytest.approx(3.0)
    assert cost_usd(prices, "unknown", 10, 10) == 0.0


def test_periods_reset_at_utc_midnight_and_the_month() -> None:
    from app.security.spend import _period

    moment = time.mktime((2026, 12, 31, 23, 0, 0, 0, 0, 0)) - time.timezone
    assert _period("day", moment)[0] == "2026-12-31" and _period("day", moment)[1] - moment == 3600
    assert _period("month", moment)[0] == "2026-12" and time.gmtime(_period("month", moment)[1])[:3] == (2027, 1, 1)


def test_readiness_says_what_the_budgets_can_count(own_redis_url: str) -> None:
    assert Spend((KeySpec("bob", digest("b")),), MemoryReservations(), "t:").readiness() is None  # no budgets
    broken = Spend(KEYS, None, "t:", scope="machine", why="upstream.sqlite3: DatabaseError")
    assert broken.readiness() == {"status": "fail", "scope": "machine", "error": "upstream.sqlite3: DatabaseError"}
    client = redis.Redis.from_url(own_redis_url, socket_timeout=0.2)
    spend = Spend(KEYS, RedisReservations(client), "t:", scope="fleet")
    assert spend.readiness() == {"status": "ok", "scope": "fleet"}
    ticket = spend.admit("alice", 100, 0.0)
    assert ticket is not None
    redis.Redis.from_url(own_redis_url).client_pause(500)
    ticket.settle(50, 0.0)  # not written: Redis stalled
    assert spend.readiness() == {"status": "warn", "scope": "fleet", "unwritten": 1}
    deadline = time.monotonic() + 10  # the kept use is written by a retry greenlet once Redis answers
    while spend.unwritten:
        assert time.monotonic() < deadline, "the kept use was never written"
        gevent.sleep(0.1)
    assert _usage(spend) == pytest.approx(50)
