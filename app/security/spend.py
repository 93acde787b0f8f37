"""Per-key budgets: tokens and cost per day and per month (API_KEYS_FILE), counted across the
fleet with Redis, across the workers of one machine without it (SQLite in CACHE_DIR), or by
each worker alone with neither; charged with what the model actually used.

Exact by counted reservation (app.coordination.reservation): before a model call, a bound on
what the call can use — the request's input tokens, counted from its text (UTF-8 bytes / 3,
which no tokenizer we price exceeds on ordinary text), plus its output cap (`max_tokens`, which
the model cannot exceed) — is reserved in one atomic step that checks `used + reserved + bound
<= budget` for every budget of the key; after the call the reservation is replaced by the
actual use. Concurrent calls therefore cannot all pass on a budget that holds only some of them,
and what was spent never exceeds a budget by more than the last admitted calls' input beyond
that count. A reservation is its call's lease on the amount: HOLD seconds, renewed by the
process's lease Keeper while the call runs, so a call whose worker died (SIGKILL) gives its
reservation back within one hold — not at its deadline, nor at the end of the period.

A store that cannot answer refuses the call (503 + Retry-After): a budget that cannot be
counted admits nothing. A settlement that cannot be written is kept and written with the next
step that reaches the store (it counts once however often it is tried). A call refused gets 429
naming the budget and when it resets (Retry-After). Answers from the cache and from another's
call in flight use no model and are never refused.
"""

from __future__ import annotations

import calendar
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent

from app.coordination.lease import Keeper, Lease
from app.coordination.reservation import Claim, Reservations, StoreUnavailable
from app.errors import APIError
from config.keys import BUDGETS, KeySpec

__all__ = ["BudgetExceededError", "BudgetUnavailableError", "Spend", "Ticket", "cost_usd", "input_token_bound"]

log = logging.getLogger(__name__)

HOLD = 15.0  # seconds a reservation lasts unless its holder renews it (a killed holder's comes back)
RETRY_AFTER = 2.0  # seconds: what a caller refused for an unreachable store is told


class BudgetExceededError(APIError):
    status_code = 429
    message = "Budget exhausted"
    default_details = "this key's budget is spent until it resets"


class BudgetUnavailableError(APIError):
    status_code = 503
    message = "Budget unavailable"
    default_details = "this key's budgets cannot be counted now; retry after Retry-After seconds"


def cost_usd(prices: dict[str, tuple[float, float]], model: str, input_tokens: float, output_tokens: float) -> float:
    """Estimated USD for a call: the exact model's price, else the longest entry its name starts
    with (dated model ids), else 0."""
    price = prices.get(model)
    if price is None:
        matches = [name for name in prices if model.startswith(name)]
        price = prices[max(matches, key=len)] if matches else (0.0, 0.0)
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6


def input_token_bound(texts: list[str]) -> int:
    """At least as many input tokens as a model counts for `texts` (ordinary text: a token is
    3 UTF-8 bytes or more), plus a few per message for the wire format's framing."""
    return sum(math.ceil(len(text.encode("utf-8", "surrogatepass")) / 3) + 4 for text in texts)


def _period(kind: str, now: float) -> tuple[str, float]:
    """The period's id and when it ends (UTC): a day, or a calendar month."""
    t = time.gmtime(now)
    if kind == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return time.strftime("%Y-%m-%d", t), start + 86400
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return time.strftime("%Y-%m", t), calendar.timegm((year, month, 1, 0, 0, 0))


@dataclass
class Ticket:
    """One admitted call's reservation, settled with what it used (or released)."""

    spend: Spend
    key: str
    holder: str
    counters: list[tuple[str, str]]  # (counter, budget field)
    keep: float
    lease: Lease
    settled: bool = False

    def settle(self, tokens: int, cost: float) -> None:
        if not self.settled:
            self.settled = True
            self.spend._settle(self, float(tokens), cost)

    def release(self) -> None:
        """The call used nothing (it failed before the model answered)."""
        self.settle(0, 0.0)


@dataclass
class _Pending:
    ticket: Ticket
    used: list[tuple[str, float]]
    since: float = field(default_factory=time.monotonic)


