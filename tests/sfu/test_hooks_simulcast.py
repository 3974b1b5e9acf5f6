"""Receiving simulcast: the aiortc internals sfu/hooks_simulcast.py relies on, and what
the demultiplexer does with real aiortc packets (serialized and parsed with the header
extensions the SFU answers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpTransceiver
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, wrap_rtx

from sfu.hooks import HookError
from sfu.hooks_simulcast import (
    SimulcastDemux,
    accept_rid_extensions,
    simulcast_demux,
)
from sfu.simulcast import REPAIRED_RID_URI, RID_URI, SimulcastOffer

CODECS = "_RTCRtpReceiver__codecs"
STREAMS = "_RTCRtpReceiver__remote_streams"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
RTX = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=97,
                            parameters={"apt": 96})
OFFER = SimulcastOffer(rids=("q", "h", "f"), rid_extension=10, repaired_extension=11)
EXTENSIONS = [RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
              RTCRtpHeaderExtensionParameters(id=10, uri=RID_URI),
              RTCRtpHeaderExtensionParameters(id=11, uri=REPAIRED_RID_URI)]
KEYFRAME = bytes([0x10]) + bytes([0x50, 0x01, 0x00, 0x9D, 0x01, 0x2A, 0xF0, 0x00, 0x87, 0x00])
"""A VP8 payload descriptor (S bit) and the start of a 240x135 key frame."""


class Received:
    def __init__(self) -> None:
        self.packets: list[Any] = []

    def __call__(self, packet: Any) -> None:
        self.packets.append(packet)


@pytest.fixture
async def receiving() -> AsyncIterator[tuple[RTCRtpTransceiver, RTCRtpReceiver]]:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    transceiver._set_mid("1")  # type: ignore[attr-defined]
    receiver = transceiver.receiver
    setattr(receiver, CODECS, {96: VP8, 97: RTX})
    try:
        yield transceiver, receiver
    finally:
        await pc.close()


def wire(packet: RtpPacket) -> RtpPacket:
    """Serialize and parse again, as aiortc's DTLS transport does with a configured map."""
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=EXTENSIONS))
    return RtpPacket.parse(packet.serialize(extensions), extensions)


def packet(ssrc: int, seq: int, *, rid: str | None = None, mid: str | None = "1",
           rrid: str | None = None, payload: bytes = KEYFRAME, pt: int = 96) -> RtpPacket:
    p = RtpPacket(payload_type=pt, sequence_number=seq, timestamp=seq * 3000, ssrc=ssrc,
                  marker=1, payload=payload)
    p.extensions.mid = mid
    p.extensions.rtp_stream_id = rid
    p.extensions.repaired_rtp_stream_id = rrid
    return wire(p)


def test_rid_extensions_are_negotiated_on_the_transceiver(
        receiving: tuple[RTCRtpTransceiver, RTCRtpReceiver]) -> None:
    transceiver, _ = receiving
    transceiver._headerExtensions = [  # type: ignore[attr-defined]
        RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI)]
    accept_rid_extensions(transceiver, OFFER)
    accept_rid_extensions(transceiver, OFFER)  # idempotent
    got = [(e.id, e.uri) for e in transceiver._headerExtensions]  # type: ignore[attr-defined]
    assert got == [(1, MID_URI), (10, RID_URI), (11, REPAIRED_RID_URI)]


def test_aiortc_parses_the_rid_extensions_the_sfu_negotiates() -> None:
    parsed = packet(1, 1, rid="h", rrid="q")
    assert (parsed.extensions.mid, parsed.extensions.rtp_stream_id,
            parsed.extensions.repaired_rtp_stream_id) == ("1", "h", "q")


async def test_each_encoding_gets_its_own_packets_and_learns_its_ssrc(
        receiving: tuple[RTCRtpTransceiver, RTCRtpReceiver]) -> None:
    _, receiver = receiving
    demux = simulcast_demux(receiver.transport)
    assert simulcast_demux(receiver.transport) is demux  # one per DTLS transport
    sinks = [Received(), Received(), Received()]
    encodings = demux.add("1", receiver, OFFER.rids, sinks)
    router: Any = receiver.transport._rtp_router
    for i, rid in enumerate(OFFER.rids):
        first = packet(100 + i, 1000, rid=rid)
        assert router.route_rtp(first) is encodings[i]
        await encodings[i]._handle_rtp_packet(first, arrival_time_ms=0)
    # once learned, packets without MID or RID go by SSRC
    later = packet(101, 1001, mid=None)
    assert router.route_rtp(later) is encodings[1]
    await encodings[1]._handle_rtp_packet(later, arrival_time_ms=0)
    assert [len(s.packets) for s in sinks] == [1, 2, 1]
    assert [e.ssrc for e in encodings] == [100, 101, 102]
    assert sinks[0].packets[0]._data == KEYFRAME[1:]  # depayloaded as aiortc does
    assert router.ssrc_table[101] is receiver  # the publisher's sender reports reach it
    # stats for aiortc's receiver reports, per encoding SSRC
    assert set(getattr(receiver, STREAMS)) == {100, 101, 102}


async def test_retransmissions_are_unwrapped_into_their_encoding_and_gaps_are_nacked(
        receiving: tuple[RTCRtpTransceiver, RTCRtpReceiver]) -> None:
    _, receiver = receiving
    demux = simulcast_demux(receiver.transport)
    sink = Received()
    [low, _high] = demux.add("1", receiver, ("q", "f"), [sink, Received()])
    nacks: list[tuple[int, list[int]]] = []

    async def record(ssrc: int, lost: list[int]) -> None:
        nacks.append((ssrc, lost))

    receiver._send_rtcp_nack = record  # type: ignore[method-assign]
    router: Any = receiver.transport._rtp_router
    for seq in (10, 11, 14):
        p = packet(200, seq, rid="q")
        await router.route_rtp(p)._handle_rtp_packet(p, arrival_time_ms=0)
    assert nacks == [(200, [12, 13])]
    original = RtpPacket(payload_type=96, sequence_number=12, timestamp=36000, ssrc=200,
                         marker=1, payload=KEYFRAME)
    rtx = wrap_rtx(original, payload_type=97, sequence_number=5, ssrc=201)
    rtx.extensions.repaired_rtp_stream_id = "q"
    rtx = wire(rtx)
    assert router.route_rtp(rtx) is low
    await low._handle_rtp_packet(rtx, arrival_time_ms=0)
    repaired = sink.packets[-1]
    assert (repaired.ssrc, repaired.sequence_number, repaired.payload_type) == (200, 12, 96)
    assert low.rtx_ssrc == 201 and low.retransmissions == 1


async def test_other_m_lines_keep_aiortc_routing_and_unknown_rids_are_dropped(
        receiving: tuple[RTCRtpTransceiver, RTCRtpReceiver]) -> None:
    _, receiver = receiving
    router: Any = receiver.transport._rtp_router
    other = object()
    router.ssrc_table[300] = other
    router.payload_type_table[96] = {other}
    demux = simulcast_demux(receiver.transport)
    demux.add("1", receiver, OFFER.rids, [Received(), Received(), Received()])
    assert router.route_rtp(packet(300, 1, mid="2")) is other  # not simulcast: aiortc's
    assert router.route_rtp(packet(301, 1, rid="x")) is None
    assert demux.dropped == 1
    demux.remove("1")
    demux.remove("1")  # idempotent
    assert router.route_rtp(packet(302, 1, rid="q")) is other  # back to aiortc's routing


def test_a_transport_without_the_router_refuses_the_hook() -> None:
    with pytest.raises(HookError):
        SimulcastDemux(object())  # type: ignore[arg-type]
