"""The media messages end to end with real aiortc peers: subscription, mute-track, data,
active speakers, renegotiation with reused slots, and key-frame request coalescing."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import math
import re
import time
from array import array
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

from client.client import ParleyClient
from conference.errors import ConferenceCode
from conference.ids import RoomName
from sfu.config import SfuConfig
from sfu.vp8 import is_keyframe
from signaling.errors import ErrorCode
from tests.conftest import NodeHarness, StartNode, token
from tests.e2e.test_media_input import SmallVideo, keeps_flowing, refused
from tests.media_helpers import LOOPBACK_SFU, Peer, media_node, peers


def loopback(**options: Any) -> SfuConfig:
    return SfuConfig(ice_addresses=LOOPBACK_SFU.ice_addresses, **options)


async def stops(viewer: Peer, publisher: Peer, kind: str = "video") -> None:
    """Frames from ``publisher`` stop growing (after those already in flight)."""
    pid = publisher.client.participant_id
    await asyncio.sleep(0.5)
    before = viewer.received.count(pid, kind)
    await asyncio.sleep(1.0)
    assert viewer.received.count(pid, kind) == before


def tap_frames(viewer: Peer, track_id: str) -> list[bytes]:
    """Every VP8 frame the viewer's receiver completes for ``track_id`` from packets that
    arrive from now on (aiortc completes a frame when the next one starts, so a frame
    begun earlier would otherwise show up first)."""
    remote = viewer.client.track_for(track_id)
    assert remote is not None and viewer.client.subscriber is not None
    receiver = next(t.receiver for t in viewer.client.subscriber.getTransceivers()
                    if t.receiver.track is remote.track)
    buffer = receiver._RTCRtpReceiver__jitter_buffer  # a tap on the client's side only
    original = buffer.add
    frames: list[bytes] = []
    seen: set[int] = set()

    def add(packet: Any) -> Any:
        seen.add(packet.timestamp)
        result = original(packet)
        if result[1] is not None and result[1].timestamp in seen:
            frames.append(result[1].data)
        return result

    buffer.add = add
    return frames


async def test_subscriber_pauses_resumes_and_unsubscribes_one_track(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "a", "b", "sub") as (a, b, sub):
        track_a = (await a.client.publish(SmallVideo()))[0]["id"]
        await b.client.publish(SmallVideo())
        await sub.wait_frames(a.client.participant_id, 10, timeout=15)
        await sub.wait_frames(b.client.participant_id, 10, timeout=15)

        reply = await sub.client.request({"type": "subscription", "track": track_a,
                                          "state": "paused"})
        assert (reply["type"], reply["track"], reply["state"]) \
            == ("subscription-updated", track_a, "paused")
        await stops(sub, a)
        await keeps_flowing(sub, b)

        frames = tap_frames(sub, track_a)
        await sub.client.request({"type": "subscription", "track": track_a,
                                  "state": "subscribed"})
        await keeps_flowing(sub, a)  # within the 10 s bound; a key frame was requested
        assert frames and is_keyframe(frames[0])

        while not sub.client.events.empty():
            sub.client.events.get_nowait()
        reply = await sub.client.request({"type": "subscription", "track": track_a,
                                          "state": "unsubscribed"})
        assert reply["state"] == "unsubscribed"
        offer = await sub.client.next_event("offer", timeout=5)
        carried = {info["track"] for info in offer["tracks"].values()}
        assert track_a not in carried and len(carried) == 1
        await stops(sub, a)
        await keeps_flowing(sub, b)

        assert await refused(sub.client, {"type": "subscription", "track": "TR_nope",
                                          "state": "paused"}) == ConferenceCode.UNKNOWN_TRACK
        assert await refused(sub.client, {"type": "subscription", "track": track_a,
                                          "state": "frozen"}) == ErrorCode.INVALID_MESSAGE


async def test_muted_track_stops_forwarding_and_unmute_resumes_with_a_key_frame(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "pub", "viewer") as (pub, viewer):
        track = (await pub.client.publish(SmallVideo()))[0]["id"]
        await viewer.wait_frames(pub.client.participant_id, 10, timeout=15)

        reply = await pub.client.request({"type": "mute-track", "track": track, "muted": True})
        assert reply["type"] == "track-updated" and reply["track"]["muted"] is True
        event = await viewer.client.next_event("track-updated")
        assert event["track"]["id"] == track and event["track"]["muted"] is True
        await stops(viewer, pub)

        frames = tap_frames(viewer, track)
        await pub.client.request({"type": "mute-track", "track": track, "muted": False})
        event = await viewer.client.next_event("track-updated")
        assert event["track"]["id"] == track and event["track"]["muted"] is False
        await keeps_flowing(viewer, pub)
        assert frames and is_keyframe(frames[0])


async def channel_open(client: ParleyClient) -> None:
    async with asyncio.timeout(10):
        while client._channel is None or client._channel.readyState != "open":
            await asyncio.sleep(0.05)


async def next_data(peer: Peer, timeout: float = 5.0) -> dict[str, Any]:
    return await asyncio.wait_for(peer.client.data.get(), timeout)


async def test_data_channel_messages_reach_others_and_respect_grants(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "room", "a", "b", "c") as (a, b, c), \
            peers(node, "room", "mute", grants={"can_publish_data": False}) as (mute,):
        for peer in (a, b, c, mute):
            await channel_open(peer.client)
        await a.client.send_data({"text": "hi"}, topic="chat")
        for peer in (b, c, mute):
            message = await next_data(peer)
            assert (message["from"], message["identity"], message["topic"], message["payload"]) \
                == (a.client.participant_id, "a", "chat", {"text": "hi"})
        assert not any(e["type"] == "data" for e in _queued(b.client.events))  # channel, not socket

        await a.client.send_data("psst", to=["b"])
        assert (await next_data(b))["payload"] == "psst"

        assert await refused(mute.client, {"type": "data", "payload": "loud"}) \
            == ConferenceCode.PERMISSION_DENIED
        await mute.client.send_data("sneaky")  # over its open data channel
        await asyncio.sleep(0.5)
        await a.client.send_data("after")
        for peer in (b, c):
            assert (await next_data(peer))["payload"] == "after"
        await asyncio.sleep(0.3)
        for peer in (a, b, c):
            assert peer.client.data.empty()


def _queued(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


class ToneTrack(MediaStreamTrack):
    """A loud 1 kHz tone, 48 kHz stereo s16 in 20 ms frames; ``pulse`` alternates it
    with silence every 200 ms."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pulse = False
        self._start: float | None = None
        self._pts = 0
        pcm = array("h")
        for n in range(960):
            v = int(math.sin(2 * math.pi * 1000 * n / 48000) * 20000)
            pcm.extend((v, v))
        self._tone = pcm.tobytes()
        self._silence = bytes(len(self._tone))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._pts / 48000 - loop.time()))
        loud = not self.pulse or (self._pts // 9600) % 2 == 0
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(self._tone if loud else self._silence)
        frame.sample_rate = 48000
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, 48000)
        self._pts += 960
        return frame