class Spend:
    """The budgets of every key that has one; `admit` before a model call, settle after.
    `scope` says whose count it is: fleet (Redis), machine (CACHE_DIR) or worker."""

    def __init__(
        self,
        keys: tuple[KeySpec, ...],
        store: Reservations | None,
        prefix: str,
        on_used: Callable[[str, str, float], None] | None = None,
        scope: str = "worker",
        why: str = "the budget store could not be opened",
        hold: float = HOLD,
    ) -> None:
        self._keys = {spec.name: spec for spec in keys if spec.budgets}
        self._store = store  # None: the store could not be opened (every budgeted call refused)
        self._prefix = prefix
        self._on_used = on_used or (lambda key, budget, ratio: None)
        self.scope = scope
        self._why = why  # why there is no store, when there is none
        self._pending: list[_Pending] = []  # settlements the store could not take yet
        self._retrying: gevent.Greenlet | None = None  # writes them once the store is back
        self._hold = hold
        self._live: dict[str, Ticket] = {}  # holder → its admitted call's ticket, until settled
        self._keeper = Keeper(self, on_error=lambda exc: log.warning("budget reservation not renewed: %s", exc))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def _counter(self, key: str, budget: str, now: float) -> tuple[str, float]:
        period, ends = _period(_PERIODS[budget], now)
        return f"{self._prefix}budget:{{{key}}}:{budget}:{period}", ends

    def admit(self, key: str | None, tokens: float, cost: float) -> Ticket | None:
        """Reserve `tokens` and `cost` (a bound on one call's use) of `key`'s budgets for as
        long as the call runs (renewed every third of a hold until it is settled); raise
        BudgetExceededError (429) when one has no room, BudgetUnavailableError (503) when they
        cannot be counted."""
        spec = self._keys.get(key) if key is not None else None
        if spec is None:
            return None
        now = time.time()
        plan = []
        for budget, amount in spec.budgets:
            counter, ends = self._counter(spec.name, budget, now)
            plan.append((Claim(counter, amount, tokens if budget.startswith("tokens") else cost), budget, ends))
        keep = max(ends for *_, ends in plan) - now + 86400
        holder = f"{os.getpid()}:{os.urandom(8).hex()}"
        expires = now + self._hold
        try:
            if self._store is None:
                raise StoreUnavailable("the budget store could not be opened")
            self._flush()
            refused = self._store.reserve(holder, [claim for claim, *_ in plan], expires, keep)
        except StoreUnavailable as exc:
            log.warning("budgets of key %r unavailable (%s): call refused", spec.name, exc)
            raise BudgetUnavailableError(retry_after=RETRY_AFTER) from None
        if refused is not None:
            claim, budget, ends = plan[refused]
            reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ends))
            raise BudgetExceededError(
                details=f"key {spec.name!r}: its {budget} budget ({claim.limit:g}) is spent; it resets at {reset}",
                retry_after=max(1.0, ends - now),
            )
        lease = Lease(holder, holder.encode(), self._hold)
        ticket = Ticket(self, spec.name, holder, [(claim.counter, budget) for claim, budget, _ in plan], keep, lease)
        self._live[holder] = ticket
        self._keeper.keep(lease)
        return ticket

    def renew(self, lease: Lease) -> bool:
        """The Keeper's step: extend a live call's reservation by one hold."""
        ticket = self._live.get(lease.name)
        if ticket is None or self._store is None:
            return False
        return self._store.renew(ticket.holder, [counter for counter, _ in ticket.counters], time.time() + lease.ttl)

    def _settle(self, ticket: Ticket, tokens: float, cost: float) -> None:
        self._keeper.drop(ticket.lease)
        self._live.pop(ticket.holder, None)
        used = [(counter, tokens if budget.startswith("tokens") else cost) for counter, budget in ticket.counters]
        self._pending.append(_Pending(ticket, used))
        try:
            self._flush()
        except StoreUnavailable as exc:
            log.warning("budget use of key %r not written yet (%s): kept to write later", ticket.key, exc)
            if self._retrying is None or self._retrying.dead:
                self._retrying = gevent.spawn(self._write_later)

    def _write_later(self) -> None:
        """Retry the kept settlements every RETRY_AFTER seconds until the store takes them all."""
        while self._pending:
            gevent.sleep(RETRY_AFTER)
            try:
                self._flush()
            except StoreUnavailable:
                continue

    def flush(self) -> bool:
        """One last try at the settlements kept (the worker's exit): whether none is left. What
        stays unwritten is lost with the worker; its reservations still expire, so nothing is
        admitted beyond a budget."""
        if not self._pending or self._store is None:
            return not self._pending
        try:
            self._flush()
        except StoreUnavailable as exc:
            log.error("%d budget use(s) not written as the worker exits (%s)", len(self._pending), exc)
            return False
        return True

    def _flush(self) -> None:
        """Write the settlements waiting for the store (raise StoreUnavailable). Each is taken
        off the list while it is written (another greenlet may flush meanwhile) and put back
        when the store cannot take it."""
        assert self._store is not None
        while self._pending:
            pending = self._pending.pop(0)
            ticket = pending.ticket
            try:
                totals = self._store.settle(ticket.holder, pending.used, ticket.keep)
            except StoreUnavailable:
                self._pending.insert(0, pending)
                raise
            amounts = dict(self._keys[ticket.key].budgets)
            for (_, budget), total in zip(ticket.counters, totals, strict=True):
                self._on_used(ticket.key, budget, total / amounts[budget])

    def readiness(self) -> dict[str, object] | None:
        """For /health/ready, when a key has budgets: a store that could not be opened fails
        (budgeted calls are refused); uses not yet written are a warning."""
        if not self._keys:
            return None
        if self._store is None:
            return {"status": "fail", "scope": self.scope, "error": self._why}
        broken = getattr(getattr(self._store, "db", None), "broken", None)
        if broken is not None:
            return {"status": "fail", "scope": self.scope, "error": broken}
        if self._pending:
            return {"status": "warn", "scope": self.scope, "unwritten": len(self._pending)}
        return {"status": "ok", "scope": self.scope}

    @property
    def unwritten(self) -> int:
        """Settlements kept because the store could not take them (readiness reports them)."""
        return len(self._pending)


_PERIODS = {name: period for name, period, _ in BUDGETS}
