"""Node records: registered under a key with a TTL, refreshed, gone when the node is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from redis.asyncio import Redis

from conference.cluster.client import RedisClient
from conference.cluster.config import ClusterConfig, RedisConfig
from conference.cluster.nodes import NodeLoad, NodeRegistry, NodeState
from conference.ids import NodeId
from tests.cluster.conftest import FAST, cluster_config
from tests.cluster.redisproc import RedisServer
from tests.conftest import StartNode


async def eventually(check: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_node_registers_its_state_and_load_under_a_key_with_a_ttl(
        start_node: StartNode, redis_server: RedisServer, redis: Redis) -> None:
    h = await start_node(cluster_config(redis_server))
    await eventually(lambda: h.node.cluster_reachable)
    await h.joined("r1", "alice")
    key = f"parley:node:{h.node.id}"
    await asyncio.sleep(FAST.heartbeat_interval * 2)
    ttl = await redis.pttl(key)
    assert 0 < ttl <= FAST.node_ttl * 1000
    record = json.loads(await redis.get(key))
    assert record["id"] == h.node.id and record["state"] == "serving"
    assert record["load"]["rooms"] == 1 and record["load"]["participants"] == 1
    assert set(record["load"]) == {"rooms", "participants", "tracks", "packets_per_second",
                                   "cpu"}
    assert await redis.type(key) == "string"  # never a hash without a TTL


async def test_a_node_that_stops_heartbeating_disappears_by_itself(
        redis_server: RedisServer, redis: Redis) -> None:
    client = RedisClient(RedisConfig(url=redis_server.url))
    nodes = NodeRegistry(client, ClusterConfig(node_ttl=0.6, heartbeat_interval=0.2),
                         NodeId("ND_dead"), NodeLoad)
    nodes.start()
    try:
        await eventually(lambda: nodes.healthy)
        assert await redis.exists("parley:node:ND_dead")
        assert nodes._task is not None
        nodes._task.cancel()  # the process hangs or dies: no goodbye
        await asyncio.sleep(0.9)
        assert not await redis.exists("parley:node:ND_dead")
    finally:
        await nodes.close()
        await client.close()


async def test_a_draining_node_says_so_and_is_not_ready(
        start_node: StartNode, redis_server: RedisServer, redis: Redis) -> None:
    h = await start_node(cluster_config(redis_server))
    await eventually(lambda: h.node.cluster_reachable)
    assert (await h.http.get(h.url("/readyz"))).status == 200
    drain = asyncio.create_task(h.node.drain(0.5))
    await asyncio.sleep(0.3)
    record = json.loads(await redis.get(f"parley:node:{h.node.id}"))
    assert record["state"] == NodeState.DRAINING.value
    response = await h.http.get(h.url("/readyz"))
    assert response.status == 503
    body = await response.json()
    assert body["node"] == h.node.id and body["draining"] is True
    await drain


async def test_a_closed_node_removes_its_record(
        start_node: StartNode, redis_server: RedisServer, redis: Redis) -> None:
    h = await start_node(cluster_config(redis_server))
    await eventually(lambda: h.node.cluster_reachable)
    key = f"parley:node:{h.node.id}"
    assert await redis.exists(key)
    await h.server.close()
    assert not await redis.exists(key)
