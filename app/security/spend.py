"""Per-key budgets: tokens and cost per day and per month (API_KEYS_FILE), counted across the
fleet in Redis (each worker's own without it), charged with what the model actually used.

Exact across replicas by reservation: before a model call, the key's expected use (its average
per call so far, or the request's max_tokens before it has one) is reserved — in one atomic step
that also checks `used + reserved + expected <= budget` for every budget of the key — and after
it the reservation is replaced by the actual use. Concurrent calls therefore cannot all pass on
a budget that holds only some of them; what can still overshoot is the difference between the
expectation and the actual use of the calls admitted last. A call refused gets 429 saying which
budget and when it resets (Retry-After). Answers from the cache and from another's call in
flight use no model and are never refused.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from app.errors import APIError
from config.keys import BUDGETS, KeySpec

__all__ = ["BudgetExceededError", "Spend", "Ticket", "cost_usd"]

log = logging.getLogger(__name__)


class BudgetExceededError(APIError):
    status_code = 429
    message = "Budget exhausted"
    default_details = "this key's budget is spent until it resets"


def cost_usd(prices: dict[str, tuple[float, float]], model: str, input_tokens: int, output_tokens: int) -> float:
    """Estimated USD for a call: the exact model's price, else the longest entry its name starts
    with (dated model ids), else 0."""
    price = prices.get(model)
    if price is None:
        matches = [name for name in prices if model.startswith(name)]
        price = prices[max(matches, key=len)] if matches else (0.0, 0.0)
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


def _period(kind: str, now: float) -> tuple[str, float]:
    """The period's id and when it ends (UTC): a day, or a calendar month."""
    t = time.gmtime(now)
    if kind == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return time.strftime("%Y-%m-%d", t), start + 86400
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return time.strftime("%Y-%m", t), calendar.timegm((year, month, 1, 0, 0, 0))


# KEYS: one hash per budget; ARGV: n, capped (1: reserve at most what is left), then per budget:
# amount, expected; then ttl. Returns {0, reserved...} when admitted, else {index refused}.
_ADMIT = """
local n = tonumber(ARGV[1])
local capped = ARGV[2] == '1'
local reserve = {}
for i = 1, n do
  local used = tonumber(redis.call('hget', KEYS[i], 'used') or '0')
  local reserved = tonumber(redis.call('hget', KEYS[i], 'reserved') or '0')
  local amount, expected = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local left = amount - used - reserved
  if capped then
    if left <= 0 then return {i} end
    reserve[i] = math.min(expected, left)
  else
    if expected > left then return {i} end
    reserve[i] = expected
  end
end
local out = {0}
for i = 1, n do
  redis.call('hincrbyfloat', KEYS[i], 'reserved', reserve[i])
  redis.call('expire', KEYS[i], ARGV[3 + 2 * n])
  out[i + 1] = tostring(reserve[i])
end
return out
"""


@dataclass
class Ticket:
    """One admitted call's reservation, settled with what it used (or released)."""

    spend: Spend
    key: str
    hashes: list[tuple[str, str, float]]  # (store key, budget field, reserved amount)
    settled: bool = False

    def settle(self, tokens: int, cost: float) -> None:
        self.settled = True
        self.spend._settle(self, tokens, cost)

    def release(self) -> None:
        if not self.settled:
            self.settled = True
            self.spend._settle(self, None, None)


