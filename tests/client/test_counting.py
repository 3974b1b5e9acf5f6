"""Frame counters fed with real aiortc RTP packets, depayloaded as aiortc does.

The packets and the feeding are those of the SFU's assembler tests (tests/sfu/test_frames.py).
"""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from client import counting
from client.counting import AudioFrameCounter, VideoFrameCounter
from tests.sfu.test_frames import Clock, feed, packetize, stream, vp8_frame


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(counting, "time", fake)
    return fake


class Frames:
    """Records what a counter reports: one ``keyframe`` flag per counted frame."""

    def __init__(self) -> None:
        self.keyframes: list[bool] = []

    def __call__(self, keyframe: bool) -> None:
        self.keyframes.append(keyframe)


def test_each_whole_frame_counts_once_with_its_keyframe_flag() -> None:
    frames = Frames()
    counter = VideoFrameCounter(frames)
    _, packets = stream(20)
    assert max(len(p) for p in packets) == 3
    assert not any(feed(counter, (p for frame in packets for p in frame)))
    assert frames.keyframes == [True] + [False] * 19


def test_a_frame_counts_when_its_last_missing_packet_arrives() -> None:
    frames = Frames()
    counter = VideoFrameCounter(frames)
    _, packets = stream(3)
    feed(counter, packets[0])
    a, b, c = packets[2]
    feed(counter, [c, a])  # out of order, one missing
    assert len(frames.keyframes) == 1
    feed(counter, [b])
    assert len(frames.keyframes) == 2
    feed(counter, reversed(packets[1]))
    assert frames.keyframes == [True, False, False]


def test_retransmissions_of_a_counted_frame_do_not_count_again() -> None:
    frames = Frames()
    counter = VideoFrameCounter(frames)
    _, packets = stream(4)
    feed(counter, (p for frame in packets for p in frame))
    feed(counter, packets[1] + packets[3])
    assert len(frames.keyframes) == 4


@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
def test_an_incomplete_frame_never_counts_and_is_given_up_with_a_pli(
        clock: Clock, position: int) -> None:
    frames = Frames()
    counter = VideoFrameCounter(frames, frame_wait=0.05)
    _, packets = stream(12)
    assert len(packets[5]) == 3
    lost = packets[5][position]
    plis = feed(counter, (p for frame in packets for p in frame if p is not lost), clock, 0.01)
    assert len(frames.keyframes) == 11
    assert plis.count(True) == 1 and counter.frames_given_up == 1


def test_sequence_numbers_wrapping_at_65535_still_complete_frames() -> None:
    frames = Frames()
    counter = VideoFrameCounter(frames)
    _, packets = stream(6, seq=65530)
    assert any(p.sequence_number < 10 for frame in packets for p in frame)
    feed(counter, (p for frame in packets for p in frame))
    assert frames.keyframes == [True] + [False] * 5


def test_a_keyframe_later_in_the_stream_is_flagged() -> None:
    frames = Frames()
    counter = VideoFrameCounter(frames)
    delta = packetize(vp8_frame(0, 2500), seq=100, timestamp=3000)
    key = packetize(vp8_frame(1, 2500, key=True), seq=103, timestamp=6000)
    feed(counter, delta + key)
    assert frames.keyframes == [False, True]


def opus(seq: int, payload: bytes = b"\xfc\x01\x02") -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq & 0xFFFF, timestamp=seq * 960,
                       ssrc=7, payload=payload)
    packet._data = payload  # type: ignore[attr-defined]
    return packet


def test_audio_counts_new_packets_not_duplicates_late_or_empty_ones() -> None:
    frames = Frames()
    counter = AudioFrameCounter(frames)
    feed(counter, [opus(65534), opus(65535), opus(65535), opus(0), opus(65533), opus(2),
                   opus(3, b"")])
    assert frames.keyframes == [True, True, True, True]  # 65534, 65535, 0, 2
