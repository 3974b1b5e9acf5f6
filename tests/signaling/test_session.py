"""Join, leave and event fan-out through a real node."""

from __future__ import annotations

import aiohttp

from tests.conftest import NodeHarness, token


async def test_join_reply_carries_participant_room_and_grants(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    bob = await node.connect()
    reply = await bob.join(token("r1", "bob"))
    assert reply["room"] == "r1"
    assert reply["version"] == 1
    assert reply["participant"]["identity"] == "bob"
    assert [p["identity"] for p in reply["participants"]] == ["alice"]
    assert reply["grants"]["can_publish"] is True
    assert reply["ice_servers"] == []
    event = await alice.expect("participant-joined")
    assert event["participant"]["identity"] == "bob"


async def test_events_do_not_cross_rooms(node: NodeHarness) -> None:
    a1 = await node.joined("r1", "a")
    b2 = await node.joined("r2", "b")
    await node.joined("r1", "c")
    assert (await a1.expect("participant-joined"))["participant"]["identity"] == "c"
    await b2.send(type="ping")
    assert (await b2.recv())["type"] == "pong"  # nothing from r1 arrived before the pong


async def test_leave_tells_the_room_and_closes(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    bob = await node.joined("r1", "bob")
    await alice.expect("participant-joined")
    leave_id = await bob.send(type="leave")
    assert (await bob.expect("left"))["id"] == leave_id  # the reply to this leave
    close = await bob.closed()
    assert (close.type, close.data, close.extra) == (aiohttp.WSMsgType.CLOSE, 1000, "left")
    left = await alice.expect("participant-left")
    assert left["identity"] == "bob" and left["reason"] == "client_left"


async def test_server_messages_carry_increasing_seq(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    seqs = []
    for _ in range(3):
        await alice.send(type="ping")
        seqs.append((await alice.expect("pong"))["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
