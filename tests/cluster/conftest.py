"""Cluster fixtures: a real redis-server per test, nodes pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from conference.cluster.config import ClusterConfig, RedisConfig
from signaling.config import NodeConfig
from tests.cluster.redisproc import RedisServer
from tests.conftest import make_config

FAST = ClusterConfig(node_ttl=1.0, heartbeat_interval=0.2)
"""Short enough that a dead node is gone within a test's second."""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def cluster_config(server: RedisServer, cluster: ClusterConfig = FAST, **kw: object,
                   ) -> NodeConfig:
    ca_file = str(server.tls.ca) if server.tls else ""
    return make_config(redis=RedisConfig(url=server.url, ca_file=ca_file, timeout=0.5,
                                         retry_for=1.0), cluster=cluster, **kw)
