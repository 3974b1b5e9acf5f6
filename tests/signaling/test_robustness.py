"""The edge refuses bad input with documented codes and keeps serving everyone else."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from tests.conftest import Client, NodeHarness, RoomConfig, SignalingConfig, StartNode, token
from tests.media_helpers import LOOPBACK_SFU

MEDIA = {"offer", "answer", "candidate", "active-speakers", "connection-failed"}
"""Media negotiation the node may start after a join; not what these tests look at."""


async def recv(client: Client) -> dict[str, Any]:
    """The next message that is not media negotiation."""
    while True:
        msg = await client.recv()
        if msg["type"] not in MEDIA:
            return msg


async def error(client: Client, code: str) -> dict[str, Any]:
    msg = await client.expect("error")
    assert msg["code"] == code, msg
    return msg


async def closed_with(client: Client, code: int) -> None:
    msg = await client.closed()
    assert msg.type == aiohttp.WSMsgType.CLOSE, msg
    assert msg.data == code


async def still_serves(client: Client) -> None:
    """The next message on ``client`` after a ping is its pong."""
    msg_id = await client.send(type="ping")
    reply = await recv(client)
    assert reply["type"] == "pong" and reply["id"] == msg_id, reply


# -- size, encoding, schema -------------------------------------------------
async def test_oversized_message_gets_message_too_large_and_close_1009(node: NodeHarness) -> None:
    other = await node.joined("r2", "other")
    alice = await node.joined("r1", "alice")
    await alice.ws.send_json({"type": "ping", "pad": "x" * (64 * 1024 + 10)})
    await error(alice, "message_too_large")
    await closed_with(alice, 1009)
    await still_serves(other)
    await node.joined("r1", "bob")


async def test_message_over_twice_the_limit_is_closed_1009(node: NodeHarness) -> None:
    other = await node.joined("r2", "other")
    alice = await node.joined("r1", "alice")
    await alice.ws.send_json({"type": "ping", "pad": "x" * (2 * 64 * 1024 + 10)})
    await closed_with(alice, 1009)
    await still_serves(other)
    await node.joined("r1", "bob")


async def test_malformed_json_is_refused_and_connection_stays_usable(node: NodeHarness) -> None:
    client = await node.connect()
    await client.ws.send_str("{not json")
    await error(client, "malformed_json")
    await still_serves(client)


@pytest.mark.parametrize(
    ("raw", "echoed"),
    [
        ('{"id": "7"}', "7"),
        ('{"type": 3, "id": "8"}', "8"),
        ('{"type": "join", "id": "9", "token": 5}', "9"),
        ('{"type": "join", "id": 10, "version": "1"}', "10"),
        ('{"type": "mute-track", "id": "11", "track": "TR_x", "muted": "yes"}', "11"),
        ('{"type": "offer", "id": "12", "tracks": []}', "12"),
        ('{"type": "remove-track", "id": "13"}', "13"),
    ],
)
async def test_invalid_message_echoes_the_client_id(
    node: NodeHarness, raw: str, echoed: str
) -> None:
    client = await node.connect()
    await client.ws.send_str(raw)
    assert (await error(client, "invalid_message"))["id"] == echoed
    await still_serves(client)


@pytest.mark.parametrize("raw", ["[1, 2]", '"ping"', "42", "null", '{"type": "ping", "id": true}'])
async def test_non_object_json_or_bad_id_is_an_invalid_message(
    node: NodeHarness, raw: str
) -> None:
    client = await node.connect()
    await client.ws.send_str(raw)
    assert "id" not in await error(client, "invalid_message")
    await still_serves(client)


async def test_unknown_type_echoes_the_id(node: NodeHarness) -> None:
    client = await node.connect()
    await client.send(type="offer-something", id="u1")
    assert (await error(client, "unknown_type"))["id"] == "u1"
    await still_serves(client)


async def test_binary_frame_is_refused(node: NodeHarness) -> None:
    client = await node.joined("r1", "alice")
    await client.ws.send_bytes(b'{"type": "ping"}')
    await error(client, "binary_not_supported")
    await still_serves(client)


# -- join state ---------------------------------------------------------------
async def test_messages_before_join_get_not_joined(node: NodeHarness) -> None:
    client = await node.connect()
    for msg in ({"type": "offer", "sdp": "v=0"}, {"type": "update", "name": "x"},
                {"type": "remove-track", "track": "TR_x"}, {"type": "data", "payload": 1},
                {"type": "leave"}):
        msg_id = await client.send(**msg)
        assert (await error(client, "not_joined"))["id"] == msg_id
    await client.join(token("r1", "alice"))


async def test_second_join_is_already_joined(node: NodeHarness) -> None:
    alice = await node.joined("r1", "alice")
    msg_id = await alice.send(type="join", token=token("r1", "alice"))
    assert (await error(alice, "already_joined"))["id"] == msg_id
    assert len(node.node.rooms.get("r1") or ()) == 1
    await still_serves(alice)


async def test_unsupported_protocol_version_is_refused(node: NodeHarness) -> None:
    client = await node.connect()
    msg_id = await client.send(type="join", token=token("r1", "alice"), version=99)
    msg = await error(client, "unsupported_version")
    assert msg["id"] == msg_id
    assert node.node.rooms.get("r1") is None
    assert (await client.join(token("r1", "alice"), version=1))["version"] == 1


async def test_socket_that_never_joins_is_closed_4002(start_node: StartNode) -> None:
    h = await start_node(signaling=SignalingConfig(join_timeout=0.3))
    idle = await h.connect()
    joined = await h.joined("r1", "alice")
    await error(idle, "join_timeout")
    await closed_with(idle, 4002)
    await still_serves(joined)


async def test_duplicate_identity_replaces_the_older_session(node: NodeHarness) -> None:
    old = await node.joined("r1", "alice")
    old_id = node.node.rooms.get("r1").by_identity("alice").id
    bob = await node.joined("r1", "bob")
    await old.expect("participant-joined")
    new = await node.connect()
    reply = await new.join(token("r1", "alice"))
    assert [p["identity"] for p in reply["participants"]] == ["bob"]
    msg = await old.expect("disconnect")
    assert msg["reason"] == "duplicate_identity"
    await closed_with(old, 4005)
    left = await recv(bob)
    assert left["type"] == "participant-left", left
    assert (left["identity"], left["participant"], left["reason"]) == (
        "alice", old_id, "duplicate_identity")
    joined = await recv(bob)
    assert joined["type"] == "participant-joined"
    assert joined["participant"]["id"] == reply["participant"]["id"] != old_id
    await still_serves(new)


# -- rate limit and floods ----------------------------------------------------
LIMITED = SignalingConfig(rate_limit_per_second=5, rate_limit_burst=5, rate_limit_strikes=3,
                          rate_limit_window=5)


async def test_flood_is_rate_limited_then_closed_4003(start_node: StartNode) -> None:
    h = await start_node(signaling=LIMITED)
    peer = await h.joined("r1", "peer")
    other = await h.joined("r2", "other")
    flooder = await h.joined("r1", "flooder")
    await peer.expect("participant-joined")
    for _ in range(20):
        await flooder.send(type="ping")
    seen: list[str] = []
    while True:
        msg = await flooder.ws.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        seen.append(msg.json().get("code") or msg.json()["type"])
    seen = [m for m in seen if m not in MEDIA]
    assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4003
    assert seen.count("rate_limited") == 4  # three strikes allowed, the fourth closes
    assert seen.count("pong") >= 4
    left = await peer.expect("participant-left")
    assert (left["identity"], left["reason"]) == ("flooder", "protocol_violation")
    await still_serves(other)
    newcomer = await h.joined("r2", "newcomer")
    assert (await recv(other))["participant"]["identity"] == "newcomer"
    await still_serves(newcomer)


async def test_garbage_flood_does_not_affect_another_room(node: NodeHarness) -> None:
    watcher = await node.joined("r2", "watcher")
    flooder = await node.joined("r1", "flooder")
    for i in range(300):
        await flooder.ws.send_str("\x00garbage" * (i % 7 + 1))
    newcomer = await node.joined("r2", "newcomer")
    joined = await recv(watcher)
    assert (joined["type"], joined["participant"]["identity"]) == (
        "participant-joined", "newcomer")
    await still_serves(watcher)
    await still_serves(newcomer)
    await closed_with(flooder, 4003)


# -- Origin -------------------------------------------------------------------
async def handshake_status(h: NodeHarness, origin: str, **kw: Any) -> int:
    """The HTTP status of a refused WebSocket handshake (101 if it was accepted)."""
    try:
        client = await h.connect(origin=origin, **kw)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await client.join(token("r1", "alice"))
    await client.ws.close()
    return 101


async def test_foreign_origin_is_refused_403(node: NodeHarness) -> None:
    assert await handshake_status(node, "https://evil.example") == 403
    assert await handshake_status(node, "https://localhost.evil.example") == 403


@pytest.mark.parametrize("origin", ["http://localhost:1234", "http://127.0.0.1:9"])
async def test_localhost_origin_is_allowed(node: NodeHarness, origin: str) -> None:
    assert await handshake_status(node, origin) == 101


async def test_same_origin_is_allowed(node: NodeHarness) -> None:
    headers = {"Host": "meet.example:8443"}
    assert await handshake_status(node, "https://meet.example:8443", headers=headers) == 101
    assert await handshake_status(node, "https://other.example:8443", headers=headers) == 403


async def test_configured_origin_is_allowed(start_node: StartNode) -> None:
    h = await start_node(signaling=SignalingConfig(allowed_origins=("https://app.example",)))
    assert await handshake_status(h, "https://app.example") == 101
    assert await handshake_status(h, "https://evil.example") == 403


# -- tracks (published through a media offer), data, update -------------------
async def pair(node: NodeHarness, **bob_kw: object) -> tuple[Client, Client]:
    alice = await node.joined("r1", "alice")
    bob = await node.joined("r1", "bob", **bob_kw)
    await alice.expect("participant-joined")
    return alice, bob


async def media_node(start_node: StartNode, **sections: Any) -> NodeHarness:
    return await start_node(sfu=LOOPBACK_SFU, **sections)


async def media_client(h: NodeHarness, identity: str, **mint: Any) -> Client:
    client = await h.connect()
    await client.join(token("r1", identity, **mint), media=True)
    return client


async def offer(client: Client, *kinds: str, tracks: list[dict[str, str]] | None = None) -> str:
    """Send a real aiortc publish offer with one sending section per kind; the message id."""
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction="sendonly")
        sdp = (await pc.createOffer()).sdp
    finally:
        await pc.close()
    return await client.send(type="offer", sdp=sdp, tracks=tracks or [])


async def test_track_lifecycle_is_announced_to_others(start_node: StartNode) -> None:
    h = await media_node(start_node)
    alice, bob = await media_client(h, "alice"), await h.joined("r1", "bob")
    msg_id = await offer(alice, "audio", "video", tracks=[
        {"mid": "0", "source": "microphone", "name": "mic"}, {"mid": "1", "source": "screen"}])
    answer = await alice.expect("answer")
    assert (answer["id"], answer["target"]) == (msg_id, "publisher")
    mic, screen = answer["tracks"]
    assert (mic["kind"], mic["source"], mic["name"], mic["muted"], mic["mid"]) == (
        "audio", "microphone", "mic", False, "0")
    assert (screen["kind"], screen["source"]) == ("video", "screen")
    for track in (mic, screen):
        published = await bob.expect("track-published")
        assert published["track"]["id"] == track["id"]
        assert published["track"]["participant"] == track["participant"]

    await alice.send(type="mute-track", track=mic["id"], muted=True)
    assert (await alice.expect("track-updated"))["track"]["muted"] is True
    updated = await bob.expect("track-updated")
    assert (updated["track"]["id"], updated["track"]["muted"]) == (mic["id"], True)

    await alice.send(type="remove-track", track=mic["id"])
    assert (await alice.expect("track-removed"))["track"]["id"] == mic["id"]
    assert (await bob.expect("track-unpublished"))["track"]["id"] == mic["id"]
    msg_id = await alice.send(type="remove-track", track=mic["id"])
    assert (await error(alice, "unknown_track"))["id"] == msg_id


async def test_bad_offers_are_refused(start_node: StartNode) -> None:
    h = await media_node(start_node)
    alice = await media_client(h, "alice")
    msg_id = await offer(alice, "audio", tracks=[{"source": "microphone"}])  # no mid
    assert (await error(alice, "invalid_message"))["id"] == msg_id
    msg_id = await alice.send(type="offer", sdp="v=0\r\nnot an offer\r\n")
    assert (await error(alice, "invalid_sdp"))["id"] == msg_id
    plain = await h.joined("r1", "plain")  # joined without media
    msg_id = await offer(plain, "audio")
    assert (await error(plain, "not_in_room"))["id"] == msg_id
    await alice.send(type="ping", id="p")
    assert (await alice.expect("pong"))["id"] == "p"


async def test_too_many_tracks_is_refused(start_node: StartNode) -> None:
    h = await media_node(start_node, rooms=RoomConfig(max_tracks_per_participant=2))
    alice, bob = await media_client(h, "alice"), await h.joined("r1", "bob")
    msg_id = await offer(alice, "audio", "video", "video")
    assert (await error(alice, "too_many_tracks"))["id"] == msg_id
    await offer(alice, "audio", "video")
    assert len((await alice.expect("answer"))["tracks"]) == 2
    published = [await bob.expect("track-published") for _ in range(2)]
    assert sorted(m["track"]["kind"] for m in published) == ["audio", "video"]


async def test_listener_cannot_publish(start_node: StartNode) -> None:
    h = await media_node(start_node)
    alice = await h.joined("r1", "alice")
    listener = await media_client(h, "listener", role="listener")
    msg_id = await offer(listener, "audio")
    assert (await error(listener, "permission_denied"))["id"] == msg_id
    await alice.send(type="ping", id="p")
    before_pong = []
    while (msg := await recv(alice))["type"] != "pong":
        before_pong.append(msg["type"])
    assert "track-published" not in before_pong


async def test_data_is_relayed_to_the_room(node: NodeHarness) -> None:
    alice, bob = await pair(node)
    carol = await node.joined("r1", "carol")
    await bob.expect("participant-joined")
    msg_id = await alice.send(type="data", payload={"text": "hi"}, topic="chat")
    sent = await alice.expect("data-sent")
    assert (sent["id"], sent["delivered"]) == (msg_id, 2)
    for peer in (bob, carol):
        data = await peer.expect("data")
        assert (data["identity"], data["topic"], data["payload"]) == (
            "alice", "chat", {"text": "hi"})


async def test_data_to_named_identities_reaches_only_them(node: NodeHarness) -> None:
    alice, bob = await pair(node)
    carol = await node.joined("r1", "carol")
    await bob.expect("participant-joined")
    await alice.send(type="data", payload="psst", to=["bob"])
    assert (await alice.expect("data-sent"))["delivered"] == 1
    assert (await bob.expect("data"))["payload"] == "psst"
    await still_serves(carol)  # the pong is the next thing carol gets


async def test_data_without_can_publish_data_is_refused(node: NodeHarness) -> None:
    alice, bob = await pair(node, grants={"can_publish_data": False})
    msg_id = await bob.send(type="data", payload="x")
    assert (await error(bob, "permission_denied"))["id"] == msg_id
    await still_serves(alice)


async def test_update_is_announced_to_others(node: NodeHarness) -> None:
    alice, bob = await pair(node)
    await alice.send(type="update", name="Alice B.", metadata='{"hand": true}')
    reply = await alice.expect("updated")
    assert reply["participant"]["name"] == "Alice B."
    event = await bob.expect("participant-updated")
    assert (event["participant"]["identity"], event["participant"]["name"],
            event["participant"]["metadata"]) == ("alice", "Alice B.", '{"hand": true}')

