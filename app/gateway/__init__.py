"""The gateway: the one path from a request to a model answer, with cache, coalescing,
circuit breaker and retries around the provider."""

from __future__ import annotations

import logging
import os
import sqlite3

import redis

from app.cache import DiskCache, MemoryCache, RedisCache, RedisHealth
from app.cache.clients import RedisClients
from app.cache.popularity import Popularity
from app.coalescing import SharedStreams
from app.coordination.redis_reservations import RedisReservations
from app.coordination.reservation import (
    MemoryReservations,
    Reservations,
    SqliteReservations,
    StoreUnavailable,
)
from app.gateway.breaker import Breaker
from app.gateway.budget import Budget
from app.gateway.core import Core
from app.gateway.gateway import Completion, Gateway, NotCached, Stream
from app.gateway.observer import NullObserver, Observer
from app.gateway.slots import LOCAL_SCHEMA
from app.gateway.streams import InFlight
from app.gateway.tracer import Tracer
from app.gateway.upstream import UpstreamCaller
from app.localdb import LocalDB
from app.providers import LLMRequest, Provider
from app.providers.factory import make_provider
from app.security.spend import Spend
from config.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["Completion", "Core", "Gateway", "LLMRequest", "NotCached", "Stream", "build_gateway"]


def _machine_db(settings: Settings) -> tuple[LocalDB | None, str | None]:
    """The machine's coordination file (upstream slots, pause, key budgets) in CACHE_DIR: (the
    file, None), or (None, why it could not be opened), or (None, None) with no CACHE_DIR."""
    if not settings.cache_dir:
        return None, None
    path = os.path.join(settings.cache_dir, "upstream.sqlite3")
    try:
        return LocalDB(path, LOCAL_SCHEMA, busy_timeout=1.0), None
    except (OSError, sqlite3.Error) as exc:
        why = f"{path}: {type(exc).__name__}: {exc}"
        log.error("the machine's upstream budget file cannot be opened (%s): capped and budgeted calls refused", why)
        return None, why


def _spend(
    settings: Settings, client: redis.Redis | None, local: LocalDB | None, broken: str | None, observer: Observer
) -> Spend:
    """Per-key budgets, counted where the slots are: the fleet's, the machine's or the worker's."""
    store: Reservations | None
    if client is not None:
        store, scope = RedisReservations(client), "fleet"
    elif broken is not None:
        store, scope = None, "machine"
    elif local is not None:
        try:
            store, scope = SqliteReservations(local), "machine"
        except StoreUnavailable as exc:
            log.error("key budgets cannot be kept in %s (%s): budgeted calls refused", local.path, exc)
            store, scope, broken = None, "machine", str(exc)
    else:
        store, scope = MemoryReservations(), "worker"
    return Spend(settings.keys, store, settings.redis_prefix, observer.key_budget, scope, broken or "")


def build_gateway(
    settings: Settings,
    observer: Observer | None = None,
    tracer: Tracer | None = None,
    provider: Provider | None = None,
    redis_health: RedisHealth | None = None,
    clients: RedisClients | None = None,
) -> Gateway:
    """Assemble the gateway the settings describe (call after gevent patching), on the
    process's Redis `clients` (made here when not given)."""
    observer = observer or NullObserver()
    if settings.redis_url and clients is None:
        health = redis_health or RedisHealth.for_timeout(settings.redis_socket_timeout)
        clients = RedisClients(settings.redis_url, health, settings.redis_socket_timeout, settings.redis_connections)
    if clients is not None:
        clients.health.on_failure = observer.redis_error
    l2, shared_streams = _shared_tier(settings, clients, observer)
    inflight = (
        InFlight(on_wait=lambda delta: observer.waiting("worker", delta)) if settings.coalescing_enabled else None
    )
    core = Core(
        _upstream(settings, provider or make_provider(settings), clients, observer, tracer),
        l1=(
            MemoryCache(settings.cache_max_bytes, settings.cache_max_entries, settings.stale_if_error_seconds)
            if settings.cache_enabled
            else None
        ),
        l2=l2,
        inflight=inflight,
        shared_streams=shared_streams,
        observer=observer,
        tracer=tracer,
        popularity=(
            Popularity(
                clients.service, settings.redis_prefix, clients.health, cap=max(1000, 10 * settings.cache_warm_entries)
            )
            if isinstance(l2, RedisCache) and clients is not None and settings.cache_warm_entries > 0
            else None
        ),
    )
    return Gateway(core)


def _shared_tier(
    settings: Settings, clients: RedisClients | None, observer: Observer
) -> tuple[RedisCache | DiskCache | None, SharedStreams | None]:
    """L2 and coalescing across processes: Redis (a fleet), else the disk (one machine: every
    worker of the instance shares it, and it outlives them), else none."""
    if not settings.cache_enabled:
        return None, None
    if clients is not None:
        l2 = RedisCache(clients.service, settings.redis_prefix, settings.stale_if_error_seconds, clients.health)
        if not settings.coalescing_enabled:
            return l2, None
        shared = SharedStreams(
            clients.service,
            clients.reader,
            settings.redis_prefix,
            settings.redis_lease_seconds,
            clients.health,
            on_wait=lambda delta: observer.waiting("cluster", delta),
        )
        return l2, shared
    if settings.cache_dir and settings.cache_disk_max_bytes:
        disk = DiskCache(
            settings.cache_dir,
            settings.cache_disk_max_bytes,
            settings.stale_if_error_seconds,
            on_failure=observer.disk_error,
            on_size=observer.disk_size,
        )
        return disk, None
    return None, None


def _upstream(
    settings: Settings, provider: Provider, clients: RedisClients | None, observer: Observer, tracer: Tracer | None
) -> UpstreamCaller:
    """The provider behind its breaker, retries, upstream budget and key budgets. The fleet's
    slots, pause and budgets with Redis; else the machine's, in CACHE_DIR; else this worker's. A
    store that cannot count refuses the calls it would have counted."""
    breaker = Breaker(provider.name, settings.breaker_fail_max, settings.breaker_reset_timeout, observer.breaker_state)
    observer.breaker_state(breaker.name, 0)  # a closed breaker is a value, not "no data"
    observer.breaker_failures(breaker.name, 0)
    client = clients.service if clients is not None else None
    local, broken = _machine_db(settings) if client is None else (None, None)
    budget = Budget.build(
        settings.upstream_max_concurrency, client, settings.redis_prefix, observer.upstream_budget, local, broken
    )
    return UpstreamCaller(
        provider,
        breaker,
        observer,
        settings.upstream_max_retries,
        tracer=tracer,
        budget=budget,
        spend=_spend(settings, client, local, broken, observer),
        prices=settings.llm_prices,
    )
