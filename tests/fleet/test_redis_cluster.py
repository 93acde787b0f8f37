"""REDIS_URL=redis+cluster://... against a private 3-primary Redis Cluster started here: the
shared L2 cache, cross-process coalescing (JSON and streams) and shared rate limits all work
through it, and every Redis key of one coalesced call lives in one hash slot."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sseclient
from redis.cluster import ClusterNode, RedisCluster

from loadtest._procs import redis_cluster
from tests.support import FakeUpstreamProcess, held_burst, metric_total, need_binary, provider_env, start_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with redis_cluster(need_binary("redis-server"), need_binary("redis-cli")) as url:
        yield url


def _admin(url: str) -> RedisCluster:
    nodes = [ClusterNode(*node.split(":")) for node in url.removeprefix("redis+cluster://").split(",")]
    return RedisCluster(startup_nodes=nodes)


def test_cache_and_coalescing_through_a_cluster(fake_upstream: FakeUpstreamProcess, cluster_url: str) -> None:
    body = {"prompt": "coalesce me through a cluster", "mode": "code"}
    env = {**provider_env("anthropic", fake_upstream), "REDIS_URL": cluster_url, "BREAKER_FAIL_MAX": "1000"}
    with start_server(env, workers=2) as server:

        def send(_: int) -> requests.Response:
            return requests.post(server.url + "/api/optimize", json=body, headers={"Connection": "close"}, timeout=60)

        responses, parked = held_burst(fake_upstream, [server.url], send, 50)
        statuses = {r.status_code for r in responses}
        caches = sorted(r.headers["X-Cache"] for r in responses)
        again = [send(i) for i in range(4)]
        admin = _admin(cluster_url)
        keys = sorted(k.decode() for k in admin.scan_iter("pb:*", target_nodes=RedisCluster.ALL_NODES))
        slots = {admin.cluster_keyslot(k) for k in keys if "{optimize:" in k}
        admin.close()
    print(f"\ncluster: 50 identical requests over 2 workers -> {fake_upstream.calls()} upstream call; keys {keys}")
    assert statuses == {200} and fake_upstream.calls() == parked == 1
    assert caches.count("MISS") == 1 and caches.count("COALESCED") == 49
    assert {r.headers["X-Cache"] for r in again} == {"HIT"}  # from L1 or the cluster's L2
    assert any(k.startswith("pb:cache:{optimize:") for k in keys)
    assert len(slots) == 1  # the answer, and the lock while it was held, in one slot


def test_streams_coalesce_through_a_cluster(fake_upstream: FakeUpstreamProcess, cluster_url: str) -> None:
    fake_upstream.control(stream_chunks=20)
    body = {"prompt": "stream me through a cluster", "mode": "code"}
    env = {**provider_env("anthropic", fake_upstream), "REDIS_URL": cluster_url}
    with start_server(env, workers=2) as server:

        def read(_: int) -> bytes:
            with requests.post(
                server.url + "/api/optimize-stream", json=body, headers={"Connection": "close"}, stream=True, timeout=60
            ) as response:
                return b"".join(response.iter_content(chunk_size=None)).replace(b":\n\n", b"")

        followers = lambda: int(metric_total([server.url], "stream_followers_total"))  # noqa: E731
        results, _ = held_burst(fake_upstream, [server.url], read, 20, waiting=followers)
    assert fake_upstream.stats()["streams"]["started"] == 1
    assert len(set(results)) == 1  # every caller, on either worker, got the same bytes
    events = list(sseclient.SSEClient(iter([results[0]])).events())
    assert [e.event for e in events][-2:] == ["refined", "done"]


def test_rate_limits_shared_through_a_cluster(cluster_url: str) -> None:
    env = {"REDIS_URL": cluster_url, "RATE_LIMIT": "5/minute"}
    with start_server(env, workers=2) as server, ThreadPoolExecutor(4) as pool:
        statuses = list(
            pool.map(
                lambda i: (
                    requests.post(
                        server.url + "/api/optimize", json={"prompt": f"limit {i}", "mode": "code"}, timeout=30
                    ).status_code
                ),
                range(8),
            )
        )
        policy = requests.post(server.url + "/api/optimize", json={"prompt": "x", "mode": "code"}, timeout=30).headers
    assert sorted(statuses) == [200] * 5 + [429] * 3  # one count for both workers
    assert policy["RateLimit-Policy"].endswith('comment="shared by all workers"')
