"""Redis clients for each form of REDIS_URL: one server, Sentinel, or Cluster.

    redis://[:password@]host:port/db          one server (also rediss://, unix://)
    redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[:password@]host:port[,host:port...]

The same forms the rate limiter's storage (`limits`) understands. The service's own client
(cache, locks, streams) pauses after a failure (see PausingRedis); stream reads get
plain clients of the same topology with their own read timeouts.
"""

from __future__ import annotations

import os
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from app.cache.health import Guarded, PausingRedis, RedisHealth

__all__ = ["BLOCK", "PausingRedisCluster", "RedisClients", "RedisTopology"]


class PausingRedisCluster(Guarded, RedisCluster):
    """The service's client of a Redis Cluster (`plain`: a second one, never paused)."""

    health: RedisHealth | None = None  # type: ignore[assignment]  # set once built: the constructor asks the cluster

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self.health is None:
            return RedisCluster.execute_command(self, *args, **kwargs)
        return super().execute_command(*args, **kwargs)


BLOCK = 0.5  # seconds a blocking read (a stream's XREAD, the job queue's BZPOPMIN) waits at most


class RedisClients:
    """The service's Redis in one process: one client (`service`, with its `plain` twin on the
    same connections) for every command, script and pipeline of the cache, coalescing, budgets
    and the job store; and one pool (`reader`) for blocking reads, whose connections wait up to
    BLOCK for news and so read for BLOCK + the call timeout. (The rate limiter's storage,
    from the `limits` library, keeps its own.) Built once per process, after patching."""

    def __init__(self, url: str, health: RedisHealth, timeout: float, max_connections: int = 100) -> None:
        self.topology = RedisTopology(url)
        self.health = health
        self.timeout = timeout
        # Named (CLIENT LIST shows which process holds which connection, and for what). Opened as
        # needed, up to `max_connections` (Settings.redis_connections: what the process may run
        # at once): past it a command fails as if Redis had.
        self.service = self.topology.service_client(
            health,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            client_name=f"prompt-builder:service:{os.getpid()}",
            max_connections=max_connections,
        )
        self.reader = self.topology.client(
            socket_timeout=BLOCK + timeout,
            socket_connect_timeout=timeout,
            client_name=f"prompt-builder:reader:{os.getpid()}",
        )

    @property
    def cluster(self) -> bool:
        return self.topology.kind == "cluster"


class RedisTopology:
    """Where Redis is, parsed once from REDIS_URL; makes every client the service needs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sentinels: list[Sentinel] = []
        parts = urlsplit(url)
        self.kind = {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}.get(parts.scheme, "server")
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        if self.kind != "server":
            default_port = 26379 if self.kind == "sentinel" else 6379
            hosts = parts.netloc.rpartition("@")[2].split(",")
            self.nodes = [_host_port(node, default_port) for node in hosts if node]
            path = [p for p in parts.path.split("/") if p]
            self.service = path[0] if self.kind == "sentinel" and path else None
            self.db = int(path[1]) if self.kind == "sentinel" and len(path) > 1 else 0
            if self.kind == "sentinel" and not self.service:
                raise ValueError("a redis+sentinel:// URL names its service: redis+sentinel://host:26379/mymaster")

    def service_client(self, health: RedisHealth, **options: Any) -> redis.Redis:
        """The client for the cache, locks and streams: pausing, with `plain` beside it. (A
        cluster client answers the same commands; typed as the one-server client.)"""
        if self.kind == "cluster":
            cluster, plain = (cast("PausingRedisCluster", self._cluster(PausingRedisCluster, **options)) for _ in "ab")
            cluster.health = plain.health = health
            plain.even_paused, plain.plain = True, plain
            cluster.plain = plain
            return cast("redis.Redis", cluster)
        if self.kind == "sentinel":
            client = cast("PausingRedis", self._sentinel(options).master_for(self.service, redis_class=PausingRedis))
            return client.guarded_by(health)
        return PausingRedis.connect(self.url, health, **options)

    def client(self, **options: Any) -> redis.Redis:
        """A plain client (stream reads): no pause, the given timeouts."""
        if self.kind == "cluster":
            return cast("redis.Redis", self._cluster(RedisCluster, **options))
        if self.kind == "sentinel":
            return self._sentinel(options).master_for(self.service)
        return redis.Redis.from_url(self.url, **options)

    def _cluster(self, cls: type[RedisCluster], **options: Any) -> RedisCluster:
        options.pop("health_check_interval", None)
        return cls(
            startup_nodes=[ClusterNode(host, port) for host, port in self.nodes],
            username=self.username,
            password=self.password,
            **options,
        )

    def _sentinel(self, options: dict[str, Any]) -> Sentinel:
        auth = {"username": self.username, "password": self.password, "db": self.db}
        timeouts = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
        sentinel = Sentinel(self.nodes, sentinel_kwargs=timeouts, **auth, **options)
        self._sentinels.append(sentinel)
        return sentinel

    def close(self) -> None:
        """Close the connections to the Sentinels (the clients close their own)."""
        for sentinel in self._sentinels:
            for connection in sentinel.sentinels:
                connection.close()


def _host_port(node: str, default_port: int) -> tuple[str, int]:
    host, colon, port = node.rpartition(":")
    if not colon:
        return node, default_port
    return (host or "127.0.0.1"), int(port or default_port)