async def test_active_speakers_name_the_loud_publisher_at_a_limited_rate(
        start_node: StartNode) -> None:
    node = await media_node(start_node, sfu=loopback(active_speaker_interval=0.5))
    async with peers(node, "room", "loud", "quiet", "ear") as (loud, quiet, ear):
        tone = ToneTrack()
        await loud.client.publish(tone)
        await quiet.client.publish(AudioStreamTrack())
        await ear.wait_frames(quiet.client.participant_id, 10, kind="audio", timeout=15)
        async with asyncio.timeout(10):
            while True:
                event = await ear.client.next_event("active-speakers")
                named = [s["participant"] for s in event["speakers"]]
                if loud.client.participant_id in named:
                    break
        assert quiet.client.participant_id not in named
        assert all(0 <= s["level"] < 50 for s in event["speakers"])

        tone.pulse = True  # the speaker set now changes every 200 ms
        times: list[float] = []
        deadline = time.monotonic() + 3.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                await ear.client.next_event("active-speakers", timeout=left)
            except TimeoutError:
                break
            times.append(time.monotonic())
        assert 1 <= len(times) <= 7
        assert all(later - earlier > 0.4 for earlier, later in itertools.pairwise(times))


def _vp8_payload_types(sdp: str) -> set[int]:
    return {int(pt) for pt in re.findall(r"a=rtpmap:(\d+) VP8/90000", sdp)}


async def test_publishers_coming_and_going_reuse_the_subscriber_slots(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    room_name = RoomName("room")
    async with peers(node, "room", "stay") as (stay,):
        for i in range(10):
            async with peers(node, "room", f"p{i}") as (pub,):
                await pub.client.publish(SmallVideo(), AudioStreamTrack())
                await stay.wait_frames(pub.client.participant_id, 5, timeout=15)
                await stay.wait_frames(pub.client.participant_id, 5, kind="audio", timeout=15)
                assert stay.client.subscriber is not None
                assert len(stay.client.subscriber.getTransceivers()) <= 2
            async with asyncio.timeout(10):  # the publisher's producers are gone
                while _room_producers(node, room_name):
                    await asyncio.sleep(0.05)
        offers = [e for e in _queued(stay.client.events) if e["type"] == "offer"]
        assert len(offers) >= 10
        payload_types = set().union(*(_vp8_payload_types(o["sdp"]) for o in offers))
        assert len(payload_types) == 1
        assert len(stay.client.subscriber.getTransceivers()) <= 2  # type: ignore[union-attr]


def _room_producers(node: NodeHarness, name: RoomName) -> int:
    room = node.node.rooms.get(name)
    assert room is not None and room.media is not None
    return len(room.media.router.producers)


async def test_subscribers_joining_together_cause_at_most_one_pli_per_interval(
        start_node: StartNode) -> None:
    node = await media_node(start_node, sfu=loopback(keyframe_interval=1.0))
    async with peers(node, "room", "pub") as (pub,):
        await pub.client.publish(SmallVideo())
        room = node.node.rooms.get(RoomName("room"))
        assert room is not None and room.media is not None
        async with asyncio.timeout(10):
            while not room.media.router.producers:
                await asyncio.sleep(0.05)
        producer = next(iter(room.media.router.producers.values()))
        async with asyncio.timeout(10):
            while producer.assembler.ssrc is None:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.1)  # the last PLI (if any) is older than the interval
        plis: list[float] = []
        send_pli = producer._send_pli

        def counted(key: int | None, now: float) -> None:
            plis.append(time.perf_counter())
            send_pli(key, now)

        producer._send_pli = counted  # type: ignore[method-assign]
        clients = [ParleyClient(node.url("/"), token("room", f"s{i}")) for i in range(4)]
        viewers = [Peer(client) for client in clients]
        try:
            started = time.perf_counter()
            await asyncio.gather(*(client.connect() for client in clients))
            for viewer in viewers:
                await viewer.wait_frames(pub.client.participant_id, 5, timeout=15)
            await asyncio.sleep(max(0.0, started + 3.0 - time.perf_counter()))
            elapsed = time.perf_counter() - started
        finally:
            for viewer in viewers:
                await viewer.close()
        assert 1 <= len(plis) <= elapsed / 1.0 + 1
        assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(plis))
