"""Roles with real aiortc peers: who may publish, and what the SFU forwards as roles change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import VideoStreamTrack

from client.client import ClientError, ParleyClient
from conference.ids import ParticipantId, RoomName
from conference.media import RoomMedia
from conference.participant import Participant
from conference.room import Room
from tests.conftest import NodeHarness, StartNode, token
from tests.media_helpers import Peer, media_node

ROOM = "room"
Add = Callable[..., Awaitable[Peer]]


@contextlib.asynccontextmanager
async def crowd(node: NodeHarness) -> AsyncIterator[Add]:
    """``await add(identity, role=..., grants=...)`` joins a decoding Peer; all close at exit."""
    made: list[Peer] = []

    async def add(identity: str, **mint: Any) -> Peer:
        peer = Peer(ParleyClient(node.url("/"), token(ROOM, identity, **mint)))
        made.append(peer)
        await peer.client.connect()
        return peer

    try:
        yield add
    finally:
        for peer in made:
            await peer.close()


def room_of(node: NodeHarness) -> Room:
    room = node.node.rooms.get(RoomName(ROOM))
    assert room is not None
    return room


def pid(peer: Peer) -> ParticipantId:
    return ParticipantId(peer.client.participant_id)


def media_of(node: NodeHarness) -> RoomMedia:
    media = room_of(node).media
    assert media is not None
    return media


def participant(node: NodeHarness, peer: Peer) -> Participant:
    p = room_of(node).get(pid(peer))
    assert p is not None
    return p


async def refused(code: str, call: Awaitable[Any]) -> None:
    with pytest.raises(ClientError) as caught:
        await call
    assert caught.value.code == code


async def stopped(viewer: Peer, publisher: Peer, settle: float = 0.5) -> int:
    """The viewer's decoded-frame count for the publisher no longer grows."""
    await asyncio.sleep(settle)
    before = viewer.received.count(pid(publisher))
    await asyncio.sleep(1.0)
    assert viewer.received.count(pid(publisher)) == before
    return before


async def flowing(viewer: Peer, publisher: Peer, more: int = 10) -> None:
    await viewer.wait_frames(pid(publisher), viewer.received.count(pid(publisher)) + more,
                             timeout=5.0)


async def event_about(peer: Peer, mtype: str, participant: str) -> dict[str, Any]:
    while True:
        event = await peer.client.next_event(mtype)
        if event["participant"]["id"] == participant:
            return event


