"""A media connection whose network path dies for longer than the consent window comes
back on the same socket: the node closes its side and says so (``connection-failed``),
the Python client publishes again (or answers the node's new subscriber offer) and
media flows again once the path is restored.

The client's connection goes through a UDP relay (tests/netimpair.py) that hides its
own address from the node, so blocking the relay kills the path both ways. The node's
consent window is 3 s here (``sfu.consent_timeout``, 30 s by default)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiortc import AudioStreamTrack, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from client.client import ParleyClient, RemoteTrack
from sfu.config import SfuConfig
from tests.conftest import NodeHarness, StartNode, make_config, token
from tests.netimpair import RelayedClient

WINDOW = 3.0
"""The node's consent window in these tests."""
BLOCKED = WINDOW + 3.0
"""How long the path stays dead: longer than the window."""
RECOVERY = 10.0
"""Media must flow again within this many seconds of the path coming back."""


@pytest.fixture
async def node(start_node: StartNode) -> NodeHarness:
    return await start_node(make_config(sfu=SfuConfig(ice_addresses=("127.0.0.1",),
                                                      consent_timeout=WINDOW)))


@pytest.fixture
async def clients() -> AsyncIterator[list[ParleyClient]]:
    made: list[ParleyClient] = []
    yield made
    for client in made:
        await client.close()


async def video_from(client: ParleyClient, participant: str, *, not_track: str = "",
                     timeout: float = RECOVERY) -> RemoteTrack:
    """The next remote video of ``participant`` (other than ``not_track``) that decodes
    a frame."""
    async with asyncio.timeout(timeout):
        while True:
            remote = await client.next_track(timeout=timeout)
            if remote.kind != "video" or remote.participant != participant \
                    or (not_track and remote.track_id == not_track):
                continue
            try:
                await asyncio.wait_for(remote.track.recv(), 3.0)
            except (MediaStreamError, TimeoutError):
                continue
            return remote


async def failure_of(client: ParleyClient, target: str) -> dict[str, object]:
    async with asyncio.timeout(WINDOW + 8.0):
        while True:
            event = await client.next_event("connection-failed", timeout=WINDOW + 8.0)
            if event["target"] == target:
                return event


@pytest.mark.timeout(90)
async def test_a_publisher_whose_path_died_publishes_again_on_the_same_socket(
        node: NodeHarness, clients: list[ParleyClient]) -> None:
    url = node.url("/")
    publisher = RelayedClient(url, token("heal", "pub"), relay=frozenset({"publisher"}),
                              strict=True)
    clients.append(publisher)
    await publisher.connect()
    await publisher.publish(VideoStreamTrack(), sources=["camera"])
    watcher = ParleyClient(url, token("heal", "watch"))
    clients.append(watcher)
    await watcher.connect()
    first = await video_from(watcher, publisher.participant_id)

    publisher.block("publisher")
    blocked_at = time.monotonic()
    failed = await failure_of(publisher, "publisher")
    assert failed["reason"] == "consent_expired"
    assert time.monotonic() - blocked_at >= WINDOW - 1.0  # from the last answered check
    gone = await watcher.next_event("track-unpublished", timeout=2.0)
    assert gone["track"]["id"] == first.track_id  # the others see the track end at once

    await asyncio.sleep(max(0.0, BLOCKED - (time.monotonic() - blocked_at)))
    publisher.block("publisher", False)
    again = await video_from(watcher, publisher.participant_id, not_track=first.track_id)
    assert again.track_id != first.track_id
    assert publisher.republished >= 1
    assert publisher.reconnects == 0  # the socket stayed
    async with node.http.get(node.url("/metrics")) as response:
        metrics = await response.text()
    assert ('parley_sfu_connection_failures_total{reason="consent_expired",'
            'target="publisher"} 1.0') in metrics


@pytest.mark.timeout(90)
async def test_a_subscriber_whose_path_died_gets_a_new_connection_with_its_subscriptions(
        node: NodeHarness, clients: list[ParleyClient]) -> None:
    url = node.url("/")
    publisher = ParleyClient(url, token("heal", "pub"))
    clients.append(publisher)
    await publisher.connect()
    published = await publisher.publish(VideoStreamTrack(), AudioStreamTrack(),
                                        sources=["camera", "microphone"])
    audio = next(t["id"] for t in published if t["kind"] == "audio")
    subscriber = RelayedClient(url, token("heal", "sub"), strict=True)
    clients.append(subscriber)
    await subscriber.connect()
    first = await video_from(subscriber, publisher.participant_id)
    await subscriber.request({"type": "subscription", "track": audio, "state": "unsubscribed"})

    subscriber.block("subscriber")
    blocked_at = time.monotonic()
    failed = await failure_of(subscriber, "subscriber")
    assert failed["reason"] == "consent_expired"
    offer = await subscriber.next_event("offer", timeout=5.0)  # the new connection's
    assert [t["track"] for t in offer["tracks"].values()] == [first.track_id]  # no audio

    await asyncio.sleep(max(0.0, BLOCKED - (time.monotonic() - blocked_at)))
    subscriber.block("subscriber", False)
    again = await video_from(subscriber, publisher.participant_id)
    assert again.track_id == first.track_id  # the same track, on a new connection
    assert subscriber.reconnects == 0


async def test_an_offer_from_a_new_publish_connection_replaces_the_old_one(
        node: NodeHarness, clients: list[ParleyClient]) -> None:
    """The client saw its publish connection fail before the node did: it publishes
    again on a new peer connection, and the node takes that offer (new ICE credentials)
    as a new connection instead of refusing it."""
    url = node.url("/")
    publisher = ParleyClient(url, token("heal", "pub"))
    clients.append(publisher)
    await publisher.connect()
    await publisher.publish(VideoStreamTrack(), sources=["camera"])
    watcher = ParleyClient(url, token("heal", "watch"))
    clients.append(watcher)
    await watcher.connect()
    first = await video_from(watcher, publisher.participant_id)
    old = publisher.publisher
    assert old is not None

    publisher._media_failed("publisher")  # what its own "failed" state does
    gone = await watcher.next_event("track-unpublished", timeout=5.0)
    assert gone["track"]["id"] == first.track_id
    again = await video_from(watcher, publisher.participant_id, not_track=first.track_id)
    assert again.track_id != first.track_id
    assert publisher.publisher is not old
    for _ in range(50):  # the reply to the new offer may come after the first frames
        if publisher.republished:
            break
        await asyncio.sleep(0.1)
    assert publisher.republished == 1
    media = next(iter(node.node.rooms.rooms.values())).media
    assert len(media.router.transports) == 3  # the old publish connection is gone
