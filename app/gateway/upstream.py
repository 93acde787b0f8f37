"""One upstream call: breaker admission, attempts with backoff inside the deadline, error mapping."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from typing import TypeVar

import gevent
from tenacity import RetryCallState, Retrying, retry_if_result, stop_after_attempt, wait_random_exponential
from tenacity.stop import stop_base

from app.errors import (
    APIError,
    GatewayTimeoutError,
    InvalidAnswerError,
    ServiceUnavailableError,
    UpstreamAuthError,
    UpstreamError,
)
from app.gateway.breaker import Breaker
from app.gateway.budget import Budget
from app.gateway.observer import Observer
from app.gateway.tracer import NullTracer, Span, Tracer
from app.providers.base import LLMRequest, Provider, ProviderResult, UpstreamFailure
from app.security.spend import Spend, Ticket, cost_usd, input_token_bound

__all__ = ["UpstreamCaller", "to_api_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")
BACKOFF_BASE = 0.25  # seconds: the first retry waits up to this long, each next one up to twice as long
BACKOFF_CAP = 8.0


def to_api_error(failure: UpstreamFailure, provider: str) -> APIError:
    """Map a final upstream failure to the status our caller sees."""
    if failure.kind == "timeout":
        return GatewayTimeoutError()
    if failure.kind == "invalid":
        return InvalidAnswerError(details=str(failure))
    if failure.status in (401, 403):
        log.error("upstream %s rejected our API key (HTTP %s): check the key", provider, failure.status)
        return UpstreamAuthError()
    if failure.status == 429:
        return ServiceUnavailableError("Upstream model API rate limit reached", retry_after=failure.retry_after or 1.0)
    return UpstreamError(details=str(failure))


def _next(pieces: Generator[str | ProviderResult, None, None], deadline: float) -> str | ProviderResult:
    """The stream's next item, or a timeout failure when the deadline passes first (the read is
    interrupted, which closes the upstream response)."""
    remaining = deadline - time.monotonic()
    failure = UpstreamFailure("timeout", "stream deadline reached")
    if remaining <= 0:
        raise failure
    try:
        with gevent.Timeout(remaining, failure):
            return next(pieces)
    except StopIteration:
        raise UpstreamFailure("invalid", "upstream stream ended without a result") from None


class _NoTimeLeft(stop_base):
    """Stop when the wait would leave no time for another attempt before the deadline."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def __call__(self, state: RetryCallState) -> bool:
        return time.monotonic() + state.upcoming_sleep >= self._deadline


