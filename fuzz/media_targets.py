"""Fuzz targets for what a client sends on its media connections: the VP8 payload
descriptor, frame reassembly, RTCP, and trickled ICE candidates.

Same contract as fuzz/targets.py: an exception other than the expected refusal, or a
broken invariant, is a bug.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import aioice.ice
import aioice.mdns
import pylibsrtp
from aiortc import RTCRtpSender
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtcicetransport import candidate_to_aioice
from aiortc.rtp import RtcpPacket

from fuzz.seeds import REPORT_SSRC
from sfu.bandwidth import BandwidthConfig, quality_of
from sfu.config import SfuConfig
from sfu.errors import SfuCode, SfuError
from sfu.fastpath import FramePackets
from sfu.frames import MAX_PACKETS, EncodedFrame, VideoAssembler
from sfu.hooks import install_packer, redirect_keyframe_requests, tap_sender_rtcp
from sfu.hooks_fastpath import NATIVE_LOOP, Protector, protector
from sfu.linkstats import SubscriberLink
from sfu.transport import _add_candidate
from sfu.vp8 import is_keyframe, parse_descriptor

OUTBOUND = pylibsrtp.Policy.SSRC_ANY_OUTBOUND
INBOUND = pylibsrtp.Policy.SSRC_ANY_INBOUND
_runner: asyncio.Runner | None = None


def _run(coro: Any) -> Any:
    """Run a coroutine on one event loop kept for the whole fuzzing process."""
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()
        atexit.register(_runner.close)
    return _runner.run(coro)


def reference_descriptor(p: bytes) -> tuple[bool, int | None, int] | None:
    """RFC 7741 section 4.2, written out again: (start, tid, size), None if truncated."""
    if not p:
        return None
    size, tid = 1, None
    if p[0] & 0x80:
        if len(p) < 2:
            return None
        i, l_bit, t, k = p[1] & 0x80, p[1] & 0x40, p[1] & 0x20, p[1] & 0x10
        size = 2
        if i:
            if len(p) < 3:
                return None
            size += 2 if p[2] & 0x80 else 1
        if l_bit:
            size += 1
        if t or k:
            if len(p) <= size:
                return None
            tid = p[size] >> 6 if t else None
            size += 1
    if len(p) < size:
        return None
    return bool(p[0] & 0x10) and p[0] & 0x07 == 0, tid, size


def vp8(data: bytes) -> None:
    """``parse_descriptor`` agrees with the RFC and with aiortc's depayloader."""
    desc = parse_descriptor(data)
    got = None if desc is None else (desc.start, desc.tid, desc.size)
    assert got == reference_descriptor(data), (got, reference_descriptor(data))
    try:
        _, rest = VpxPayloadDescriptor.parse(data)
    except ValueError:
        assert desc is None, "aiortc finds the descriptor truncated"
        return
    assert desc is not None and desc.size == len(data) - len(rest), (desc, len(rest))
    is_keyframe(rest)


@dataclass
class _Packet:
    """The RtpPacket fields the assembler reads (``_data``: depayloaded by aiortc)."""

    ssrc: int
    sequence_number: int
    timestamp: int
    marker: bool
    payload: bytes
    _data: bytes


def packets_of(data: bytes) -> tuple[float, list[_Packet]]:
    """Byte 0 bit 0: frame wait 0 s (else unbounded). Then records of sequence-number
    delta (signed byte), flags (bit 0 marker, bit 1 next timestamp), length, payload.
    Packets aiortc cannot depayload are dropped before the assembler, as aiortc does."""
    if not data:
        return 0.0, []
    wait = 0.0 if data[0] & 1 else 1e9
    seq, ts, pos, out = 1000, 90000, 1, []
    while pos + 3 <= len(data):
        delta = int.from_bytes(data[pos:pos + 1], "big", signed=True)
        flags, length = data[pos + 1], data[pos + 2]
        payload = data[pos + 3:pos + 3 + length]
        pos += 3 + length
        seq = (seq + delta) & 0xFFFF
        if flags & 2:
            ts = (ts + 3000) & 0xFFFFFFFF
        try:
            _, depayloaded = VpxPayloadDescriptor.parse(payload)
        except ValueError:
            continue
        out.append(_Packet(ssrc=1, sequence_number=seq, timestamp=ts, marker=bool(flags & 1),
                           payload=payload, _data=depayloaded))
    return wait, out


def vp8_frames(data: bytes) -> None:
    """``VideoAssembler``: any packet order gives whole, non-empty frames in bounded memory."""
    wait, packets = packets_of(data)
    frames: list[EncodedFrame] = []
    assembler = VideoAssembler(frames.append, wait)
    for packet in packets:
        assembler.add(packet)
        assert len(assembler._packets) <= MAX_PACKETS + 1, len(assembler._packets)
    for frame in frames:
        assert frame.data and frame.keyframe == is_keyframe(frame.data)


@dataclass
class _DtlsTransport:
    """What an RTCRtpSender reads of its transport while it handles RTCP."""

    state: str = "connected"
    _stats_id: str = "transport"


