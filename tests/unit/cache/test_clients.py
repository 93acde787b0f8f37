"""REDIS_URL forms, parsed once; clients for a real private Redis Cluster and Sentinel."""

from __future__ import annotations

import pytest
import redis

from app.cache import CachedValue, RedisCache, RedisHealth, RedisPaused
from app.cache.clients import RedisTopology
from loadtest._procs import redis_cluster, redis_sentinel
from tests.support import need_binary


def test_the_url_forms() -> None:
    cluster = RedisTopology("redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001")
    assert (cluster.kind, cluster.nodes, cluster.password) == (
        "cluster",
        [("10.0.0.1", 7000), ("10.0.0.2", 7001)],
        "s3cret",
    )
    sentinel = RedisTopology("redis+sentinel://10.0.0.1:26379,10.0.0.2/mymaster/2")
    assert (sentinel.kind, sentinel.nodes, sentinel.service, sentinel.db) == (
        "sentinel",
        [("10.0.0.1", 26379), ("10.0.0.2", 26379)],  # the Sentinel port by default
        "mymaster",
        2,
    )
    assert RedisTopology("redis://127.0.0.1:6379/0").kind == "server"
    with pytest.raises(ValueError, match="names its service"):
        RedisTopology("redis+sentinel://10.0.0.1:26379")


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_the_service_client_pauses_and_its_plain_twin_does_not(kind: str) -> None:
    binary = need_binary("redis-server")
    run = redis_cluster(binary, need_binary("redis-cli")) if kind == "cluster" else redis_sentinel(binary)
    with run as url:
        health = RedisHealth.for_timeout(1.0)
        where = RedisTopology(url)
        client = where.service_client(health, socket_timeout=1.0, socket_connect_timeout=1.0)
        cache = RedisCache(client, "t:", 0, health)
        value = CachedValue(b"answer", 1e12, 1e12 + 60)
        assert cache.set("k", value) and cache.get("k") == value
        health.failed("test", redis.ConnectionError("as if Redis had failed"))
        with pytest.raises(RedisPaused):
            client.get("t:cache:{k}")
        assert client.plain.get("t:cache:{k}") is not None  # locks and readiness still reach Redis
        assert cache.ping()
        client.close()
        client.plain.close()
        where.close()
