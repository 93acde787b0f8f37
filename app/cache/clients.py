"""Redis clients for each form of REDIS_URL: one server, Sentinel, or Cluster.

    redis://[:password@]host:port/db          one server (also rediss://, unix://)
    redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[:password@]host:port[,host:port...]

The same forms the rate limiter's storage (`limits`) understands. The service's own client
(cache, locks, streams) pauses after a failure (see PausingRedis); stream reads get
plain clients of the same topology with their own read timeouts.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from app.cache.redis import PausingRedis, RedisHealth

__all__ = ["PausingRedisCluster", "RedisTopology"]


class PausingRedisCluster(RedisCluster):
    """PausingRedis for a Redis Cluster: every command through `health.guard`."""

    health: RedisHealth | None = None  # set once built: the constructor itself asks the cluster
    plain: redis.Redis

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self.health is None:
            return super().execute_command(*args, **kwargs)
        return self.health.guard(super().execute_command, *args, **kwargs)


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
            cluster = cast("PausingRedisCluster", self._cluster(PausingRedisCluster, **options))
            cluster.health = health
            cluster.plain = self.client(**options)
            return cast("redis.Redis", cluster)
        if self.kind == "sentinel":
            client = cast("PausingRedis", self._sentinel(options).master_for(self.service, redis_class=PausingRedis))
            client.health = health
            client.plain = redis.Redis(connection_pool=client.connection_pool)
            return client
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