class UpstreamCaller:
    """Call the provider through the breaker, retrying transient failures with full-jitter
    exponential backoff (or the server's retry-after), never past the request's deadline."""

    def __init__(
        self,
        provider: Provider,
        breaker: Breaker,
        observer: Observer,
        max_retries: int,
        sleep: Callable[[float], None] = gevent.sleep,
        tracer: Tracer | None = None,
        budget: Budget | None = None,
        spend: Spend | None = None,
        prices: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.provider = provider
        self.breaker = breaker
        self._observer = observer
        self._max_retries = max_retries
        self._sleep = sleep
        self._tracer = tracer or NullTracer()
        self._jitter = wait_random_exponential(multiplier=BACKOFF_BASE, max=BACKOFF_CAP)
        self.budget = budget or Budget(None)
        self.spend = spend if spend else None  # per-key budgets (None: no key has one)
        self._prices = prices or {}

    def call(self, request: LLMRequest) -> ProviderResult:
        """Return the provider's answer, or raise the APIError its last failure maps to."""
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": self.provider.name,
            "gen_ai.request.model": self.provider.model,
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.request.temperature": request.temperature,
            "prompt_builder.mode": request.mode,
        }
        with self._tracer.span(f"chat {self.provider.model}", attributes) as span:
            span.set_attribute("circuit_breaker.state", self.breaker.state)
            with self.budget.slot(request.caller, request.timeout) as deadline:
                ticket = self._admit(request)
                try:
                    result = self._call(request, span, deadline)
                    self._charge(ticket, result)
                finally:
                    if ticket is not None:
                        ticket.release()
            span.set_attribute("gen_ai.response.model", result.model)
            span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
            return result

    def _call(self, request: LLMRequest, span: Span, deadline: float) -> ProviderResult:
        probe = self.breaker.admit()
        outcome: ProviderResult | UpstreamFailure | None = None  # the request's, once known
        try:
            outcome = self._retrying(request, deadline, lambda: self._attempt(request, deadline), span)
            if isinstance(outcome, UpstreamFailure):
                span.set_attribute("error.type", str(outcome.status or outcome.kind))
                raise to_api_error(outcome, self.provider.name)
            return outcome
        finally:
            self._settle(probe, outcome)

    def stream(
        self, request: LLMRequest, model: str | None = None, deadline: float | None = None
    ) -> Generator[str | ProviderResult, None, None]:
        """Yield the provider's text pieces, then its ProviderResult. Retries act until the first
        piece arrives; after that a failure ends the stream (raised as its APIError). The
        breaker admits the stream once and counts its one outcome, as for a whole call.
        `deadline` (monotonic; default: the request's timeout from now) bounds the whole
        stream: a stall past it is a timeout failure. Closing the generator closes the upstream
        connection."""
        with self.budget.slot(request.caller, request.timeout, deadline) as deadline:
            ticket = self._admit(request, model)
            try:
                for item in self._stream(request, model or self.provider.model, deadline):
                    if isinstance(item, ProviderResult):
                        self._charge(ticket, item)
                    yield item
            finally:
                if ticket is not None:
                    ticket.release()

    def _admit(self, request: LLMRequest, model: str | None = None) -> Ticket | None:
        """Reserve a bound on the call's use against the calling key's budgets while it runs:
        its input counted from its text plus its output cap (429 when a budget has no room,
        503 when they cannot be counted)."""
        if self.spend is None:
            return None
        tokens_in = input_token_bound([request.system, *(content for _, content in request.messages)])
        cost = cost_usd(self._prices, model or self.provider.model, tokens_in, request.max_tokens)
        return self.spend.admit(request.caller.key, tokens_in + request.max_tokens, cost)

    def _charge(self, ticket: Ticket | None, result: ProviderResult) -> None:
        if ticket is not None:
            cost = cost_usd(self._prices, result.model, result.input_tokens, result.output_tokens)
            ticket.settle(result.input_tokens + result.output_tokens, cost)

    def _stream(self, request: LLMRequest, model: str, deadline: float) -> Generator[str | ProviderResult, None, None]:
        probe = self.breaker.admit()
        outcome: ProviderResult | UpstreamFailure | None = None  # the stream's, once known
        try:
            opened = self._retrying(request, deadline, lambda: self._open(request, deadline, model))
            if isinstance(opened, UpstreamFailure):
                outcome = opened
                raise to_api_error(opened, self.provider.name)
            pieces, item, started = opened
            try:
                yield item
                while not isinstance(item, ProviderResult):
                    item = _next(pieces, deadline)
                    yield item
            except UpstreamFailure as failure:
                self._observe(request, failure, started, model)
                outcome = failure
                raise to_api_error(failure, self.provider.name) from None
            finally:
                pieces.close()
            self._observe(request, item, started, model)
            outcome = item
        finally:
            self._settle(probe, outcome)

    def _retrying(
        self, request: LLMRequest, deadline: float, attempt: Callable[[], T | UpstreamFailure], span: Span | None = None
    ) -> T | UpstreamFailure:
        """The one retry policy, for whole and streamed calls (tenacity): `attempt()` until it
        succeeds or its failure is final — not retryable, out of retries, or no time left for the
        wait and another attempt inside the deadline; return the success or that final failure.
        The wait is the server's Retry-After when it sent one, else full-jitter exponential."""

        def wait(state: RetryCallState) -> float:
            failure: UpstreamFailure = state.outcome.result()  # type: ignore[union-attr]
            return failure.retry_after if failure.retry_after is not None else self._jitter(state)

        def before_sleep(state: RetryCallState) -> None:
            failure: UpstreamFailure = state.outcome.result()  # type: ignore[union-attr]
            delay, reason = state.upcoming_sleep, str(failure.status or failure.kind)
            if span is not None:
                span.add_event("retry", {"attempt": state.attempt_number, "delay_s": round(delay, 3), "reason": reason})
            self._observer.upstream_retry(self.provider.name, request, failure, delay)

        retrying = Retrying(
            retry=retry_if_result(lambda outcome: isinstance(outcome, UpstreamFailure) and outcome.retryable),
            stop=stop_after_attempt(self._max_retries + 1) | _NoTimeLeft(deadline),
            wait=wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        return retrying(attempt)  # type: ignore[no-any-return]

    def _open(
        self, request: LLMRequest, deadline: float, model: str
    ) -> tuple[Generator[str | ProviderResult, None, None], str | ProviderResult, float] | UpstreamFailure:
        """One attempt at a stream: open it and read its first item (the pieces, that item and
        when the attempt began), or the attempt's failure (counted, the connection closed)."""
        self.budget.wait_unpaused(deadline if request.caller.interactive else None)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return UpstreamFailure("timeout", "request deadline reached")
        started = time.perf_counter()
        pieces = self.provider.stream(request, timeout=remaining, model=model)
        try:
            first = _next(pieces, deadline)
        except UpstreamFailure as failure:
            pieces.close()
            self._observe(request, failure, started, model)
            return self._paused(failure)
        except BaseException:
            pieces.close()
            raise
        return pieces, first, started

    def _settle(self, probe: bool, outcome: ProviderResult | UpstreamFailure | None) -> None:
        """Give the breaker one request's outcome after its retries (a failure counts once,
        however many attempts it took); with no outcome (cancelled, or no attempt made in
        time) the admission is only released."""
        if outcome is None:
            self.breaker.release(probe)
            return
        self.breaker.record(outcome if isinstance(outcome, UpstreamFailure) else None, probe)
        self._observer.breaker_failures(self.breaker.name, self.breaker.failures)

    def _observe(
        self, request: LLMRequest, outcome: ProviderResult | UpstreamFailure, started: float, model: str
    ) -> None:
        """Count one attempt: every attempt is an upstream call, whatever the breaker counts."""
        self._observer.upstream_call(self.provider.name, model, request, outcome, time.perf_counter() - started)

    def _paused(self, failure: UpstreamFailure) -> UpstreamFailure:
        """A 429 pauses every new call (the fleet's, with Redis) for its Retry-After."""
        if failure.status == 429:
            self.budget.pause(failure.retry_after or 1.0)
        return failure

    def _attempt(self, request: LLMRequest, deadline: float) -> ProviderResult | UpstreamFailure:
        self.budget.wait_unpaused(deadline if request.caller.interactive else None)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return UpstreamFailure("timeout", "request deadline reached")
        started = time.perf_counter()
        outcome: ProviderResult | UpstreamFailure
        try:
            with gevent.Timeout(remaining, UpstreamFailure("timeout", "request deadline reached")):
                outcome = self.provider.complete(request, timeout=remaining)
        except UpstreamFailure as failure:
            outcome = self._paused(failure)
        self._observe(request, outcome, started, self.provider.model)
        return outcome