async def _feed_rtcp(kind: str, packets: list[Any], send_rate: float) -> None:
    config = BandwidthConfig()
    link = SubscriberLink.create(config)
    sender = RTCRtpSender(kind, cast(Any, _DtlsTransport()))
    sender._ssrc = REPORT_SSRC
    packer = install_packer(sender, kind)
    keyframe_requests: list[int] = []
    redirect_keyframe_requests(sender, lambda: keyframe_requests.append(1))
    tap_sender_rtcp(sender, link.on_report)
    router = RtpRouter()  # routes as the DTLS transport does: it reads REMBs too
    router.register_sender(sender, REPORT_SSRC)
    for packet in packets:
        for recipient in router.route_rtcp(packet):
            await recipient._handle_rtcp_packet(packet)
    if link.fraction_lost is not None:
        assert 0.0 <= link.fraction_lost <= 1.0, link.fraction_lost
    estimate = link.estimator.update(1.0, fraction_lost=link.fraction_lost, rtt=link.rtt,
                                     remb=packer.target_bitrate, send_rate=send_rate)
    assert math.isfinite(estimate), estimate
    assert config.min_bitrate <= estimate <= config.max_bitrate, estimate
    quality_of(link.estimator.loss, link.estimator.rtt, estimate, config)


def rtcp(data: bytes) -> None:
    """RTCP from a subscriber, parsed and routed by aiortc, through the SFU's sender hooks
    (report tap, REMB guard, key-frame redirect) into its bandwidth estimate. Byte 0: bit 0 video,
    the rest the link's send rate; the remaining bytes are one compound packet."""
    if not data:
        return
    try:
        packets = RtcpPacket.parse(data[1:])
    except ValueError:
        return
    kind = "video" if data[0] & 1 else "audio"
    _run(_feed_rtcp(kind, packets, float(data[0] >> 1) * 20_000))


class _IceTransport:
    """Checks a remote candidate as aioice does before using it, without a network."""

    def __init__(self) -> None:
        self.added: list[Any] = []

    async def addRemoteCandidate(self, candidate: Any) -> None:
        remote = candidate_to_aioice(candidate)
        if not aioice.mdns.is_mdns_hostname(remote.host):
            aioice.ice.validate_remote_candidate(remote, remote.host)
        self.added.append(remote)


def candidate_of(data: bytes) -> dict[str, Any] | None:
    """Byte 0 picks the shape of the ``candidate`` object (RTCIceCandidate.toJSON(),
    with odd sdpMid / sdpMLineIndex values); the rest is its candidate line."""
    if not data:
        return None
    line = data[1:].decode("utf-8", "replace")
    odd: list[Any] = [None, "0", 0, -1, 2**70, 1.5, [], {}, "x" * 300, True]
    return {"candidate": line, "sdpMid": odd[data[0] % len(odd)],
            "sdpMLineIndex": odd[(data[0] >> 4) % len(odd)]}


_SFU = SfuConfig()


def candidate(data: bytes) -> None:
    """A trickled candidate: used, or refused with invalid_candidate."""
    try:
        _run(_add_candidate(_IceTransport(), candidate_of(data), _SFU))
    except SfuError as err:
        assert err.code is SfuCode.INVALID_CANDIDATE, err.code


_SRTP_KEY = bytes(range(30))
_HEADER = struct.Struct("!BBHII")


def _srtp(direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(policy=pylibsrtp.Policy(key=_SRTP_KEY, ssrc_type=direction))


def send_loop(data: bytes) -> None:
    """A publisher's frame as the fast path sends it to one subscriber: cut as
    sfu/fastpath.py cuts it, then written and protected by the compiled loop
    (sfu/_rtploop.c) and by the Python loop. Both must give the same bytes, and a
    receiving session must read back each packet's header, prefix and chunk. Byte 0:
    bit 0 video; bytes 1-2 the first sequence number; the rest the frame (audio: at
    most 1,200 bytes, one packet)."""
    if len(data) < 4 or NATIVE_LOOP is None:
        return
    kind = "video" if data[0] & 1 else "audio"
    seq = int.from_bytes(data[1:3], "big")
    payload = data[3:] if kind == "video" else data[3:1203]
    chunks = FramePackets(EncodedFrame(data=payload, timestamp=0, keyframe=False,
                                       discontinuity=False), kind).chunks
    first, rest = (b"\x90\x80\x81\x02", b"\x80\x80\x81\x02") if kind == "video" \
        else (b"", b"")
    compiled, python = protector(_srtp(OUTBOUND)), protector(_srtp(OUTBOUND))
    assert isinstance(compiled, Protector)
    history: list[Any] = [None] * 16
    out, segment = compiled.protect_frame(0x80, 96, seq, 90000, 42, first, rest, chunks,
                                          history, "frame")
    last = len(chunks) - 1
    plain = [_HEADER.pack(0x80, 96 | 0x80 if i == last else 96, (seq + i) & 0xFFFF, 90000, 42)
             + (rest if i else first) + chunk for i, chunk in enumerate(chunks)]
    expected = [python(p) for p in plain]
    assert out == b"".join(expected), "the compiled loop wrote other bytes"
    assert segment == len(expected[0]) and all(len(p) == segment for p in expected[:-1])
    assert history.count("frame") == min(len(chunks), len(history))
    receiver = _srtp(INBOUND)
    packets = [out[pos:pos + segment] for pos in range(0, len(out), segment)]
    assert [receiver.unprotect(p) for p in packets] == plain


TARGETS: dict[str, Callable[[bytes], None]] = {
    "vp8": vp8,
    "vp8_frames": vp8_frames,
    "rtcp": rtcp,
    "candidate": candidate,
    "send_loop": send_loop,
}
