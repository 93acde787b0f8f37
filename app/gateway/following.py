"""Following a stream another process leads, through Redis: its events relayed into this
worker's run; the lead taken over when that stream ends without an answer to show; the answer
finished here when Redis goes away mid-relay (or an error event, never a text with a hole)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
import redis

from app.coalescing.redis_streams import UNREACHABLE
from app.coordination.lease import Lease
from app.errors import APIError, ServiceUnavailableError
from app.gateway.core import Core
from app.gateway.replay import DONE, error_event, replay, rest
from app.gateway.streams import StreamJob, StreamRun
from app.gateway.values import answer_value
from app.providers.base import ProviderResult

__all__ = ["Following"]

RELAYS = 3  # streams of one key followed in a row (each ended with nothing to show) before giving up


@dataclass(frozen=True)
class _Lead:
    """Lead the stream here, with the key's lease when it was claimed (None: on our own)."""

    lease: Lease | None


_AGAIN, _SETTLED = object(), object()


def _lost(reason: str, origin: str) -> bytes:
    return error_event(ServiceUnavailableError(reason), origin)


class Following:
    """The followers in this worker of streams led elsewhere (a part of Streams, which lends
    it how to `produce` a stream here and `forget` a run)."""

    def __init__(
        self,
        core: Core,
        produce: Callable[[StreamJob, StreamRun, Lease | None], None],
        forget: Callable[[StreamRun], None],
    ) -> None:
        assert core.shared_streams is not None
        self._core, self._shared = core, core.shared_streams
        self._produce, self._forget = produce, forget

    def follow(self, job: StreamJob, run: StreamRun) -> None:
        """Relay another process's stream of the run's key into `run`; lead it ourselves when
        that stream has just ended without an answer to show."""
        deadline = time.monotonic() + job.request.timeout
        handed_over = False
        try:
            for _ in range(RELAYS):
                ended = self._shared.relay(run.key, run.append, deadline, lambda reason: _lost(reason, job.origin))
                next_step = self._settle(job, run, ended)
                if next_step is _AGAIN:
                    continue
                if isinstance(next_step, _Lead):
                    handed_over = True  # the producer finishes the run
                    self._produce(job, run, next_step.lease)
                return
            run.append(_lost("Could not follow the identical stream in another process", job.origin))
            run.result.set_exception(ServiceUnavailableError("The identical stream could not be followed"))
        except gevent.GreenletExit:
            run.result.set_exception(ServiceUnavailableError("The identical stream was cancelled"))
            raise
        finally:
            if not handed_over:
                run.finish()
                self._forget(run)

    def _settle(self, job: StreamJob, run: StreamRun, ended: object) -> object:
        """After a relay `ended` (True: the leader finished; None: its stream ended without an
        answer; False: the relay failed; UNREACHABLE: Redis went away): _AGAIN to follow the
        key's next stream, a _Lead to stream it ourselves, or _SETTLED (the run's result set)."""
        key, request, origin = run.key, job.request, job.origin
        if ended == UNREACHABLE:
            if not run.events:  # our callers have nothing yet: stream it ourselves
                return _Lead(None)
            if not self._finish_alone(job, run):
                run.append(_lost("Lost the identical stream in another process (Redis unavailable)", origin))
                run.result.set_exception(ServiceUnavailableError("The identical stream was lost"))
            return _SETTLED
        l2 = self._core.l2
        # Right after Redis answered the relay: read even while a failed read pauses it.
        cached = l2.get(key, even_paused=True) if l2 is not None and ended is not False else None
        if ended is None and cached is None:  # between two streams: try to lead the next
            try:
                lease = self._shared.claim(key)
            except redis.RedisError:
                lease = None
            return _Lead(lease) if lease is not None else _AGAIN
        if ended is None and cached is not None:
            run.append(replay(cached, request.mode))
        elif ended is True and not (run.events and run.events[-1].endswith(DONE)):
            # The leader finished, but stopped publishing on the way (Redis failed it).
            remainder = rest(run.events, cached, request.mode) if cached is not None else None
            if remainder is None and not run.events:  # our callers have nothing yet: stream it ourselves
                return _Lead(None)
            if remainder is None:
                run.append(_lost("Lost part of the identical stream in another process", origin))
                cached = None
            else:
                run.append(remainder)
        if cached is not None:
            self._core.store_l1(key, cached)
            run.result.set(cached)
        else:
            run.result.set_exception(ServiceUnavailableError("The identical stream failed"))
        return _SETTLED

    def _finish_alone(self, job: StreamJob, run: StreamRun) -> bool:
        """Redis went away mid-relay, our callers holding part of the text: make the answer here
        (one upstream stream, kept in L1) and finish their stream with the rest when it continues
        what they have, as a cached or deterministic answer does. False when it cannot: they then
        get an error event, never a text with a hole."""
        request, upstream = job.request, self._core.upstream
        pieces: list[str] = []
        result: ProviderResult | None = None
        try:  # the same streamed request the leader made: a deterministic model answers alike
            for item in upstream.stream(request, deadline=time.monotonic() + request.timeout):
                if isinstance(item, ProviderResult):
                    result = item
                else:
                    pieces.append(item)
            payload = job.parse("".join(pieces))
        except APIError:
            return False
        assert result is not None  # providers end every stream with their result
        value = answer_value(payload, upstream.provider.name, result, request.ttl)
        if job.store:
            self._core.store_l1(run.key, value, new=True)
        remainder = rest(run.events, value, request.mode)
        if remainder is None:
            return False
        run.append(remainder)
        run.result.set(value)
        return True
