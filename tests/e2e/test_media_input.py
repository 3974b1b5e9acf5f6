"""Bad media input through a real node: each request gets a coded error and harms nothing else.

Real aiortc peers publish and subscribe on loopback; the faulty requests are
sent on the same signalling socket as the working media. ``ParleyClient.request``
matches replies by id, so a ``ClientError`` from it proves the error carried
the request's id.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from client.client import ClientError, ParleyClient
from client.media import EncodedTrack, encode_audio
from conference.errors import ConferenceCode, SfuCode
from conference.ids import RoomName
from sfu.config import SfuConfig
from tests.conftest import NodeHarness, StartNode
from tests.media_helpers import LOOPBACK_SFU, Peer, media_node, peers


class SmallVideo(MediaStreamTrack):
    """A 160x120 black picture at 30 fps, encoded by aiortc (answers key-frame requests)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._count / 30 - loop.time()))
        frame = av.VideoFrame(width=160, height=120)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = self._count * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self._count += 1
        return frame


async def refused(client: ParleyClient, message: dict[str, Any]) -> str:
    """Send ``message`` with an id; return the code of the error that answers that id."""
    with pytest.raises(ClientError) as info:
        await client.request(message, timeout=10)
    return info.value.code


async def keeps_flowing(viewer: Peer, publisher: Peer, kind: str = "video",
                        more: int = 10) -> None:
    pid = publisher.client.participant_id
    await viewer.wait_frames(pid, viewer.received.count(pid, kind) + more, kind=kind,
                             timeout=10)


async def scratch_offer(*kinds: str) -> str:
    """A real aiortc offer with one sending section per kind."""
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction="sendonly")
        offer = await pc.createOffer()
        return str(offer.sdp)
    finally:
        await pc.close()


def h264_only(sdp: str) -> str:
    """Remove VP8 and RTX from every video section, keeping only H264."""
    lines = sdp.splitlines()
    h264 = [line[9:].split()[0] for line in lines
            if line.startswith("a=rtpmap:") and " H264/" in line]
    out = []
    for line in lines:
        if line.startswith("m=video"):
            line = " ".join([*line.split()[:3], *h264])
        elif line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            if line.split(":", 1)[1].split()[0] not in h264:
                continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def producers(node: NodeHarness, room: str) -> dict[str, Any]:
    live = node.node.rooms.get(RoomName(room))
    assert live is not None and live.media is not None
    return dict(live.media.router.producers)


