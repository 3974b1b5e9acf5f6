"""A media connection that ends by itself: the transport notices once, says why, and
refuses further use; closing it is what its owner does next."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aioice import stun
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from sfu.config import SfuConfig
from sfu.errors import SfuCode, SfuError
from sfu.hooks_consent import ConsentPolicy
from sfu.producer import Producer
from sfu.router import Router
from sfu.transport import (
    Failure,
    PublishTransport,
    SubscribeTransport,
    failure_of,
    read_client_description,
)
from tests.sfu.test_consent import _consent_running, _pair

CONFIG = SfuConfig(ice_addresses=("127.0.0.1",), consent_timeout=1.5)


@pytest.fixture
async def router(loopback_ice: None) -> AsyncIterator[Router]:
    router = Router(CONFIG)
    try:
        yield router
    finally:
        await router.close()


def stop_answering(pc: RTCPeerConnection) -> None:
    """The client's network path dies: it answers no STUN check and sends nothing."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport.iceGatherer._connection
        for protocol in connection._protocols:
            protocol.send_stun = lambda *args: None
            protocol.transport.sendto = lambda *args: None


async def connected(pc: RTCPeerConnection) -> None:
    for _ in range(200):
        if pc.connectionState == "connected":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not connected: {pc.connectionState}")


async def publishing(router: Router) -> tuple[PublishTransport, RTCPeerConnection,
                                              list[Failure], list[Producer]]:
    client = RTCPeerConnection()
    client.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "a"}, produced.append,
                                                may_publish=True)
    failures: list[Failure] = []
    transport.on_failed = failures.append
    answer = await transport.handle_offer(client.localDescription.sdp, {})
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await connected(transport.pc)
    return transport, client, failures, produced


async def wait_for(probe: Any, timeout: float) -> float:
    started = time.monotonic()
    while not probe():
        if time.monotonic() - started > timeout:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_expired_consent_is_reported_once_and_the_offer_is_refused_as_closed(
        router: Router) -> None:
    transport, client, failures, _ = await publishing(router)
    try:
        assert failure_of(transport.pc) is None
        stop_answering(client)
        took = await wait_for(lambda: failures, CONFIG.consent_timeout + 3.0)
        assert took >= CONFIG.consent_timeout - 0.2
        assert failures == [Failure.CONSENT_EXPIRED]
        assert transport.failure is Failure.CONSENT_EXPIRED
        await asyncio.sleep(0.5)  # the closing that follows reports nothing more
        assert failures == [Failure.CONSENT_EXPIRED]
        again = RTCPeerConnection()
        again.addTransceiver("video", direction="sendonly")
        await again.setLocalDescription(await again.createOffer())
        with pytest.raises(SfuError) as err:  # not "invalid_sdp: … signaling state closed"
            await transport.handle_offer(again.localDescription.sdp, {})
        assert err.value.code is SfuCode.CLOSED
        await again.close()
        with pytest.raises(SfuError):
            await transport.add_candidate({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})
    finally:
        await router.close_transport(transport)
        await client.close()
    assert failures == [Failure.CONSENT_EXPIRED]


async def test_a_client_that_closes_its_end_is_reported_as_closed(router: Router) -> None:
    transport, client, failures, produced = await publishing(router)
    try:
        await client.close()  # DTLS close_notify
        await wait_for(lambda: failures, 5.0)
        assert failures == [Failure.CLOSED]
    finally:
        await router.close_transport(transport)
    assert produced and all(p.closed for p in produced)


async def test_closing_a_transport_is_not_a_failure(router: Router) -> None:
    transport, client, failures, _ = await publishing(router)
    await router.close_transport(transport)
    await asyncio.sleep(0.3)
    await client.close()
    assert failures == [] and transport.failure is None