async def test_listener_cannot_publish_and_nothing_reaches_the_sfu(start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with crowd(node) as add:
        vic = await add("vic", role="speaker")
        lee = await add("lee", role="listener", grants={"can_publish_data": False})
        await refused("permission_denied", lee.client.publish(VideoStreamTrack()))
        await refused("permission_denied", lee.client.request({"type": "data", "payload": 1}))
        assert media_of(node).router.producers == {}
        assert media_of(node).members[pid(lee)].publisher is None
        await asyncio.sleep(1.0)
        assert vic.received.count(pid(lee)) == 0 and vic.client.remote == {}
        assert vic.client.data.empty()


async def test_approved_listener_publishes_video_that_others_decode(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with crowd(node) as add:
        mod = await add("mod", role="moderator")
        vic = await add("vic", role="listener")
        lee = await add("lee", role="listener")
        status = await lee.client.request({"type": "request-to-speak", "message": "a question"})
        assert status["status"] == "pending"
        asked = await mod.client.next_event("speaker-request")
        assert (asked["participant"]["id"], asked["message"]) == (pid(lee), "a question")
        await mod.client.request({"type": "approve-speaker", "participant": pid(lee)})
        changed = await lee.client.next_event("permission-changed")
        assert changed["grants"]["can_publish"] is True and changed["by"] == pid(mod)
        result = await lee.client.next_event("speaker-request-result")
        assert (result["outcome"], result["by"]) == ("approved", pid(mod))
        updated = await event_about(vic, "participant-updated", pid(lee))
        assert updated["participant"]["grants"] == changed["grants"]
        [track] = await lee.client.publish(VideoStreamTrack())
        assert (track["participant"], track["kind"]) == (pid(lee), "video")
        await vic.wait_frames(pid(lee), 5, timeout=5.0)
        await mod.wait_frames(pid(lee), 5, timeout=5.0)


async def test_denied_listener_still_cannot_publish(start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with crowd(node) as add:
        mod = await add("mod", role="moderator")
        lee = await add("lee", role="listener")
        await lee.client.request({"type": "request-to-speak"})
        await mod.client.next_event("speaker-request")
        await mod.client.request({"type": "deny-speaker", "participant": pid(lee),
                                  "reason": "later"})
        result = await lee.client.next_event("speaker-request-result")
        assert (result["outcome"], result["reason"]) == ("denied", "later")
        assert participant(node, lee).grants.can_publish is False
        await refused("permission_denied", lee.client.publish(VideoStreamTrack()))
        assert media_of(node).router.producers == {}


async def test_moving_to_the_audience_stops_forwarding_though_the_client_keeps_sending(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with crowd(node) as add:
        mod = await add("mod", role="moderator")
        vic = await add("vic", role="listener")
        spk = await add("spk", role="speaker")
        [track] = await spk.client.publish(VideoStreamTrack())
        await vic.wait_frames(pid(spk), 10, timeout=10.0)
        await mod.client.request({"type": "move-to-audience", "participant": pid(spk),
                                  "reason": "thanks"})
        changed = await spk.client.next_event("permission-changed")
        assert changed["grants"]["can_publish"] is False and changed["by"] == pid(mod)
        gone = await vic.client.next_event("track-unpublished")
        assert gone["track"]["id"] == track["id"]
        await stopped(vic, spk)
        # The client closed nothing; the node closed the publish connection (aiortc then
        # ends the client's sending track by itself).
        assert spk.client.publisher is not None and not spk.client.closed
        assert media_of(node).members[pid(spk)].publisher is None
        assert participant(node, spk).tracks == {}
        for _ in range(50):
            if not media_of(node).router.producers:
                break
            await asyncio.sleep(0.1)
        assert media_of(node).router.producers == {}
        # A later offer (a fresh connection, the old one is gone) is refused.
        pc = RTCPeerConnection()
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await refused("permission_denied", spk.client.request(
            {"type": "offer", "sdp": pc.localDescription.sdp}))
        await pc.close()
        assert media_of(node).router.producers == {}


async def test_moderator_mute_stops_forwarding_and_only_the_publisher_unmutes(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    admin = {"Authorization": "Bearer " + token(ROOM, "ops", role="moderator",
                                                  grants={"room_join": False})}
    async with crowd(node) as add:
        mod = await add("mod", role="moderator")
        vic = await add("vic", role="listener")
        spk = await add("spk", role="speaker")
        [track] = await spk.client.publish(VideoStreamTrack())
        tid = track["id"]
        await vic.wait_frames(pid(spk), 10, timeout=10.0)
        await refused("permission_denied", vic.client.request(
            {"type": "mute-track", "track": tid, "muted": True}))
        reply = await mod.client.request({"type": "mute-track", "track": tid, "muted": True})
        assert reply["track"]["muted"] is True
        seen = await vic.client.next_event("track-updated")
        assert (seen["track"]["id"], seen["track"]["muted"]) == (tid, True)
        told = await spk.client.next_event("track-muted")
        assert (told["track"]["id"], told["track"]["muted"], told["by"]) == (tid, True, pid(mod))
        await stopped(vic, spk)
        await refused("permission_denied", mod.client.request(
            {"type": "mute-track", "track": tid, "muted": False}))
        await spk.client.request({"type": "mute-track", "track": tid, "muted": False})
        assert (await vic.client.next_event("track-updated"))["track"]["muted"] is False
        await flowing(vic, spk)
        # A room that lets moderators unmute.
        async with node.http.patch(node.url(f"/api/rooms/{ROOM}"), headers=admin,
                                   json={"moderator_can_unmute": True}) as resp:
            assert resp.status == 200
            assert (await resp.json())["options"]["moderator_can_unmute"] is True
        await mod.client.request({"type": "mute-track", "track": tid, "muted": True})
        await stopped(vic, spk)
        reply = await mod.client.request({"type": "mute-track", "track": tid, "muted": False})
        assert reply["track"]["muted"] is False
        while (told := await spk.client.next_event("track-muted"))["track"]["muted"]:
            pass
        assert told["by"] == pid(mod)
        await flowing(vic, spk)


async def test_hidden_participant_receives_media_but_is_not_announced(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with crowd(node) as add:
        spk = await add("spk", role="speaker")
        await spk.client.publish(VideoStreamTrack())
        rec = await add("rec", role="listener", grants={"hidden": True})
        assert rec.client.joined["grants"]["hidden"] is True
        await rec.wait_frames(pid(spk), 10, timeout=10.0)
        late = await add("late", role="listener")
        assert [p["identity"] for p in late.client.joined["participants"]] == ["spk"]
        joined = await spk.client.next_event("participant-joined")
        assert joined["participant"]["identity"] == "late"  # the first one spk was told of
        assert participant(node, rec).grants.hidden is True
