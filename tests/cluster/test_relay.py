"""Relayed sessions: sockets on one node, the room on another, three nodes, one Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from conference.cluster.config import ClusterConfig
from conference.ids import NodeId, RoomName
from tests.cluster.conftest import cluster_config
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_nodes import eventually
from tests.conftest import Client, NodeHarness, StartNode, token

RELAY_FAST = ClusterConfig(node_ttl=1.0, heartbeat_interval=0.2,
                           relay_heartbeat_interval=0.2, relay_timeout=1.0)


async def start_cluster(start_node: StartNode, server: RedisServer, n: int = 3,
                        **kw: Any) -> list[NodeHarness]:
    nodes = [await start_node(cluster_config(server, RELAY_FAST, **kw)) for _ in range(n)]
    await eventually(lambda: all(h.node.cluster_reachable for h in nodes))
    for h in nodes:
        assert h.node.cluster is not None
        await eventually(h.node.cluster.bus.subscribed.is_set)
    return nodes


async def own(h: NodeHarness, room: str) -> None:
    """Make ``h`` the room's owner before anyone joins (placement would choose at random)."""
    assert await h.node.registry.claim_room(RoomName(room), h.node.id) == h.node.id


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


async def test_sockets_on_three_nodes_in_one_room_exchange_messages(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a, b, c = await start_cluster(start_node, redis_server)
    await own(a, "r1")
    clients = {name: await h.joined("r1", name) for name, h in
               (("alice", a), ("bob", b), ("carol", c))}
    assert b.node.rooms.get(RoomName("r1")) is None and c.node.rooms.get(RoomName("r1")) is None
    room = a.node.rooms.get(RoomName("r1"))
    assert room is not None and len(room) == 3
    for sender, client in clients.items():
        await client.send(type="data", payload={"from": sender}, topic="chat")
    for receiver, client in clients.items():
        got = set()
        while len(got) < 2:
            msg = await client.expect("data")
            got.add(msg["payload"]["from"])
        assert got == set(clients) - {receiver}
    # The edge stamps seq as for a local session: 1, 2, 3… with no gap.
    bob = await b.connect()
    await bob.send(type="join", token=token("r1", "bob2"), media=False)
    seqs = []
    for _ in range(3):
        await bob.send(type="ping")
    while len(seqs) < 4:
        msg = await bob.recv()
        seqs.append(msg["seq"])
    assert seqs == [1, 2, 3, 4]
    metrics = await (await b.http.get(b.url("/metrics"))).text()
    assert 'parley_relay_sessions{side="edge"} 2.0' in metrics
    assert 'parley_relay_messages_total{direction="out"}' in metrics


async def test_a_relayed_client_gets_the_same_errors_and_leave_as_a_local_one(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a, b = await start_cluster(start_node, redis_server, n=2)
    await own(a, "r1")
    local, relayed = await a.joined("r1", "alice"), await b.joined("r1", "bob")
    answers = []
    for client in (local, relayed):
        await client.send(type="set-subscription", id="x", track="TR_nope", enabled=False)
        answers.append(await client.expect("error"))
    assert answers[0]["code"] == answers[1]["code"] and answers[1]["id"] == "x"
    await relayed.send(type="leave", id="bye")
    assert (await relayed.expect("left"))["id"] == "bye"
    closed = await relayed.closed()
    assert closed.data == 1000
    await eventually(lambda: len(a.node.rooms.get(RoomName("r1")) or ()) == 1)
    await eventually(lambda: not b.node.relay.edges and not a.node.relay.owners)  # type: ignore[union-attr]


async def test_a_closed_relayed_socket_leaves_the_room_on_the_owner(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a, b = await start_cluster(start_node, redis_server, n=2)
    await own(a, "r1")
    alice, bob = await a.joined("r1", "alice"), await b.joined("r1", "bob")
    await bob.ws.close()
    # a drop, not a goodbye: bob stays, reconnecting, for signaling.resume_window
    update = await alice.expect("participant-updated")
    assert update["participant"]["identity"] == "bob" and update["participant"]["reconnecting"]


async def test_new_rooms_are_placed_on_the_least_loaded_nodes_not_the_joining_one(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a = (await start_cluster(start_node, redis_server))[0]
    for i in range(9):
        await a.joined(f"room{i}", "alice")
        await asyncio.sleep(0.3)  # a heartbeat: the nodes' loads are up to date
    owners = await a.node.registry.rooms()
    assert len(owners) == 9
    assert len(set(owners.values())) >= 2, owners
    assert sum(1 for o in owners.values() if o == a.node.id) < 9


async def test_the_edge_tells_the_client_to_reconnect_when_the_owner_goes_silent(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a, b = await start_cluster(start_node, redis_server, n=2)
    await own(a, "r1")
    bob = await b.joined("r1", "bob")
    assert a.node.cluster is not None
    await a.node.cluster.bus.close()  # a hears and says nothing more
    msg = await bob.expect("reconnect", timeout=5)
    assert msg["reason"] == "node_lost"
    closed = await bob.closed()
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4010
    metrics = await (await b.http.get(b.url("/metrics"))).text()
    assert 'parley_relay_lost_total{reason="node_lost"} 1.0' in metrics


async def test_a_frame_lost_between_nodes_is_sent_again_and_the_session_goes_on(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a, b = await start_cluster(start_node, redis_server, n=2)
    await own(a, "r1")
    bob = await b.joined("r1", "bob")
    relay = a.node.relay
    assert relay is not None
    publish = relay.send  # type: ignore[attr-defined]
    dropped: list[dict[str, object]] = []

    def lossy(node: NodeId, frame: dict[str, object]) -> None:
        if frame.get("k") == "out" and not dropped:  # the first server message never arrives
            dropped.append(frame)
            return
        publish(node, frame)

    relay.send = lossy  # type: ignore[attr-defined]
    alice = await a.joined("r1", "alice")  # participant-joined for bob is the lost frame
    joined = await bob.expect("participant-joined", timeout=5)
    assert dropped and joined["participant"]["identity"] == "alice"
    await alice.send(type="data", payload="after the loss")
    assert (await bob.expect("data"))["payload"] == "after the loss"


async def test_a_frame_for_a_forgotten_session_is_answered_with_reset(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a, b = await start_cluster(start_node, redis_server, n=2)
    await own(a, "r1")
    bob = await b.joined("r1", "bob")
    assert a.node.relay is not None and b.node.relay is not None
    a.node.relay.owners.clear()  # type: ignore[attr-defined]  # as if a forgot it
    await bob.send(type="update", name="Bob")  # relayed: a answers with reset
    msg = await bob.expect("reconnect")
    assert msg["reason"] == "relay_lost"


@pytest.mark.parametrize("via", ["owner", "other"])
async def test_the_admin_api_works_from_any_node(
        start_node: StartNode, redis_server: RedisServer, via: str) -> None:
    a, b, c = await start_cluster(start_node, redis_server)
    await own(a, "r1")
    await own(b, "r2")
    alice: Client = await b.joined("r1", "alice")
    await c.joined("r1", "bob")
    await a.joined("r2", "carol")
    h = a if via == "owner" else c
    admin = bearer(token("*", "ops", grants={"room_admin": True}))
    async with h.http.get(h.url("/api/rooms"), headers=admin) as resp:
        assert resp.status == 200
        listing = await resp.json()
    assert listing == {"rooms": [
        {"name": "r1", "num_participants": 2, "node": a.node.id},
        {"name": "r2", "num_participants": 1, "node": b.node.id}]}
    async with h.http.get(h.url("/api/rooms/r1"), headers=admin) as resp:
        view = await resp.json()
    assert resp.status == 200 and view["node"] == a.node.id
    assert sorted(p["identity"] for p in view["participants"]) == ["alice", "bob"]
    async with h.http.patch(h.url("/api/rooms/r1/participants/alice"), headers=admin,
                            json={"name": "Alice A."}) as resp:
        assert resp.status == 200 and (await resp.json())["name"] == "Alice A."
    async with h.http.patch(h.url("/api/rooms/r1"), headers=admin,
                            json={"max_speakers": 7}) as resp:
        assert resp.status == 200 and (await resp.json())["options"]["max_speakers"] == 7
    async with h.http.post(h.url("/api/rooms/r1/participants/nobody/approve"),
                           headers=admin) as resp:
        assert resp.status == 404 and (await resp.json())["code"] == "unknown_participant"
    async with h.http.delete(h.url("/api/rooms/r1/participants/alice"), headers=admin,
                             json={"reason": "bye"}) as resp:
        assert resp.status == 200
    removed = await alice.expect("removed")
    assert removed["reason"] == "bye"
    assert (await alice.closed()).data == 4006
    async with h.http.delete(h.url("/api/rooms/r2"), headers=admin) as resp:
        assert resp.status == 200 and await resp.json() == {"closed": "r2"}
    async with h.http.get(h.url("/api/rooms/nowhere"), headers=admin) as resp:
        assert resp.status == 404