async def test_bad_offers_get_coded_errors_and_published_media_keeps_flowing(
        start_node: StartNode) -> None:
    sfu = SfuConfig(ice_addresses=LOOPBACK_SFU.ice_addresses, max_tracks_per_connection=2)
    node = await media_node(start_node, sfu=sfu)
    async with peers(node, "room", "pub", "sub") as (pub, sub), \
            peers(node, "calm", "pub2", "sub2") as (pub2, sub2):
        await pub.client.publish(SmallVideo())
        await pub2.client.publish(SmallVideo())
        await sub.wait_frames(pub.client.participant_id, 10, timeout=15)
        await sub2.wait_frames(pub2.client.participant_id, 10, timeout=15)
        assert pub.client.publisher is not None
        real = str(pub.client.publisher.localDescription.sdp)

        assert await refused(pub.client, {"type": "offer", "sdp": "hello"}) \
            == SfuCode.INVALID_SDP
        assert await refused(pub.client, {"type": "offer", "sdp": "v=0\r\nm=video\r\n"}) \
            == SfuCode.INVALID_SDP
        # Half an offer loses its ICE credentials (aiortc refuses it: invalid_sdp); a
        # cut inside the codec lines would be no_supported_codec. Both are clean refusals.
        code = await refused(pub.client, {"type": "offer", "sdp": real[: len(real) // 2]})
        assert code in (SfuCode.INVALID_SDP, SfuCode.NO_SUPPORTED_CODEC)
        assert code == SfuCode.INVALID_SDP  # what aiortc 1.16 does with this cut
        munged = h264_only(real)
        assert "VP8" not in munged and "rtx" not in munged and "H264" in munged
        assert await refused(pub.client, {"type": "offer", "sdp": munged}) \
            == SfuCode.NO_SUPPORTED_CODEC
        three = await scratch_offer("video", "audio", "video")
        assert await refused(pub.client, {"type": "offer", "sdp": three}) \
            == ConferenceCode.TOO_MANY_TRACKS

        assert len(producers(node, "room")) == 1
        assert pub.client.publisher.connectionState == "connected"
        await keeps_flowing(sub, pub)
        await keeps_flowing(sub2, pub2)
        # The publish connection still negotiates: a further track is accepted and arrives.
        tracks = await pub.client.publish(AudioStreamTrack())
        assert [t["kind"] for t in tracks] == ["audio"]
        await sub.wait_frames(pub.client.participant_id, 10, kind="audio", timeout=15)
        await keeps_flowing(sub, pub)
        # Leaving closes both producers, the one added by the re-offer too, promptly.
        await pub.client.leave()
        async with asyncio.timeout(5):
            while producers(node, "room"):
                await asyncio.sleep(0.05)
        await keeps_flowing(sub2, pub2)


async def test_stray_answers_and_candidates_get_coded_errors(start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "viewer") as (viewer,):
        room = node.node.rooms.get(RoomName("room"))
        assert room is not None and room.media is not None
        member = room.media.members[viewer.client.participant_id]  # type: ignore[index]
        assert member.subscriber is not None
        for _ in range(200):  # the viewer's answer to the first offer was accepted
            if member.subscriber.offers_sent == 1 and not member.subscriber._awaiting_answer:
                break
            await asyncio.sleep(0.05)
        assert member.subscriber.offers_sent == 1
        assert not member.subscriber._awaiting_answer
        client = viewer.client
        assert client.subscriber is not None
        own = str(client.subscriber.localDescription.sdp)

        assert await refused(client, {"type": "answer", "sdp": own}) \
            == SfuCode.NO_OFFER_PENDING
        good = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
                "sdpMid": "0", "sdpMLineIndex": 0}
        assert await refused(client, {"type": "candidate", "target": "bogus",
                                      "candidate": good}) == SfuCode.UNKNOWN_CONNECTION
        assert await refused(client, {"type": "candidate", "target": "publisher",
                                      "candidate": good}) == SfuCode.UNKNOWN_CONNECTION
        for bad in ({"candidate": "candidate:nonsense", "sdpMid": "0"},
                    {"candidate": "candidate:1 one udp x 127.0.0.1 9 typ host"},
                    "not an object", 42):
            assert await refused(client, {"type": "candidate", "target": "subscriber",
                                          "candidate": bad}) == SfuCode.INVALID_CANDIDATE
        assert client.subscriber.connectionState == "connected"
        # Still subscribed: a publisher arriving now is offered and decoded.
        async with peers(node, "room", "late") as (late,):
            await late.client.publish(SmallVideo())
            await viewer.wait_frames(late.client.participant_id, 10, timeout=15)
        assert member.subscriber.offers_sent >= 2


async def test_listener_cannot_publish_and_no_producer_is_created(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "speaker") as (speaker,), \
            peers(node, "room", "listener", role="listener") as (listener,):
        await speaker.client.publish(SmallVideo())
        await listener.wait_frames(speaker.client.participant_id, 5, timeout=15)
        with pytest.raises(ClientError) as info:
            await listener.client.publish(SmallVideo(), AudioStreamTrack())
        assert info.value.code == ConferenceCode.PERMISSION_DENIED
        await asyncio.sleep(0.3)
        live = producers(node, "room")
        assert [p.app_data["participant"] for p in live.values()] \
            == [speaker.client.participant_id]
        room = node.node.rooms.get(RoomName("room"))
        assert room is not None and room.media is not None
        listener_media = room.media.members[listener.client.participant_id]  # type: ignore[index]
        assert listener_media.publisher is None and listener_media.producers == {}
        await keeps_flowing(listener, speaker)


async def test_media_disabled_node_joins_with_media_but_refuses_offers(
        start_node: StartNode) -> None:
    node = await media_node(start_node, sfu=SfuConfig(enabled=False))
    async with peers(node, "room", "a", "b") as (a, b):
        assert a.client.joined["type"] == "joined"
        joined = await a.client.next_event("participant-joined")
        assert joined["participant"]["identity"] == "b"
        with pytest.raises(ClientError) as info:
            await a.client.publish(SmallVideo())
        assert info.value.code == ConferenceCode.MEDIA_DISABLED
        assert await refused(b.client, {"type": "candidate", "target": "subscriber",
                                        "candidate": None}) == ConferenceCode.MEDIA_DISABLED
        assert await refused(b.client, {"type": "subscription", "track": "TR_x",
                                        "state": "paused"}) == ConferenceCode.MEDIA_DISABLED
        room = node.node.rooms.get(RoomName("room"))
        assert room is not None and not room.media.enabled
        assert a.client.subscriber is None  # no subscriber offer ever came
        delivered = await a.client.request({"type": "data", "payload": "still here"})
        assert delivered["delivered"] == 1
        assert (await b.client.data.get())["payload"] == "still here"


async def _stalled_update(peer: Peer, track_id: str, stalled: bool,
                          timeout: float = 8.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            event = await peer.client.next_event("track-updated", timeout=timeout)
            if event["track"]["id"] == track_id and event["track"]["stalled"] is stalled:
                return event


async def test_a_track_that_ends_is_announced_as_stalled(start_node: StartNode) -> None:
    sfu = SfuConfig(ice_addresses=LOOPBACK_SFU.ice_addresses, stall_timeout=1.0)
    node = await media_node(start_node, sfu=sfu)
    async with peers(node, "room", "ends", "steady", "watcher") as (ends, steady, watcher):
        steady_track = (await steady.client.publish(SmallVideo()))[0]["id"]
        clip = encode_audio(seconds=1.0)
        ending = (await ends.client.publish(EncodedTrack(clip, loops=1)))[0]["id"]
        await watcher.wait_frames(ends.client.participant_id, 10, kind="audio", timeout=15)
        event = await _stalled_update(watcher, ending, True)
        assert event["track"]["participant"] == ends.client.participant_id
        await _stalled_update(ends, ending, True)  # the publisher is told too
        await keeps_flowing(watcher, steady)
        room = node.node.rooms.get(RoomName("room"))
        assert room is not None
        still = room.get(steady.client.participant_id)  # type: ignore[arg-type]
        assert still is not None and still.tracks[steady_track].stalled is False


async def test_a_stopped_sender_is_stalled_and_clears_when_it_resumes(
        start_node: StartNode) -> None:
    sfu = SfuConfig(ice_addresses=LOOPBACK_SFU.ice_addresses, stall_timeout=1.0)
    node = await media_node(start_node, sfu=sfu)
    async with peers(node, "room", "pub", "watcher") as (pub, watcher):
        track_id = (await pub.client.publish(SmallVideo()))[0]["id"]
        await watcher.wait_frames(pub.client.participant_id, 10, timeout=15)
        assert pub.client.publisher is not None
        sender = pub.client.publisher.getTransceivers()[0].sender
        sender.replaceTrack(None)  # the sender idles: no more RTP
        await _stalled_update(watcher, track_id, True)
        sender.replaceTrack(SmallVideo())
        await _stalled_update(watcher, track_id, False)
        await keeps_flowing(watcher, pub)
