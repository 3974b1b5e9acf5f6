"""Who may send media, and how much, decided on what aiortc reads in the offer.

Each offer is a real aiortc offer with sending sections, disguised as Parley
used to read SDP: ``x=inactive`` lines (not attributes, aiortc ignores them)
and port 0 (aiortc ignores the port). None of them may produce forwarding
without a ``track-published``, a publish connection for a participant that
may not publish, or more producers than ``sfu.max_tracks_per_connection``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import RTCPeerConnection, VideoStreamTrack

from client.client import ClientError
from conference.errors import ConferenceCode, SfuCode
from conference.ids import RoomName
from sfu.config import SfuConfig
from tests.conftest import NodeHarness, StartNode
from tests.media_helpers import LOOPBACK_SFU, Peer, media_node, peers


async def real_offer(video: int, direction: str = "sendonly") -> str:
    pc = RTCPeerConnection()
    try:
        for _ in range(video):
            pc.addTransceiver(VideoStreamTrack(), direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def disguised(sdp: str, port_zero: bool = True) -> str:
    """Every sending section looks inactive to a reader of ``line[2:]`` or of the port."""
    out = []
    for line in sdp.split("\r\n"):
        if port_zero and line.startswith("m=video 9 "):
            line = line.replace("m=video 9 ", "m=video 0 ", 1)
        out.append(line)
        if line == "a=sendonly":
            out.append("x=inactive")
    return "\r\n".join(out)


def media_of(node: NodeHarness, room: str) -> Any:
    live = node.node.rooms.get(RoomName(room))
    assert live is not None and live.media is not None
    return live.media


async def refused(peer: Peer, sdp: str) -> str:
    with pytest.raises(ClientError) as info:
        await peer.client.request({"type": "offer", "sdp": sdp}, timeout=10)
    return info.value.code


async def nothing_forwarded(node: NodeHarness, viewer: Peer) -> None:
    await asyncio.sleep(0.5)
    media = media_of(node, "room")
    assert media.router.producers == {}
    assert viewer.client.tracks.empty()
    assert viewer.received.frames == {}


@pytest.mark.parametrize("port_zero", [False, True])
async def test_hidden_publisher_is_refused_however_the_offer_is_disguised(
        start_node: StartNode, port_zero: bool) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "viewer") as (viewer,), \
            peers(node, "room", "ghost", role="speaker", grants={"hidden": True}) as (ghost,):
        for sdp in (disguised(await real_offer(1), port_zero), await real_offer(1)):
            assert await refused(ghost, sdp) == ConferenceCode.PERMISSION_DENIED
        assert media_of(node, "room").members[ghost.client.participant_id].publisher is None
        await nothing_forwarded(node, viewer)
        with pytest.raises(asyncio.TimeoutError):
            await viewer.client.next_event("track-published", timeout=0.3)


async def test_a_listener_gets_no_publish_connection(start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "viewer") as (viewer,), \
            peers(node, "room", "listener", role="listener") as (listener,):
        for sdp in (await real_offer(2, "recvonly"), disguised(await real_offer(2))):
            assert await refused(listener, sdp) == ConferenceCode.PERMISSION_DENIED
        assert media_of(node, "room").members[listener.client.participant_id].publisher is None
        await nothing_forwarded(node, viewer)


@pytest.mark.parametrize("port_zero", [False, True])
async def test_disguised_sending_sections_count_toward_the_track_cap(
        start_node: StartNode, port_zero: bool) -> None:
    sfu = SfuConfig(ice_addresses=LOOPBACK_SFU.ice_addresses, max_tracks_per_connection=2)
    node = await media_node(start_node, sfu=sfu)
    async with peers(node, "room", "viewer", "speaker") as (viewer, speaker):
        code = await refused(speaker, disguised(await real_offer(6), port_zero))
        assert code in (ConferenceCode.TOO_MANY_TRACKS, SfuCode.TOO_MANY_TRACKS)
        await nothing_forwarded(node, viewer)
        # Within the cap the same disguise is read as aiortc reads it: two published tracks.
        reply = await speaker.client.request(
            {"type": "offer", "sdp": disguised(await real_offer(2), port_zero)}, timeout=10)
        assert len(reply["tracks"]) == 2
        assert len(media_of(node, "room").router.producers) == 2
