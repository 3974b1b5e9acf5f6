"""Light receiving: RTP headers counted right (extensions, padding, VP8 descriptors, gaps)."""

from __future__ import annotations

import time

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from client.light import KEY_BYTES, LightReceiver, SendLog, frame_key, payload_kinds

SDP = """v=0
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=rtpmap:111 opus/48000/2
m=video 9 UDP/TLS/RTP/SAVPF 97 98
a=rtpmap:97 VP8/90000
a=rtpmap:98 rtx/90000
"""


def _vp8(seq: int, ts: int, *, start: bool, marker: bool, data: bytes,
         picture_id: bool = True) -> bytes:
    # X=1 with a 15-bit PictureID, or a bare one-byte descriptor
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x81, 0x23]) if picture_id else \
        bytes([0x10 if start else 0x00])
    packet = RtpPacket(payload_type=97, sequence_number=seq, timestamp=ts, ssrc=42,
                       marker=marker, payload=descriptor + data)
    packet.extensions.mid = "1"  # a header extension the parser must skip
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(
        id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid")]))
    return packet.serialize(extensions)


def test_payload_kinds_leave_out_retransmissions() -> None:
    assert payload_kinds(SDP) == {111: "audio", 97: "video"}


def test_frames_complete_only_when_every_packet_came() -> None:
    light = LightReceiver()
    light.kinds = payload_kinds(SDP)
    frame = bytes(range(40))
    # frame 1: three packets, all there
    light.on_rtp(_vp8(10, 3000, start=True, marker=False, data=frame))
    light.on_rtp(_vp8(11, 3000, start=False, marker=False, data=b"x" * 10, picture_id=False))
    light.on_rtp(_vp8(12, 3000, start=False, marker=True, data=b"y" * 10))
    # frame 2: its middle packet (13 + 1) is lost
    light.on_rtp(_vp8(13, 6000, start=True, marker=False, data=b"z" * 30))
    light.on_rtp(_vp8(15, 6000, start=False, marker=True, data=b"w" * 10))
    light.on_rtp(_vp8(15, 6000, start=False, marker=True, data=b"w" * 10))  # duplicate
    video = light.totals()["video"]
    assert video == {"packets": 5, "bytes": 4 + 40 + 1 + 10 + 4 + 10 + 4 + 30 + 4 + 10,
                     "frames": 2, "complete": 1, "lost": 1}
    samples = light.take_samples()
    assert [key for key, _ in samples] == [frame[:KEY_BYTES].hex()] == [frame_key(frame)]
    assert light.take_samples() == []


def test_padding_only_and_unknown_payload_types_are_not_media() -> None:
    light = LightReceiver()
    light.kinds = payload_kinds(SDP)
    rtx = RtpPacket(payload_type=98, sequence_number=1, ssrc=7, payload=b"\0\1abc")
    light.on_rtp(rtx.serialize())
    padded = RtpPacket(payload_type=97, sequence_number=2, ssrc=42)
    padded.padding_size = 20
    light.on_rtp(padded.serialize())
    assert light.other_packets == 2 and light.streams == {}


def test_send_log_pairs_a_frame_with_its_latest_send_before_arrival() -> None:
    log = SendLog()
    log(b"A" * 30)
    sent = time.monotonic()
    assert log.latencies([(frame_key(b"A" * 30), sent + 0.010),
                          (frame_key(b"B" * 30), sent + 0.010),
                          (frame_key(b"A" * 30), sent - 1.0),
                          (frame_key(b"A" * 30), sent + 5.0)]) == [
        pytest.approx(0.010, abs=0.002)]
