"""Router → Transport → Producer/Consumer: parents create and close children; counts.

A real Router with real aiortc connections (not connected: the tree is built
from the offers alone, ICE on loopback only).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from sfu.config import SfuConfig
from sfu.errors import SfuCode, SfuError
from sfu.producer import Producer
from sfu.router import Router
from sfu.stats import RouterCounts

CONFIG = SfuConfig(ice_addresses=("127.0.0.1",))


@pytest.fixture
async def router(loopback_ice: None) -> AsyncIterator[Router]:
    router = Router(CONFIG)
    try:
        yield router
    finally:
        await router.close()


async def publish(router: Router, kinds: tuple[str, ...]) -> tuple[list[Producer], Any]:
    """A client offers one sending m-line per kind; returns the producers and its pc."""
    client = RTCPeerConnection()
    for kind in kinds:
        client.addTransceiver(kind, direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "a"},
                                                on_producer=produced.append, may_publish=True)
    await transport.handle_offer(client.localDescription.sdp, {})
    return produced, client


async def test_counts_follow_the_tree_as_consumers_and_transports_close(router: Router) -> None:
    assert router.counts() == RouterCounts(producers=0, consumers=0, peer_connections=0)
    (video, audio), client = await publish(router, ("video", "audio"))
    try:
        subscriber = router.create_subscribe_transport({"participant": "b"},
                                                       on_offer=lambda sdp, tracks: None)
        other = router.create_subscribe_transport({"participant": "c"},
                                                  on_offer=lambda sdp, tracks: None)
        consumers = [subscriber.consume(video, {}), subscriber.consume(audio, {}),
                     other.consume(video, {})]
        assert router.counts() == RouterCounts(producers=2, consumers=3, peer_connections=3)
        assert [c.producer_id for c in consumers] == [video.id, audio.id, video.id]
        assert (consumers[0].kind, consumers[1].kind) == ("video", "audio")

        consumers[0].close()
        consumers[0].close()  # idempotent
        assert consumers[0] not in video.consumers and consumers[2] in video.consumers
        assert consumers[0].id not in subscriber.consumers
        assert router.counts().consumers == 2

        publisher = next(t for t in router.transports if t not in (subscriber, other))
        await router.close_transport(publisher)
        assert video.closed and audio.closed
        assert all(c.closed for c in consumers)  # a producer closes its consumers everywhere
        assert subscriber.consumers == {} and other.consumers == {}
        assert router.counts() == RouterCounts(producers=0, consumers=0, peer_connections=2)

        await router.close()
        await router.close()  # idempotent
        assert subscriber.closed and other.closed
        assert router.counts() == RouterCounts(producers=0, consumers=0, peer_connections=0)
    finally:
        await client.close()


async def test_a_new_consumer_asks_its_producer_for_a_key_frame(router: Router) -> None:
    (video,), client = await publish(router, ("video",))
    try:
        requests: list[bool] = []
        video.request_keyframe = lambda: requests.append(True)  # type: ignore[method-assign]
        subscriber = router.create_subscribe_transport({"participant": "b"},
                                                       on_offer=lambda sdp, tracks: None)
        consumer = subscriber.consume(video, {"track": "t"})
        assert requests == [True]  # added: the subscriber needs a key frame to start
        consumer.keyframe_requested()  # the subscriber's own PLI goes upstream
        assert requests == [True, True]
        assert consumer.app_data == {"track": "t"}
    finally:
        await client.close()


def router_tasks() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks()} & {"active-speakers", "bandwidth"}


async def test_periodic_loops_run_only_while_the_router_has_transports(
        loopback_ice: None) -> None:
    router = Router(CONFIG)
    try:
        assert router.idle and router_tasks() == set()  # an empty room costs no task
        first = router.create_subscribe_transport({"participant": "a"},
                                                  on_offer=lambda sdp, tracks: None)
        second = router.create_subscribe_transport({"participant": "b"},
                                                   on_offer=lambda sdp, tracks: None)
        assert not router.idle and router_tasks() == {"active-speakers", "bandwidth"}
        await router.close_transport(first)
        assert not router.idle  # one member left: still running
        await router.close_transport(second)
        assert router.idle and router_tasks() == set()
        again = router.create_subscribe_transport({"participant": "c"},
                                                  on_offer=lambda sdp, tracks: None)
        assert router_tasks() == {"active-speakers", "bandwidth"}  # a new member restarts them
        await router.close_transport(again)
        assert router.idle
    finally:
        await router.close()
    assert router.idle and router_tasks() == set()



async def test_a_connection_aiortc_closes_by_itself_is_reported_and_closes_cleanly(
        router: Router) -> None:
    """aiortc closes a peer connection by itself once its DTLS transports are closed (the
    client went away). The transport reports it like a failure, refuses new consumers, and
    its close still closes the consumers it had (or a publisher would feed a dead
    connection for as long as it stays)."""
    (video, audio), client = await publish(router, ("video", "audio"))
    try:
        subscriber = router.create_subscribe_transport({"participant": "b"},
                                                       on_offer=lambda sdp, t: None)
        lost: list[str] = []
        subscriber.on_failed = lambda failure: lost.append(failure.value)
        subscriber.consume(video, {})
        await subscriber.pc.close()  # what aiortc does when the remote DTLS closes
        assert lost == ["closed"]
        with pytest.raises(SfuError) as refused:
            subscriber.consume(audio, {})
        assert refused.value.code is SfuCode.CLOSED
        await asyncio.sleep(0.05)  # the negotiation loop meets the closed connection
        await router.close_transport(subscriber)
        assert video.consumers == set() and audio.consumers == set()
        assert router.counts() == RouterCounts(producers=2, consumers=0, peer_connections=1)
        assert lost == ["closed"]  # once, and not for our own close
    finally:
        await client.close()


def _rate_buckets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "RateBucket")


async def test_subscribe_m_lines_carry_no_receive_bandwidth_estimator(router: Router) -> None:
    """aiortc gives each video receiver a 1000-object rate counter; a subscribe m-line
    never receives, so the node's garbage collector must not walk one per subscriber."""
    (video,), client = await publish(router, ("video",))
    try:
        before = _rate_buckets()
        subscribers = [router.create_subscribe_transport({"participant": f"s{i}"},
                                                         on_offer=lambda sdp, tracks: None)
                       for i in range(5)]
        for subscriber in subscribers:
            subscriber.consume(video, {})
        assert _rate_buckets() == before
        receivers = [t.receiver for s in subscribers for t in s.pc.getTransceivers()]
        assert receivers and all(
            r._RTCRtpReceiver__remote_bitrate_estimator is None for r in receivers)
    finally:
        await client.close()
