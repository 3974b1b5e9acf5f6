"""The redis and cluster sections: defaults, environment, checks, URLs with a password."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import SSLConnection

from conference.cluster.client import RedisClient
from conference.cluster.config import ClusterConfig, RedisConfig
from signaling.config import ConfigError, load_config
from signaling.node import Node
from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer
from tests.conftest import StartNode


def test_no_redis_url_is_a_single_node_without_a_cluster() -> None:
    config = load_config(env={})
    assert config.redis.url == "" and not config.redis.enabled
    assert config.cluster == ClusterConfig(drain_timeout=60.0, node_ttl=6.0,
                                           heartbeat_interval=2.0)
    assert Node(config).cluster is None


def test_environment_sets_the_redis_url_and_cluster_timings() -> None:
    config = load_config(env={"PARLEY_REDIS_URL": "redis://10.0.0.3:6379/0",
                              "PARLEY_CLUSTER_NODE_TTL": "9",
                              "PARLEY_CLUSTER_HEARTBEAT_INTERVAL": "3",
                              "PARLEY_CLUSTER_DRAIN_TIMEOUT": "120"})
    assert config.redis.url == "redis://10.0.0.3:6379/0"
    assert (config.cluster.node_ttl, config.cluster.heartbeat_interval,
            config.cluster.drain_timeout) == (9.0, 3.0, 120.0)


@pytest.mark.parametrize(("env", "words"), [
    ({"PARLEY_REDIS_URL": "http://10.0.0.3:6379"}, "redis.url"),
    ({"PARLEY_CLUSTER_NODE_TTL": "3"}, "cluster.node_ttl"),
    ({"PARLEY_CLUSTER_DRAIN_TIMEOUT": "-1"}, "cluster.drain_timeout"),
])
def test_bad_cluster_settings_are_refused_by_name(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_config(env=env)


async def test_a_rediss_url_speaks_tls() -> None:
    client = RedisClient(RedisConfig(url="rediss://:secret@10.0.0.3:6380/1"))
    try:
        pool = client.redis.connection_pool
        assert pool.connection_class is SSLConnection
        assert pool.connection_kwargs["password"] == "secret"
        assert pool.connection_kwargs["db"] == 1
    finally:
        await client.close()


async def test_a_password_in_the_url_registers_the_node(start_node: StartNode) -> None:
    server = RedisServer(password="s3cr3t-pass")
    server.start()
    try:
        h = await start_node(cluster_config(server))
        for _ in range(50):
            if h.node.cluster_reachable:
                break
            await asyncio.sleep(0.05)
        assert h.node.cluster_reachable
        response = await h.http.get(h.url("/readyz"))
        assert response.status == 200

        wrong = RedisServer.__new__(RedisServer)
        wrong.port, wrong.password = server.port, "wrong"
        h2 = await start_node(cluster_config(wrong))
        await asyncio.sleep(0.5)
        assert not h2.node.cluster_reachable
        response = await h2.http.get(h2.url("/readyz"))
        assert response.status == 503
        assert (await response.json())["cluster_reachable"] is False
    finally:
        server.stop()
