"""End to end with real aiortc peers: publish, forward without transcoding, decode, leave."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import replace

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from client.media import EncodedTrack, encode_video
from conference.config import RoomConfig
from conference.ids import RoomName
from sfu.hooks import ForwardPacker, sender_encoder
from tests.conftest import StartNode
from tests.media_helpers import LOOPBACK_SFU, media_node, peers


def _live_pcs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects()
               if isinstance(o, RTCPeerConnection) and o.connectionState != "closed")


async def test_three_participants_decode_each_other_and_leave_cleanly(
        start_node: StartNode) -> None:
    node = await media_node(start_node, rooms=RoomConfig(empty_timeout=0.5))
    tasks_before = len(asyncio.all_tasks())
    async with peers(node, "room", "a", "b", "c") as (a, b, c):
        for peer in (a, b, c):
            await peer.client.publish(VideoStreamTrack(), AudioStreamTrack())
        ids = {p: p.client.participant_id for p in (a, b, c)}
        for viewer in (a, b, c):
            for other in (a, b, c):
                if other is not viewer:
                    await viewer.wait_frames(ids[other], 15, timeout=15)
                    await viewer.wait_frames(ids[other], 10, kind="audio", timeout=15)
                    assert viewer.received.sizes[ids[other]] == {(640, 480)}
            assert viewer.received.count(ids[viewer]) == 0  # never receives itself
        await c.client.leave()
        left = await a.client.next_event("participant-left")
        assert left["participant"] == ids[c]
        unpublished = await b.client.next_event("track-unpublished")
        assert unpublished["track"]["participant"] == ids[c]
        await asyncio.sleep(1.0)
        frozen = a.received.count(ids[c])
        await asyncio.sleep(1.0)
        assert a.received.count(ids[c]) == frozen  # nothing more from c
        before_b = a.received.count(ids[b])
        await asyncio.sleep(0.5)
        assert a.received.count(ids[b]) > before_b  # b still flows
    room = node.node.rooms.get(RoomName("room"))
    assert room is not None and room.media is not None
    for _ in range(50):
        if not room.media.router.transports and node.node.rooms.get(RoomName("room")) is None:
            break
        await asyncio.sleep(0.1)
    assert room.media.router.transports == set()
    assert room.media.router.producers == {}
    for _ in range(50):
        if _live_pcs() == 0 and len(asyncio.all_tasks()) <= tasks_before:
            break
        await asyncio.sleep(0.1)
    assert _live_pcs() == 0
    assert len(asyncio.all_tasks()) <= tasks_before


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "aiortc-sender"])
async def test_sfu_never_decodes_or_encodes_and_forwards_frames_unchanged(
        start_node: StartNode, fast_path: bool) -> None:
    node = await media_node(start_node, sfu=replace(LOOPBACK_SFU, fast_path=fast_path))
    clip = encode_video(seconds=1.0)
    async with peers(node, "room", "pub", "sub") as (pub, sub):
        track = EncodedTrack(clip)
        track.keep = 1000
        await pub.client.publish(track)
        await sub.wait_frames(pub.client.participant_id, 20, timeout=15)
        room = node.node.rooms.get(RoomName("room"))
        assert room is not None and room.media is not None
        producers = list(room.media.router.producers.values())
        assert len(producers) == 1
        producer = producers[0]
        assert producer.frames_in >= 20
        assert producer.decoder_queue.frames_offered == 0
        consumers = list(producer.consumers)
        assert consumers and all(c.frames_forwarded > 0 for c in consumers)
        subscriber = room.media.members[sub.client.participant_id].subscriber  # type: ignore[index]
        assert subscriber is not None
        for transceiver in subscriber.pc.getTransceivers():
            encoder = sender_encoder(transceiver.sender)
            if fast_path:  # aiortc's sender never started: no codec object at all
                assert encoder is None
            else:
                assert encoder is None or isinstance(encoder, ForwardPacker)
        slots = [c.slot for c in consumers]
        assert all((s.outbound is not None) == fast_path for s in slots)
        # The frames the subscriber's receiver reassembled are the published bytes.
        remote = sub.client.track_for(str(producer.app_data["track"]))
        assert remote is not None
        sent = set(clip.frames)
        captured: list[bytes] = []
        receiver = next(t.receiver for t in sub.client.subscriber.getTransceivers()  # type: ignore[union-attr]
                        if t.receiver.track is remote.track)
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # test tap on the client only
        original_add = buffer.add

        def tap(packet: object) -> object:
            result = original_add(packet)
            if result[1] is not None:
                captured.append(result[1].data)
            return result

        buffer.add = tap
        for _ in range(100):
            if len(captured) >= 20:
                break
            await asyncio.sleep(0.05)
        assert len(captured) >= 20
        assert all(frame in sent for frame in captured)


async def test_new_subscriber_gets_a_picture_promptly(start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "pub") as (pub,):
        await pub.client.publish(VideoStreamTrack())
        await asyncio.sleep(2.0)  # the publisher's key frame is long gone
        loop = asyncio.get_running_loop()
        async with peers(node, "room", "late") as (late,):
            joined = loop.time()
            await late.wait_frames(pub.client.participant_id, 1, timeout=10)
            first = late.received.first_frame_at[(pub.client.participant_id, "video")]
            assert first - joined < 3.0