class Spend:
    """The budgets of every key that has one; `admit` before a model call, settle after."""

    def __init__(
        self,
        keys: tuple[KeySpec, ...],
        client: redis.Redis | None,
        prefix: str,
        on_used: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self._keys = {spec.name: spec for spec in keys if spec.budgets}
        self._client = client
        self._prefix = prefix
        self._on_used = on_used or (lambda key, budget, ratio: None)
        self._admit = client.register_script(_ADMIT) if client is not None else None
        self._memory: dict[str, dict[str, float]] = {}  # without Redis: this worker's counts
        self._average: dict[str, tuple[float, float]] = {}  # key -> (tokens, cost) per call, here

    def __bool__(self) -> bool:
        return bool(self._keys)

    def _hash(self, key: str, budget: str, now: float) -> tuple[str, float]:
        period, ends = _period(_PERIODS[budget], now)
        return f"{self._prefix}spend:{{{key}}}:{budget}:{period}", ends

    def admit(self, key: str | None, max_tokens: int, expected_cost: float) -> Ticket | None:
        """Reserve `key`'s expected use of one call, or raise BudgetExceededError (429)."""
        spec = self._keys.get(key) if key is not None else None
        if spec is None:
            return None
        now = time.time()
        expected, known = self._expected(spec.name, max_tokens, expected_cost)
        plan = []
        for budget, amount in spec.budgets:
            store, ends = self._hash(spec.name, budget, now)
            plan.append((store, budget, amount, expected[0] if budget.startswith("tokens") else expected[1], ends))
        # A key's first call (no average yet) may take what is left, up to its bound: until it
        # is known, calls of the key pass one at a time rather than all on a guess.
        reserved = self._reserve(plan, capped=not known)
        if isinstance(reserved, int):
            _, budget, amount, _, ends = plan[reserved]
            reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ends))
            raise BudgetExceededError(
                details=f"key {spec.name!r}: its {budget} budget ({amount:g}) is spent; it resets at {reset}",
                retry_after=max(1.0, ends - now),
            )
        return Ticket(
            self,
            spec.name,
            [(store, budget, amount) for (store, budget, *_), amount in zip(plan, reserved, strict=True)],
        )

    def _expected(self, key: str, max_tokens: int, expected_cost: float) -> tuple[tuple[float, float], bool]:
        """A call's expected (tokens, cost): the key's average so far (shared through Redis),
        known; else the request's bound, a guess."""
        average = None
        if self._client is not None:
            try:
                raw = self._client.hmget(f"{self._prefix}spend:{{{key}}}:average", "tokens", "cost")
                if raw[0] is not None:
                    average = (float(raw[0]), float(raw[1] or 0))
            except redis.RedisError:
                average = None
        average = average or self._average.get(key)
        return (average, True) if average is not None else ((float(max_tokens), expected_cost), False)

    def _reserve(self, plan: list[tuple[str, str, float, float, float]], capped: bool) -> int | list[float]:
        """Reserve each budget's share of a call: the amounts reserved, or the index of the
        budget that has no room."""
        ttl = int(max(ends for *_, ends in plan) - time.time()) + 86400
        if self._admit is not None:
            try:
                args: list[Any] = [len(plan), "1" if capped else "0"]
                for _, _, amount, expected, _ in plan:
                    args += [amount, expected]
                answer = self._admit([store for store, *_ in plan], [*args, ttl])
                if int(answer[0]):
                    return int(answer[0]) - 1
                return [float(x) for x in answer[1:]]
            except redis.RedisError as exc:
                log.warning("budgets unavailable in Redis (%s): counting in this worker", type(exc).__name__)
        amounts = []
        for index, (store, _, amount, expected, _) in enumerate(plan):
            entry = self._memory.get(store, {})
            left = amount - entry.get("used", 0.0) - entry.get("reserved", 0.0)
            if (left <= 0) if capped else (expected > left):
                return index
            amounts.append(min(expected, left))
        for (store, *_), amount in zip(plan, amounts, strict=True):
            entry = self._memory.setdefault(store, {"used": 0.0, "reserved": 0.0})
            entry["reserved"] += amount
        return amounts

    def _settle(self, ticket: Ticket, tokens: int | None, cost: float | None) -> None:
        spec = self._keys[ticket.key]
        amounts = dict(spec.budgets)
        for store, budget, reserved in ticket.hashes:
            used = 0.0 if tokens is None else float(tokens) if budget.startswith("tokens") else float(cost or 0.0)
            total = self._apply(store, used, reserved)
            if total is not None:
                self._on_used(ticket.key, budget, total / amounts[budget])
        if tokens is not None:
            self._learn(ticket.key, float(tokens), float(cost or 0.0))

    def _apply(self, store: str, used: float, reserved: float) -> float | None:
        if self._client is not None:
            try:
                pipe = self._client.pipeline(transaction=True)
                pipe.hincrbyfloat(store, "reserved", -reserved)
                pipe.hincrbyfloat(store, "used", used)
                return float(pipe.execute()[1])
            except redis.RedisError as exc:
                log.warning("budget not charged in Redis (%s)", type(exc).__name__)
        entry = self._memory.setdefault(store, {"used": 0.0, "reserved": 0.0})
        entry["reserved"] = max(0.0, entry["reserved"] - reserved)
        entry["used"] += used
        return entry["used"]

    def _learn(self, key: str, tokens: float, cost: float) -> None:
        """The key's average use per call: an exponential average (weight 0.2 for the newest)."""
        old = self._average.get(key)
        new = (tokens, cost) if old is None else (0.8 * old[0] + 0.2 * tokens, 0.8 * old[1] + 0.2 * cost)
        self._average[key] = new
        if self._client is not None:
            with contextlib.suppress(redis.RedisError):
                self._client.hset(f"{self._prefix}spend:{{{key}}}:average", mapping={"tokens": new[0], "cost": new[1]})

    def usage(self) -> dict[str, dict[str, float]]:
        """Each budgeted key's use of each budget now (for /stats)."""
        now = time.time()
        found: dict[str, dict[str, float]] = {}
        for name, spec in self._keys.items():
            for budget, _ in spec.budgets:
                store, _ = self._hash(name, budget, now)
                used = self._memory.get(store, {}).get("used", 0.0)
                if self._client is not None:
                    with contextlib.suppress(redis.RedisError):
                        used = float(self._client.hget(store, "used") or 0.0)  # type: ignore[arg-type]
                found.setdefault(name, {})[budget] = used
        return found


_PERIODS = {name: period for name, period, _ in BUDGETS}
