"""Room lifetime and limits, through a real node and on the RoomManager itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from conference.config import RoomConfig
from conference.errors import ConferenceCode, ConferenceError
from conference.events import (
    Disconnected,
    LeaveReason,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
)
from conference.ids import Identity, NodeId, RoomName
from conference.manager import JoinRequest, RoomManager
from conference.metrics import ConferenceMetrics
from conference.permissions import Role, expand_grants
from conference.registry import InMemoryRoomRegistry
from tests.conftest import Client, NodeHarness, StartNode, token


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def closed_with(client: Client, code: int) -> None:
    msg = await client.closed()
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == code, msg


async def leave(client: Client) -> None:
    await client.send(type="leave")
    await client.expect("left")  # sent after the node removed the participant


# -- through the node -----------------------------------------------------------
async def test_empty_room_lives_until_the_empty_timeout(start_node: StartNode) -> None:
    h = await start_node(rooms=RoomConfig(empty_timeout=0.2))
    alice = await h.joined("r1", "alice")
    await leave(alice)
    room = h.node.rooms.get(RoomName("r1"))
    assert room is not None and len(room) == 0
    started = asyncio.get_running_loop().time()
    await eventually(lambda: h.node.rooms.get(RoomName("r1")) is None)
    assert asyncio.get_running_loop().time() - started >= 0.15
    assert room.closed


async def test_rejoin_before_the_timeout_keeps_the_room(start_node: StartNode) -> None:
    h = await start_node(rooms=RoomConfig(empty_timeout=0.2))
    alice = await h.joined("r1", "alice")
    room = h.node.rooms.get(RoomName("r1"))
    await leave(alice)
    bob = await h.joined("r1", "bob")
    await asyncio.sleep(0.4)  # twice the empty timeout
    assert h.node.rooms.get(RoomName("r1")) is room
    assert room is not None and not room.closed
    await bob.send(type="ping", id="p")
    assert (await bob.expect("pong"))["id"] == "p"


async def test_third_participant_gets_room_full(start_node: StartNode) -> None:
    h = await start_node(rooms=RoomConfig(max_participants=2))
    first = await h.joined("r1", "a")
    second = await h.joined("r1", "b")
    other = await h.joined("r2", "c")
    third = await h.connect()
    msg_id = await third.send(type="join", token=token("r1", "d"))
    error = await third.expect("error")
    assert (error["code"], error["id"]) == ("room_full", msg_id)
    await closed_with(third, 4009)
    assert len(h.node.rooms.get(RoomName("r1")) or []) == 2
    await h.joined("r2", "e")  # another room is not affected
    joined = await other.expect("participant-joined")
    assert joined["participant"]["identity"] == "e"
    assert len(h.node.rooms.get(RoomName("r2")) or []) == 2
    assert (await first.expect("participant-joined"))["participant"]["identity"] == "b"
    await second.send(type="ping", id="p")  # the refusal left the members connected
    assert (await second.expect("pong"))["id"] == "p"


async def test_closing_a_room_tells_participants_room_closed(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    bob = await node.joined("r1", "bob")
    other = await node.joined("r2", "carol")
    assert node.node.rooms.close_room(RoomName("r1"), "the meeting has ended")
    for client in (alice, bob):
        msg = await client.expect("disconnect")
        assert (msg["reason"], msg["message"]) == ("room_closed", "the meeting has ended")
        await closed_with(client, 4007)
    assert node.node.rooms.get(RoomName("r1")) is None
    assert not node.node.rooms.close_room(RoomName("r1"))
    await other.send(type="ping", id="p")
    assert (await other.expect("pong"))["id"] == "p"


# -- RoomManager and Room on their own --------------------------------------------
class Sink:
    def __init__(self) -> None:
        self.events: list[RoomEvent] = []

    def __call__(self, event: RoomEvent) -> None:
        self.events.append(event)


def manager(**config: Any) -> RoomManager:
    return RoomManager(RoomConfig(**config), InMemoryRoomRegistry(), NodeId("ND_test"),
                       ConferenceMetrics(CollectorRegistry()))


def request(room: str, identity: str, sink: Sink, role: Role = Role.SPEAKER,
            **grants: bool) -> JoinRequest:
    return JoinRequest(room=RoomName(room), identity=Identity(identity), name=identity,
                       metadata="", grants=expand_grants(RoomName(room), role, grants), sink=sink)


async def test_manager_closes_an_empty_room_after_the_timeout() -> None:
    rooms = manager(empty_timeout=0.05)
    sink = Sink()
    room, p = await rooms.join(request("r1", "alice", sink))
    assert rooms.leave(room.name, p.id, LeaveReason.CLIENT_LEFT)
    assert not rooms.leave(room.name, p.id, LeaveReason.CLIENT_LEFT)  # already gone
    assert rooms.get(room.name) is room
    await eventually(lambda: rooms.get(room.name) is None, timeout=1.0)
    assert room.closed and sink.events == []  # nobody was left to tell


async def test_manager_rejoin_cancels_the_empty_timer() -> None:
    rooms = manager(empty_timeout=0.05)
    room, p = await rooms.join(request("r1", "alice", Sink()))
    rooms.leave(room.name, p.id, LeaveReason.CLIENT_LEFT)
    again, _ = await rooms.join(request("r1", "alice", Sink()))
    await asyncio.sleep(0.15)
    assert again is room and rooms.get(room.name) is room


async def test_manager_replaces_a_duplicate_identity() -> None:
    rooms = manager()
    old_sink, bob_sink = Sink(), Sink()
    room, old = await rooms.join(request("r1", "alice", old_sink))
    await rooms.join(request("r1", "bob", bob_sink))
    _, new = await rooms.join(request("r1", "alice", Sink()))
    assert new.id != old.id and len(room) == 2
    (bye,) = old_sink.events[-1:]
    assert isinstance(bye, Disconnected) and bye.reason is LeaveReason.DUPLICATE_IDENTITY
    left, joined = bob_sink.events[-2:]
    assert isinstance(left, ParticipantLeft) and left.participant == old.id
    assert left.reason is LeaveReason.DUPLICATE_IDENTITY
    assert isinstance(joined, ParticipantJoined) and joined.participant.id == new.id


async def test_room_full_counts_hidden_participants() -> None:
    rooms = manager(max_participants=2)
    room, _ = await rooms.join(request("r1", "recorder", Sink(), hidden=True))
    sink = Sink()
    await rooms.join(request("r1", "alice", sink))
    with pytest.raises(ConferenceError) as exc:
        await rooms.join(request("r1", "bob", Sink()))
    assert exc.value.code is ConferenceCode.ROOM_FULL
    assert len(room) == 2 and room.by_identity(Identity("bob")) is None
    other, _ = await rooms.join(request("r2", "bob", Sink()))
    assert other is not room and len(other) == 1


async def test_hidden_participant_is_not_announced() -> None:
    rooms = manager()
    sink = Sink()
    room, _ = await rooms.join(request("r1", "alice", sink))
    _, hidden = await rooms.join(request("r1", "recorder", Sink(), hidden=True))
    rooms.leave(room.name, hidden.id, LeaveReason.CLIENT_LEFT)
    assert sink.events == []


async def test_close_room_tells_everyone_and_forgets_the_room() -> None:
    rooms = manager()
    sinks = [Sink(), Sink()]
    room, _ = await rooms.join(request("r1", "alice", sinks[0]))
    await rooms.join(request("r1", "bob", sinks[1]))
    assert rooms.close_room(room.name, "bye")
    for sink in sinks:
        last = sink.events[-1]
        assert isinstance(last, Disconnected)
        assert (last.reason, last.message) == (LeaveReason.ROOM_CLOSED, "bye")
    assert rooms.get(room.name) is None and room.closed and len(room) == 0
    await rooms.close()
    await rooms.close()  # idempotent


async def test_manager_refuses_joins_while_draining() -> None:
    rooms = manager()
    rooms.draining = True
    with pytest.raises(ConferenceError) as exc:
        await rooms.join(request("r1", "alice", Sink()))
    assert exc.value.code is ConferenceCode.NODE_DRAINING
    assert rooms.rooms == {}
