"""RedisRoomRegistry behind real nodes: one owner per room, every room listed with it."""

from __future__ import annotations

import asyncio

import aiohttp
from redis.asyncio import Redis

from conference.ids import RoomName
from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually
from tests.conftest import StartNode, token


async def test_rooms_lists_every_room_of_the_cluster_with_its_owner(
        start_node: StartNode, redis_server: RedisServer, redis: Redis) -> None:
    a = await start_node(cluster_config(redis_server))
    b = await start_node(cluster_config(redis_server))
    await eventually(lambda: a.node.cluster_reachable and b.node.cluster_reachable)
    await a.joined("ra", "alice")
    await b.joined("rb", "bob")
    expected = {RoomName("ra"): a.node.id, RoomName("rb"): b.node.id}
    assert await a.node.registry.rooms() == expected
    assert await b.node.registry.rooms() == expected


async def test_a_room_owned_by_another_node_is_refused_with_a_code(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a = await start_node(cluster_config(redis_server))
    b = await start_node(cluster_config(redis_server))
    await eventually(lambda: a.node.cluster_reachable and b.node.cluster_reachable)
    await a.joined("r1", "alice")
    client = await b.connect()
    await client.send(type="join", token=token("r1", "bob"), media=False)
    error = await client.expect("error")
    assert error["code"] == "room_on_other_node"
    closed = await client.closed()
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4009
    assert b.node.rooms.get(RoomName("r1")) is None  # never two copies of a room


async def test_a_closed_room_is_released(start_node: StartNode, redis_server: RedisServer,
                                         redis: Redis) -> None:
    a = await start_node(cluster_config(redis_server))
    await eventually(lambda: a.node.cluster_reachable)
    await a.joined("r1", "alice")
    assert await redis.get("parley:room:r1") == a.node.id
    assert a.node.rooms.close_room(RoomName("r1"))
    for _ in range(50):
        if not await redis.exists("parley:room:r1"):
            break
        await asyncio.sleep(0.05)
    assert not await redis.exists("parley:room:r1")
    assert await a.node.registry.rooms() == {}
