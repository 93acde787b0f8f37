"""Who is asking: the caller of one model answer, passed with the request to the gateway (never
read from the context). Its API key's name (budgets and usage are charged to it), the name its
answers are kept apart under (the key's name when its cache scope is `key`, else None: shared),
and its rank for an upstream slot (interactive callers first, then jobs by priority, first come
first served within one: a job's `since` is when it was submitted). `keys_used`, when given,
collects the cache keys its completions used (a job, to tell whether others share its call
before stopping it)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ANONYMOUS", "Caller"]


@dataclass(frozen=True, slots=True)
class Caller:
    key: str | None = None
    scope: str | None = None
    priority: str = "interactive"  # or a job's: high, normal, low
    since: float | None = None  # a job's submission (time.time()); None: when each call asks
    keys_used: list[str] | None = field(default=None, compare=False)

    @property
    def interactive(self) -> bool:
        return self.priority == "interactive"


ANONYMOUS = Caller()
