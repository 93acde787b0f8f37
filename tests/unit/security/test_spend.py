"""Per-key budgets in one process (each worker's own count, as without Redis) and in a real
Redis: reservation, settlement, refusal naming the budget and its reset, the first call's cap."""

from __future__ import annotations

import time

import pytest
import redis

from app.security.spend import BudgetExceededError, Spend, cost_usd
from config.keys import KeySpec, digest

ALICE = KeySpec("alice", digest("a"), budgets=(("tokens_per_day", 1000.0), ("cost_per_month_usd", 1.0)))


@pytest.fixture(params=["memory", "redis"])
def spend(request: pytest.FixtureRequest) -> Spend:
    seen: list[tuple[str, str, float]] = []
    client = redis.Redis.from_url(request.getfixturevalue("own_redis_url")) if request.param == "redis" else None
    found = Spend((ALICE, KeySpec("bob", digest("b"))), client, "t:", lambda *args: seen.append(args))
    found.seen = seen  # type: ignore[attr-defined]
    return found


def test_calls_are_admitted_while_the_budget_holds_their_expected_use(spend: Spend) -> None:
    assert spend.admit("bob", 4096, 0.0) is None and spend.admit(None, 4096, 0.0) is None  # no budget
    first = spend.admit("alice", 4096, 0.01)  # no average yet: may take what is left, one at a time
    assert first is not None
    with pytest.raises(BudgetExceededError):
        spend.admit("alice", 4096, 0.01)  # the first's reservation holds everything left
    first.settle(300, 0.001)
    assert ("alice", "tokens_per_day", 0.3) in spend.seen  # type: ignore[attr-defined]
    tickets = [spend.admit("alice", 4096, 0.01) for _ in range(2)]  # 300 expected each: 300 + 600 <= 1000
    with pytest.raises(BudgetExceededError) as refused:
        spend.admit("alice", 4096, 0.01)
    assert "key 'alice': its tokens_per_day budget (1000) is spent; it resets at " in refused.value.details
    assert refused.value.status_code == 429 and 1 <= refused.value.retry_after <= 86400  # type: ignore[operator]
    tickets[0].release()  # a call that failed uses nothing
    again = spend.admit("alice", 4096, 0.01)
    assert again is not None
    again.settle(300, 0.001)
    tickets[1].settle(300, 0.001)
    assert spend.usage()["alice"]["tokens_per_day"] == pytest.approx(900)
    with pytest.raises(BudgetExceededError):
        spend.admit("alice", 4096, 0.01)  # 900 used, 300 expected


def test_cost_uses_the_price_table() -> None:
    prices = {"claude-sonnet-4": (3.0, 15.0)}
    assert cost_usd(prices, "claude-sonnet-4-20250514", 1_000_000, 0) == pytest.approx(3.0)
    assert cost_usd(prices, "unknown", 10, 10) == 0.0


def test_periods_reset_at_utc_midnight_and_the_month() -> None:
    from app.security.spend import _period

    moment = time.mktime((2026, 12, 31, 23, 0, 0, 0, 0, 0)) - time.timezone
    assert _period("day", moment)[0] == "2026-12-31" and _period("day", moment)[1] - moment == 3600
    assert _period("month", moment)[0] == "2026-12" and time.gmtime(_period("month", moment)[1])[:3] == (2027, 1, 1)
