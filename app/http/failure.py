"""One failed attempt at the upstream, as the transport and the providers report it."""

from __future__ import annotations

__all__ = ["RETRYABLE_STATUSES", "UpstreamFailure"]


# Upstream answers worth another attempt: rate limited, server errors, Anthropic's "overloaded".
RETRYABLE_STATUSES = (429, 500, 502, 503, 529)


class UpstreamFailure(Exception):
    """One failed attempt at the upstream; the gateway decides on retries and the HTTP status."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind  # timeout | connection | status | invalid
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind == "connection" or self.status in RETRYABLE_STATUSES

    @property
    def counts_against_upstream(self) -> bool:
        """Return whether this failure says the upstream is unhealthy (a breaker failure)."""
        if self.kind in ("timeout", "connection"):
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)
