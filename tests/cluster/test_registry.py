"""RedisRoomRegistry behind real nodes: one owner per room, every room listed with it."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from conference.ids import RoomName
from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually
from tests.conftest import StartNode


async def test_rooms_lists_every_room_of_the_cluster_with_its_owner(
        start_node: StartNode, redis_server: RedisServer, redis: Redis) -> None:
    a = await start_node(cluster_config(redis_server))
    b = await start_node(cluster_config(redis_server))
    await eventually(lambda: a.node.cluster_reachable and b.node.cluster_reachable)
    await a.joined("ra", "alice")
    await b.joined("rb", "bob")
    listed = await a.node.registry.rooms()
    assert set(listed) == {RoomName("ra"), RoomName("rb")}
    assert await b.node.registry.rooms() == listed
    for room, owner in listed.items():  # placed on either node; held by the one listed
        holder = a if owner == a.node.id else b
        assert holder.node.rooms.get(room) is not None


async def test_a_join_to_a_room_owned_by_another_node_is_relayed_not_copied(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a = await start_node(cluster_config(redis_server))
    b = await start_node(cluster_config(redis_server))
    await eventually(lambda: a.node.cluster_reachable and b.node.cluster_reachable)
    await a.joined("r1", "alice")
    owner, other = (a, b) if a.node.rooms.get(RoomName("r1")) is not None else (b, a)
    joined = await other.joined("r1", "bob")
    assert joined.ws.closed is False
    assert other.node.rooms.get(RoomName("r1")) is None  # never two copies of a room
    room = owner.node.rooms.get(RoomName("r1"))
    assert room is not None and {p.identity for p in room.participants} == {"alice", "bob"}


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
