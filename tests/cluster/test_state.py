"""Room state outlives the room: options, stage places, removal bars and pending requests
come back when the room is created again, on the same node or another."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from conference.cluster.state import InMemoryRoomStateStore, PendingRequest, RoomState
from conference.config import RoomOptions, StagePolicy
from conference.ids import Identity, RoomName
from signaling.config import SignalingConfig
from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually
from tests.conftest import NodeHarness, RoomConfig, StartNode, make_config, token

TROLL = token("r1", "troll", role="speaker")
"""One token: a removal bars the token (by its id), not the identity."""


async def _decide_on_node_a(a: NodeHarness) -> None:
    """A moderator's decisions in room r1 on node a: options, a speaker, a bar, a request."""
    await a.joined("r1", "mod", role="moderator")
    listener = await a.joined("r1", "lena", role="listener")
    troll_client = await a.connect()
    await troll_client.join(TROLL)
    await a.joined("r1", "asker", role="listener")
    room = a.node.rooms.get(RoomName("r1"))
    assert room is not None
    room.options = replace(room.options, max_speakers=7, stage_policy=StagePolicy.MODERATED,
                           speaker_request_timeout=120.0, moderator_can_unmute=True)
    lena = room.by_identity(Identity("lena"))
    asker = room.by_identity(Identity("asker"))
    troll = room.by_identity(Identity("troll"))
    assert lena is not None and asker is not None and troll is not None
    room.stage.request(lena.id)
    room.stage.decide(None, lena.id, True)
    assert (await listener.expect("permission-changed"))["grants"]["can_publish"]
    room.stage.request(asker.id, "may I?")
    a.node.rooms.remove(room.name, troll.id, reason="bye", by=None)


async def _check_on_node_b(b: NodeHarness) -> None:
    mod = await b.connect()
    joined = await mod.join(token("r1", "mod", role="moderator"))
    assert joined["room_options"] == {"max_speakers": 7, "stage_policy": "moderated"}
    room = b.node.rooms.get(RoomName("r1"))
    assert room is not None and room.options.moderator_can_unmute
    assert room.options.speaker_request_timeout == 120.0
    lena = await b.connect()
    assert (await lena.join(token("r1", "lena", role="listener")))["grants"]["can_publish"]
    asker = await b.connect()
    await asker.join(token("r1", "asker", role="listener"))
    requested = await mod.expect("speaker-request")
    assert requested["message"] == "may I?"
    troll = await b.connect()
    await troll.send(type="join", token=TROLL)
    assert (await troll.expect("error"))["code"] == "removed_from_room"


async def test_room_state_moves_with_the_room_to_another_node(
        start_node: StartNode, redis_server: RedisServer, redis: Redis) -> None:
    a = await start_node(cluster_config(redis_server))
    await eventually(lambda: a.node.cluster_reachable)
    await _decide_on_node_a(a)  # a is the only node: the room is placed there
    assert await a.node.room_state.flush()  # type: ignore[attr-defined]
    stored = json.loads(await redis.get("parley:state:r1"))
    assert stored["options"]["max_speakers"] == 7 and stored["speakers"] == ["lena"]
    assert 0 < await redis.pttl("parley:state:r1")
    for client in a.clients:
        await client.ws.close()
    await a.server.close()  # the room leaves node a
    b = await start_node(cluster_config(redis_server))
    await eventually(lambda: b.node.cluster_reachable)
    await _check_on_node_b(b)


async def test_a_single_node_keeps_room_state_after_the_empty_room_closed(
        start_node: StartNode) -> None:
    a = await start_node(make_config(rooms=RoomConfig(empty_timeout=0.1),
                                     signaling=SignalingConfig(resume_window=0.1)))
    await _decide_on_node_a(a)
    for client in a.clients:  # dropped sockets: they leave after the resume window
        await client.ws.close()
    await eventually(lambda: a.node.rooms.get(RoomName("r1")) is None)
    await _check_on_node_b(a)


async def test_in_memory_state_expires_and_prunes_what_ran_out() -> None:
    store = InMemoryRoomStateStore(ttl=0.05)
    state = RoomState(options=RoomOptions(max_speakers=2), bars={"old": 1.0, "new": 4e9},
                      requests={Identity("x"): PendingRequest(message="", expires_at=1.0)})
    store.save(RoomName("r"), state.pruned())
    loaded = await store.load(RoomName("r"))
    assert loaded.bars == {"new": 4e9} and loaded.requests == {}
    assert RoomState.decode(loaded.encode()) == loaded
    await asyncio.sleep(0.1)
    assert (await store.load(RoomName("r"))).empty


@pytest.mark.parametrize("options", [None, RoomOptions(stage_policy=StagePolicy.AUTO)])
def test_room_state_round_trips_through_json(options: RoomOptions | None) -> None:
    state = RoomState(options=options, speakers=frozenset({Identity("a"), Identity("b")}),
                      bars={"t": 5e9},
                      requests={Identity("c"): PendingRequest(message="hi", expires_at=6e9)})
    assert RoomState.decode(state.encode()) == state