async def test_an_offer_from_a_new_client_connection_is_told_apart(router: Router) -> None:
    transport, client, _, _ = await publishing(router)
    try:
        client.addTransceiver("audio", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        same = await read_client_description(client.localDescription.sdp, CONFIG)
        other_pc = RTCPeerConnection()
        other_pc.addTransceiver("video", direction="sendonly")
        await other_pc.setLocalDescription(await other_pc.createOffer())
        other = await read_client_description(other_pc.localDescription.sdp, CONFIG)
        await other_pc.close()
        assert not transport.from_another_peer(same)
        assert transport.from_another_peer(other)
    finally:
        await router.close_transport(transport)
        await client.close()


async def test_a_failed_subscribe_connection_offers_nothing_more_and_closes_cleanly(
        router: Router) -> None:
    offers: list[str] = []
    transport = router.create_subscribe_transport(
        {"participant": "b"}, on_offer=lambda sdp, tracks: offers.append(sdp))
    assert isinstance(transport, SubscribeTransport)
    failures: list[Failure] = []
    transport.on_failed = failures.append
    client = RTCPeerConnection()
    try:
        await wait_for(lambda: offers, 5.0)
        await client.setRemoteDescription(RTCSessionDescription(sdp=offers[0], type="offer"))
        await client.setLocalDescription(await client.createAnswer())
        await transport.set_answer(client.localDescription.sdp)
        await connected(transport.pc)
        assert client.sctp is not None
        connection = client.sctp.transport.transport.iceGatherer._connection
        for protocol in connection._protocols:
            protocol.send_stun = lambda *args: None
            protocol.transport.sendto = lambda *args: None
        await wait_for(lambda: failures, CONFIG.consent_timeout + 3.0)
        assert failures == [Failure.CONSENT_EXPIRED]
        producers, publisher = await publish_one(router)
        with pytest.raises(SfuError) as err:
            transport.consume(producers[0], {})
        assert err.value.code is SfuCode.CLOSED
        await asyncio.sleep(0.3)
        assert len(offers) == 1
        await router.close_transport(publisher)
    finally:
        await router.close_transport(transport)  # raises if the negotiation task failed
        await client.close()


async def publish_one(router: Router) -> tuple[list[Producer], PublishTransport]:
    client = RTCPeerConnection()
    client.addTransceiver("video", direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "c"}, produced.append,
                                                may_publish=True)
    await transport.handle_offer(client.localDescription.sdp, {})
    await client.close()
    return produced, transport


def test_a_short_consent_window_checks_more_often() -> None:
    assert ConsentPolicy.for_window(30.0) == ConsentPolicy()
    short = ConsentPolicy.for_window(5.0)
    assert short.timeout == 5.0 and short.interval < short.timeout / 4
    with pytest.raises(ValueError, match="consent_timeout"):
        SfuConfig(consent_timeout=0.5).check()


@pytest.mark.usefixtures("loopback_ice")
async def test_consent_expires_at_the_window_not_when_a_check_gives_up() -> None:
    """A check is retransmitted for 15.5 s; consent still ends when the window does."""
    policy = ConsentPolicy(interval=0.3, timeout=1.0)
    node, client = await _pair(policy)
    try:
        for protocol in client._protocols:
            original = protocol.send_stun
            protocol.send_stun = lambda message, addr, original=original: (
                None if message.message_class == stun.Class.RESPONSE
                else original(message, addr))
        started = time.monotonic()
        while _consent_running(node) and time.monotonic() - started < 6:
            await asyncio.sleep(0.05)
        assert not node._nominated
        assert time.monotonic() - started < policy.timeout + 0.6
    finally:
        await asyncio.gather(node.close(), client.close())



async def test_a_close_while_the_offer_is_answered_leaves_no_producer(router: Router) -> None:
    client = RTCPeerConnection()
    client.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await client.setLocalDescription(await client.createOffer())
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "a"}, produced.append,
                                                may_publish=True)
    answering = asyncio.ensure_future(transport.handle_offer(client.localDescription.sdp, {}))
    for _ in range(1000):
        if transport.pc.iceGatheringState == "gathering":
            break
        await asyncio.sleep(0)
    assert transport.pc.iceGatheringState == "gathering"
    await transport.close()
    with pytest.raises(SfuError) as refused:
        await answering
    assert refused.value.code is SfuCode.CLOSED
    assert produced == [] and transport.producers == {}
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("producer-")]
    await client.close()
