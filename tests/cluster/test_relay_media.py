"""Media through a relayed session flows directly between the client and the room's node."""

from __future__ import annotations

import re

from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from client.client import ParleyClient
from conference.ids import RoomName
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_relay import bearer, own, start_cluster
from tests.conftest import StartNode, token
from tests.media_helpers import LOOPBACK_SFU, Peer


async def test_clients_on_two_non_owner_nodes_exchange_media_through_the_owner(
        start_node: StartNode, redis_server: RedisServer) -> None:
    a, b, c = await start_cluster(start_node, redis_server, sfu=LOOPBACK_SFU)
    await own(a, "media")
    publisher = Peer(ParleyClient(b.url("/"), token("media", "pub")))
    viewer = Peer(ParleyClient(c.url("/"), token("media", "view")))
    try:
        await publisher.client.connect()
        await viewer.client.connect()
        infos = await publisher.client.publish(VideoStreamTrack(), AudioStreamTrack())
        pid = publisher.client.participant_id
        await viewer.wait_frames(pid, 15, timeout=20)
        await viewer.wait_frames(pid, 10, kind="audio", timeout=20)
        # The SFU that answered is the owner's: its transports, not the edges', carry RTP.
        room = a.node.rooms.get(RoomName("media"))
        assert room is not None and len(room.media.router.transports) >= 2
        for edge in (b, c):
            _, counts = edge.node.rooms.media_snapshot()
            assert counts["peer_connections"] == 0
        # A moderator action from the third node reaches the owner.
        video = next(t for t in infos if t["kind"] == "video")
        admin = bearer(token("*", "ops", grants={"room_admin": True}))
        async with c.http.post(c.url("/api/rooms/media/participants/pub/mute"), headers=admin,
                               json={"track": video["id"]}) as resp:
            assert resp.status == 200 and (await resp.json())["muted"] is True
        muted = await publisher.client.next_event("track-muted")
        assert muted["track"]["id"] == video["id"]
        updated = await viewer.client.next_event("track-updated")
        assert updated["track"]["id"] == video["id"] and updated["track"]["muted"] is True
        metrics = await (await c.http.get(c.url("/metrics"))).text()
        latency = re.search(r"parley_relay_latency_seconds_count (\S+)", metrics)
        assert latency is not None and float(latency.group(1)) > 0
    finally:
        await publisher.close()
        await viewer.close()
