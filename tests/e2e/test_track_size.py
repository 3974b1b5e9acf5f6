"""``track-size``: a subscriber tells the node the size it shows a video at; the conference
keeps it on that subscription's consumer for the layer allocator."""

from __future__ import annotations

from typing import Any

from aiortc.mediastreams import AudioStreamTrack

from conference.ids import ParticipantId, RoomName, TrackId
from signaling.errors import ErrorCode
from tests.conftest import NodeHarness, StartNode
from tests.e2e.test_media_input import SmallVideo, refused
from tests.media_helpers import media_node, peers


def consumer_of(node: NodeHarness, subscriber: str, track: str) -> Any:
    room = node.node.rooms.get(RoomName("sizes"))
    assert room is not None and room.media is not None
    media: Any = room.media
    return media.members[ParticipantId(subscriber)].consumers.get(TrackId(track))


async def test_a_tile_size_is_kept_on_the_subscription_and_bad_sizes_are_refused(
        start_node: StartNode) -> None:
    node = await media_node(start_node)
    async with peers(node, "sizes", "a", "sub") as (a, sub):
        [video, audio] = [t["id"] for t in await a.client.publish(SmallVideo(),
                                                                      AudioStreamTrack())]
        await sub.wait_frames(a.client.participant_id, 3, timeout=15)
        pid = sub.client.participant_id
        reply = await sub.client.request({"type": "track-size", "track": video,
                                          "width": 160, "height": 90})
        assert (reply["type"], reply["action"]) == ("ack", "track-size")
        assert consumer_of(node, pid, video).render_size == (160, 90)
        # without an id: no reply, still kept
        await sub.client.send({"type": "track-size", "track": video, "width": 0, "height": 0})
        await sub.client.request({"type": "track-size", "track": "TR_gone", "width": 320,
                                  "height": 180})  # a track not received: ignored
        assert consumer_of(node, pid, video).render_size == (0, 0)
        await sub.client.request({"type": "track-size", "track": audio, "width": 320,
                                  "height": 180})  # not a video: ignored
        assert consumer_of(node, pid, audio).render_size is None
        for bad in ({"width": -1, "height": 90}, {"width": 20000, "height": 90},
                    {"width": 1.5, "height": 90}, {"width": 160}):
            assert await refused(sub.client, {"type": "track-size", "track": video, **bad}) \
                == ErrorCode.INVALID_MESSAGE.value
        assert consumer_of(node, pid, video).render_size == (0, 0)
