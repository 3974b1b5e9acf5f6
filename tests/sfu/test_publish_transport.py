"""The publish transport's own checks (defence in depth under the conference layer)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from sfu.config import SfuConfig
from sfu.errors import SfuCode, SfuError
from sfu.producer import Producer
from sfu.router import Router
from sfu.sdp import Description

CONFIG = SfuConfig(ice_addresses=("127.0.0.1",), max_tracks_per_connection=2)


@pytest.fixture
async def router(loopback_ice: None) -> AsyncIterator[Router]:
    router = Router(CONFIG)
    try:
        yield router
    finally:
        await router.close()


async def offer(kinds: tuple[str, ...], disguise: bool) -> str:
    pc = RTCPeerConnection()
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
    finally:
        await pc.close()
    if disguise:  # what Parley's own reader once took for inactive
        sdp = sdp.replace("a=sendonly\r\n", "a=sendonly\r\nx=inactive\r\n")
        sdp = sdp.replace("m=audio 9 ", "m=audio 0 ").replace("m=video 9 ", "m=video 0 ")
    return sdp


@pytest.mark.parametrize("disguise", [False, True])
async def test_a_transport_that_may_not_publish_produces_nothing(
        router: Router, disguise: bool) -> None:
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "ghost"}, produced.append,
                                                may_publish=False)
    with pytest.raises(SfuError) as err:
        await transport.handle_offer(await offer(("video",), disguise), {})
    assert err.value.code is SfuCode.PERMISSION_DENIED
    assert produced == [] and transport.producers == {} and router.producers == {}
    assert transport.pc.remoteDescription is None  # never applied


@pytest.mark.parametrize("disguise", [False, True])
async def test_disguised_sections_cannot_pass_the_track_cap(
        router: Router, disguise: bool) -> None:
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "a"}, produced.append,
                                                may_publish=True)
    with pytest.raises(SfuError) as err:
        await transport.handle_offer(await offer(("video",) * 4 + ("audio",) * 4, disguise), {})
    assert err.value.code is SfuCode.TOO_MANY_TRACKS
    assert produced == [] and transport.pc.remoteDescription is None
    await transport.handle_offer(await offer(("video", "audio"), disguise), {})
    assert sorted(p.kind for p in produced) == ["audio", "video"]


async def test_offer_aiortc_refuses_half_way_leaves_a_fresh_usable_connection(
        router: Router, caplog: pytest.LogCaptureFixture) -> None:
    """Without its m=video line, the video attributes (a second mid) fall into the audio
    section: aiortc bundles it onto a transport no section has, then fails in
    createAnswer. The SDP reader refuses that text; handed over directly, the transport
    replaces its peer connection, takes a correct offer and closes without an error."""
    caplog.set_level(logging.ERROR)
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "a"}, produced.append,
                                                may_publish=True)
    broken = re.sub(r"m=video [^\r]*\r\n", "", await offer(("audio", "video"), False))
    old = transport.pc
    with pytest.raises(SfuError) as err:
        await transport.handle_offer(Description(sdp=broken, sections=()), {})
    assert err.value.code is SfuCode.INVALID_SDP
    assert transport.pc is not old and transport.pc.remoteDescription is None
    assert old.signalingState == "closed"
    assert all(t.receiver.transport is None or t.receiver.transport.state == "closed"
               for t in old.getTransceivers())
    with pytest.raises(SfuError) as err:  # nothing to add a candidate to yet: a code
        await transport.add_candidate({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})
    assert err.value.code is SfuCode.UNKNOWN_CONNECTION

    client = RTCPeerConnection()
    try:
        client.addTransceiver("audio", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        answer = await transport.handle_offer(str(client.localDescription.sdp), {})
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert [p.kind for p in produced] == ["audio"]
        for _ in range(250):
            if transport.connection_state == "connected":
                break
            await asyncio.sleep(0.02)
        assert transport.connection_state == "connected"
    finally:
        await client.close()
    await transport.close()
    await asyncio.sleep(0.1)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_producer_that_fails_to_close_does_not_keep_the_connection_open(
        router: Router) -> None:
    produced: list[Producer] = []
    transport = router.create_publish_transport({"participant": "a"}, produced.append,
                                                may_publish=True)
    client = RTCPeerConnection()
    try:
        client.addTransceiver("video", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        answer = await transport.handle_offer(str(client.localDescription.sdp), {})
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        [producer] = produced

        async def fails() -> None:
            raise RuntimeError("a stall reported for a track the room no longer has")

        producer.close = fails  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await transport.close()
        assert transport.pc.signalingState == "closed"
        assert all(t.receiver.transport.transport.state == "closed"  # its socket too
                   for t in transport.pc.getTransceivers())
    finally:
        await client.close()
