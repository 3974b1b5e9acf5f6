"""The redis and cluster sections: defaults, environment, checks, URLs with a password,
TLS with a private CA."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conference.cluster.config import ClusterConfig
from signaling.config import ConfigError, load_config
from signaling.node import Node
from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer, make_tls_files
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


def test_a_ca_file_is_read_from_the_environment_and_needs_rediss() -> None:
    config = load_config(env={"PARLEY_REDIS_URL": "rediss://:pw@10.0.0.3:6380/0",
                              "PARLEY_REDIS_CA_FILE": "/etc/parley/redis-ca.pem"})
    assert config.redis.ca_file == "/etc/parley/redis-ca.pem"
    with pytest.raises(ConfigError, match=r"redis\.ca_file"):
        load_config(env={"PARLEY_REDIS_URL": "redis://10.0.0.3:6379/0",
                          "PARLEY_REDIS_CA_FILE": "/etc/parley/redis-ca.pem"})


async def test_a_rediss_url_with_a_password_registers_the_node_over_tls(
        start_node: StartNode, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    server = RedisServer(password="secret", tls=tls)
    server.start()
    try:
        assert server.url == f"rediss://:secret@127.0.0.1:{server.port}/0"
        h = await start_node(cluster_config(server))
        await _until(lambda: h.node.cluster_reachable)
        assert (await h.http.get(h.url("/readyz"))).status == 200
        probe = Redis.from_url(server.url, decode_responses=True, ssl_ca_certs=str(tls.ca))
        try:
            assert await probe.keys("parley:node:*") != []
        finally:
            await probe.aclose()

        await _wrong_password_stays_unready(start_node, server)
    finally:
        server.stop()


async def _wrong_password_stays_unready(start_node: StartNode, server: RedisServer) -> None:
    wrong = RedisServer.__new__(RedisServer)
    wrong.port, wrong.password, wrong.tls = server.port, "wrong", server.tls
    h = await start_node(cluster_config(wrong))
    await asyncio.sleep(0.5)
    assert not h.node.cluster_reachable
    response = await h.http.get(h.url("/readyz"))
    assert response.status == 503
    assert (await response.json())["cluster_reachable"] is False


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(50):
        if condition():
            return
        await asyncio.sleep(0.05)
    assert condition()


async def test_a_password_in_the_url_registers_the_node(start_node: StartNode) -> None:
    server = RedisServer(password="s3cr3t-pass")
    server.start()
    try:
        h = await start_node(cluster_config(server))
        await _until(lambda: h.node.cluster_reachable)
        response = await h.http.get(h.url("/readyz"))
        assert response.status == 200

        await _wrong_password_stays_unready(start_node, server)
    finally:
        server.stop()
