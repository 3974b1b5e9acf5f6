"""Room placement: exactly one owner per room, dead owners replaced, draining nodes skipped."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from conference.cluster.client import RedisClient
from conference.cluster.config import ClusterConfig, RedisConfig
from conference.cluster.nodes import NodeLoad, NodeRecord, NodeRegistry, NodeState
from conference.cluster.placement import Placement, two_choices
from conference.ids import NodeId, RoomName
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually

CONFIG = ClusterConfig(node_ttl=0.6, heartbeat_interval=0.2)


@asynccontextmanager
async def member(server: RedisServer, name: str, *, participants: int = 0,
                 state: NodeState = NodeState.SERVING) -> AsyncIterator[Placement]:
    """A registered node with its own Redis connection, as another process would have."""
    client = RedisClient(RedisConfig(url=server.url, retry_for=3.0))
    nodes = NodeRegistry(client, CONFIG, NodeId(name),
                         lambda: NodeLoad(participants=participants))
    nodes.set_state(state)
    nodes.start()
    try:
        await eventually(lambda: nodes.healthy)
        yield Placement(client, nodes, CONFIG)
    finally:
        await nodes.close()
        await client.close()


async def test_concurrent_first_joins_through_many_nodes_get_one_owner(
        redis_server: RedisServer) -> None:
    async with member(redis_server, "ND_a") as a, member(redis_server, "ND_b") as b, \
            member(redis_server, "ND_c") as c:
        placements = [a, b, c] * 10
        owners = await asyncio.gather(*(p.claim(RoomName("big"), p._nodes.node)
                                        for p in placements))
        assert len(set(owners)) == 1 and owners[0] in {"ND_a", "ND_b", "ND_c"}
        placed = await asyncio.gather(*(p.place(RoomName("other"), p._nodes.node)
                                        for p in placements))
        assert len(set(placed)) == 1


CLAIMER = """
import asyncio, sys
from conference.cluster.client import RedisClient
from conference.cluster.config import RedisConfig
from conference.cluster.nodes import NodeRegistry, NodeLoad
from conference.cluster.config import ClusterConfig
from conference.cluster.placement import Placement
from conference.ids import NodeId, RoomName

async def main(url, node):
    client = RedisClient(RedisConfig(url=url, retry_for=5.0))
    config = ClusterConfig(node_ttl=5, heartbeat_interval=1)
    nodes = NodeRegistry(client, config, NodeId(node), NodeLoad)
    await nodes.beat()
    print(await Placement(client, nodes, config).claim(RoomName("race"), NodeId(node)))
    await client.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_first_joins_from_separate_processes_get_one_owner(
        redis_server: RedisServer) -> None:
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLAIMER, redis_server.url, f"ND_p{i}",
        stdout=asyncio.subprocess.PIPE) for i in range(6)]
    outputs = [(await p.communicate())[0].decode().strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outputs)) == 1 and outputs[0].startswith("ND_p")


async def test_a_room_whose_owner_expired_goes_to_the_next_claimant(
        redis_server: RedisServer, redis: Redis) -> None:
    async with member(redis_server, "ND_live") as live:
        async with member(redis_server, "ND_gone") as gone:
            assert await gone.claim(RoomName("r"), NodeId("ND_gone")) == "ND_gone"
            assert await live.claim(RoomName("r"), NodeId("ND_live")) == "ND_gone"
            assert gone._nodes._task is not None
            gone._nodes._task.cancel()  # dies without a goodbye
            await asyncio.sleep(CONFIG.node_ttl + 0.3)
            assert not await redis.exists("parley:node:ND_gone")
            assert await live.claim(RoomName("r"), NodeId("ND_live")) == "ND_live"
            assert await redis.get("parley:room:r") == "ND_live"
            assert await live.rooms() == {"r": "ND_live"}


async def test_a_draining_node_is_never_chosen_for_a_new_room(
        redis_server: RedisServer) -> None:
    async with member(redis_server, "ND_serving", participants=50) as serving, \
            member(redis_server, "ND_drain1", state=NodeState.DRAINING), \
            member(redis_server, "ND_drain2", state=NodeState.DRAINING):
        owners = {await serving.place(RoomName(f"room-{i}"), NodeId("ND_drain1"))
                  for i in range(20)}
        assert owners == {"ND_serving"}


async def test_new_rooms_go_to_the_less_loaded_of_two_nodes(redis_server: RedisServer) -> None:
    async with member(redis_server, "ND_busy", participants=80) as busy, \
            member(redis_server, "ND_idle", participants=3):
        owners = [await busy.place(RoomName(f"room-{i}"), NodeId("ND_busy")) for i in range(10)]
        assert set(owners) == {"ND_idle"}
        assert await busy.place(RoomName("room-0"), NodeId("ND_busy")) == "ND_idle"  # kept


def test_two_choices_compares_participants_then_rooms_and_skips_draining() -> None:
    def node(name: str, participants: int, rooms: int,
             state: NodeState = NodeState.SERVING) -> NodeRecord:
        return NodeRecord(id=NodeId(name), state=state, started_at=0, updated_at=0,
                          load=NodeLoad(participants=participants, rooms=rooms))

    rng = random.Random(7)
    assert two_choices([], rng) is None
    assert two_choices([node("d", 0, 0, NodeState.DRAINING)], rng) is None
    pair = [node("a", 5, 9), node("b", 5, 2)]
    assert {two_choices(pair, rng).id for _ in range(20)} == {"b"}  # type: ignore[union-attr]
    many = [node(f"n{i}", 10 + i, 0) for i in range(8)]
    picks = [two_choices(many, rng).id for _ in range(400)]  # type: ignore[union-attr]
    assert "n7" not in picks  # the most loaded never wins a pair
    assert picks.count("n0") > picks.count("n6")
