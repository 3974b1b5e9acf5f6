"""Frame assemblers fed with real aiortc RTP packets, depayloaded as aiortc does."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

import pytest
from aiortc.codecs import depayload
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu import frames
from sfu.encoded import EncodedFrame
from sfu.frames import AudioAssembler, VideoAssembler

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                             payloadType=111)
FPS = 30
TICKS = 90000 // FPS


class Clock:
    """Stands in for the ``time`` module inside sfu.frames only."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(frames, "time", fake)
    # every test's streams start with a process that has received nothing yet
    monkeypatch.setattr(frames.PROCESS_ARRIVALS, "_last", float("-inf"))
    monkeypatch.setattr(frames.PROCESS_ARRIVALS, "watch_until", float("-inf"))
    return fake


def vp8_frame(index: int, size: int, key: bool = False) -> bytes:
    """Bytes shaped like a VP8 frame: the P bit of the first byte marks inter frames."""
    body = bytes((index * 31 + i) & 0xFF for i in range(size - 1))
    return bytes([0x10 if key else 0x11]) + body


def packetize(frame: bytes, *, seq: int, timestamp: int, tid: tuple[int, int] | None = None,
              mtu: int = 1000) -> list[RtpPacket]:
    chunks = [frame[i:i + mtu] for i in range(0, len(frame), mtu)]
    packets = []
    for n, chunk in enumerate(chunks):
        payload = bytes(VpxPayloadDescriptor(partition_start=int(n == 0), partition_id=0,
                                             picture_id=seq & 0x7FFF, tid=tid)) + chunk
        packet = RtpPacket(payload_type=96, marker=int(n == len(chunks) - 1),
                           sequence_number=(seq + n) & 0xFFFF,
                           timestamp=timestamp & 0xFFFFFFFF, ssrc=4242, payload=payload)
        packet._data = depayload(VP8, payload)  # type: ignore[attr-defined]
        packets.append(packet)
    return packets


def stream(count: int, *, seq: int = 1000, timestamp: int = 5000,
           tid: tuple[int, int] | None = None) -> tuple[list[bytes], list[list[RtpPacket]]]:
    """``count`` frames of 1, 2, 3, 1, 2, 3… packets; the first is a key frame."""
    data, packets = [], []
    for i in range(count):
        frame = vp8_frame(i, size=(600, 1500, 2500)[i % 3], key=i == 0)
        pkts = packetize(frame, seq=seq, timestamp=timestamp + i * TICKS, tid=tid)
        seq += len(pkts)
        data.append(frame)
        packets.append(pkts)
    return data, packets


def feed(assembler: VideoAssembler | AudioAssembler, packets: Iterable[RtpPacket],
         clock: Clock | None = None, step: float = 0.0) -> list[bool]:
    plis = []
    for packet in packets:
        if clock is not None:
            clock.now += step
        pli, frame = assembler.add(packet)
        assert frame is None  # frames go to the sink, never back to aiortc
        plis.append(pli)
    return plis


def video(frame_wait: float = 0.3) -> tuple[VideoAssembler, list[EncodedFrame]]:
    out: list[EncodedFrame] = []
    return VideoAssembler(out.append, frame_wait=frame_wait), out


def test_in_order_frames_are_emitted_whole_with_keyframe_flags() -> None:
    assembler, out = video()
    data, packets = stream(20)
    assert max(len(p) for p in packets) == 3
    plis = feed(assembler, (p for frame in packets for p in frame))
    assert not any(plis)
    assert [f.data for f in out] == data
    assert [f.keyframe for f in out] == [True] + [False] * 19
    assert [f.timestamp for f in out] == [5000 + i * TICKS for i in range(20)]
    assert not any(f.discontinuity for f in out)
    assert assembler.ssrc == 4242 and assembler.frames_dropped == 0


def test_each_frame_is_emitted_when_its_last_packet_arrives() -> None:
    assembler, out = video()
    data, packets = stream(5)
    for i, frame in enumerate(packets):
        feed(assembler, frame[:-1])
        assert len(out) == i
        feed(assembler, frame[-1:])
        assert len(out) == i + 1 and out[-1].data == data[i]


def test_temporal_layer_id_comes_from_the_first_packet() -> None:
    assembler, out = video()
    _, packets = stream(3, tid=(2, 1))
    feed(assembler, (p for frame in packets for p in frame))
    assert [f.tid for f in out] == [2, 2, 2]


def test_packets_reordered_within_a_frame_give_one_correct_frame() -> None:
    assembler, out = video()
    data, packets = stream(3)
    feed(assembler, packets[0])
    feed(assembler, list(reversed(packets[1])))
    a, b, c = packets[2]
    feed(assembler, [c, a, b])
    assert [f.data for f in out] == data
    assert not any(f.discontinuity for f in out)


def test_retransmission_within_frame_wait_completes_the_frame(clock: Clock) -> None:
    assembler, out = video(frame_wait=0.3)
    data, packets = stream(8)
    lost = packets[4][1]
    flat = [p for frame in packets for p in frame if p is not lost]
    plis = feed(assembler, flat[: flat.index(packets[4][0]) + 1], clock, 0.01)
    plis += feed(assembler, flat[flat.index(packets[4][0]) + 1:], clock, 0.01)
    assert len(out) == 4  # frames after the gap wait for it, in order
    plis += feed(assembler, [lost], clock, 0.01)
    assert not any(plis)
    assert [f.data for f in out] == data
    assert not any(f.discontinuity for f in out)
    assert assembler.frames_dropped == 0


@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
def test_permanently_lost_packet_drops_only_its_frame(clock: Clock, position: int) -> None:
    assembler, out = video(frame_wait=0.05)
    data, packets = stream(12)
    assert len(packets[5]) == 3
    lost = packets[5][position]
    plis: list[bool] = []
    for frame in packets:
        clock.now += 1 / FPS
        plis += feed(assembler, [p for p in frame if p is not lost])
    assert plis.count(True) == 1, "one key-frame request when giving up"
    assert [f.data for f in out] == data[:5] + data[6:]
    assert [f.discontinuity for f in out] == [False] * 5 + [True] + [False] * 5
    assert assembler.frames_dropped == 1
    # The lost packet turning up after the give-up changes nothing.
    assert feed(assembler, [lost]) == [False]
    assert len(out) == 11


def test_give_up_happens_only_after_frame_wait(clock: Clock) -> None:
    assembler, out = video(frame_wait=0.05)
    data, packets = stream(4)
    feed(assembler, packets[0])
    feed(assembler, packets[1][1:])  # first packet of frame 1 never comes
    clock.now += 0.04
    assert feed(assembler, packets[2]) == [False] * len(packets[2])
    assert len(out) == 1
    clock.now += 0.02
    plis = feed(assembler, packets[3])
    assert plis[0] is True
    assert [f.data for f in out] == [data[0], data[2], data[3]]
    assert out[1].discontinuity and not out[2].discontinuity


def test_give_up_works_on_the_real_clock() -> None:
    assembler, out = video(frame_wait=0.05)
    data, packets = stream(4)
    feed(assembler, packets[0])
    feed(assembler, packets[1][:-1])  # marker packet lost
    feed(assembler, packets[2])
    assert len(out) == 1
    time.sleep(0.06)
    assert feed(assembler, packets[3])[0] is True
    assert [f.data for f in out] == [data[0], data[2], data[3]]


def test_one_lost_packet_in_300_does_not_stall_the_stream(clock: Clock) -> None:
    wait = 0.3
    assembler, out = video(frame_wait=wait)
    data, packets = stream(150)
    flat = [p for frame in packets for p in frame]
    assert len(flat) >= 300
    lost = {flat[97].sequence_number, flat[250].sequence_number}
    damaged = [i for i, frame in enumerate(packets)
               if any(p.sequence_number in lost for p in frame)]
    emitted_at: dict[int, float] = {}
    assembler._sink = lambda f: (out.append(f), emitted_at.setdefault(f.timestamp, clock.now))
    arrived_at: dict[int, float] = {}
    for frame in packets:
        clock.now += 1 / FPS
        feed(assembler, [p for p in frame if p.sequence_number not in lost])
        arrived_at[frame[0].timestamp] = clock.now
    expected = [d for i, d in enumerate(data) if i not in damaged]
    assert [f.data for f in out] == expected
    assert assembler.frames_dropped == len(damaged) == 2
    held = [emitted_at[ts] - arrived_at[ts] for ts in emitted_at]
    assert max(held) <= wait + 2 / FPS
    # After the last give-up, every frame leaves as soon as it is complete.
    last_gap = packets[damaged[-1]][0].timestamp
    late = [ts for ts in emitted_at if ts > last_gap + 12 * TICKS]
    assert late and all(emitted_at[ts] == arrived_at[ts] for ts in late)
    assert sum(f.discontinuity for f in out) == 2


def test_sequence_numbers_wrap_from_65535_to_0() -> None:
    assembler, out = video()
    data, packets = stream(10, seq=65530)
    flat = [p for frame in packets for p in frame]
    assert flat[0].sequence_number == 65530 and 0 in [p.sequence_number for p in flat]
    wrap = [p.sequence_number for p in flat].index(0)
    flat[wrap - 1], flat[wrap] = flat[wrap], flat[wrap - 1]  # 0 arrives before 65535
    feed(assembler, flat)
    assert [f.data for f in out] == data


def test_timestamps_wrap_too() -> None:
    assembler, out = video()
    data, packets = stream(4, timestamp=0xFFFFFFFF - TICKS)
    feed(assembler, (p for frame in packets for p in frame))
    assert [f.data for f in out] == data
    assert out[2].timestamp < out[1].timestamp


def test_stream_joined_mid_frame_resyncs_at_next_frame_start() -> None:
    assembler, out = video()
    data, packets = stream(5)
    assert len(packets[2]) > 1
    plis = feed(assembler, packets[2][1:])
    assert out == [] and not any(plis)
    for frame in packets[3:]:
        feed(assembler, frame)
    assert [f.data for f in out] == data[3:]


def test_late_and_duplicate_packets_are_dropped() -> None:
    assembler, out = video()
    data, packets = stream(6)
    feed(assembler, packets[0])
    feed(assembler, packets[1][:1] + packets[1][:1] + packets[1][1:])  # duplicate in flight
    feed(assembler, [p for frame in packets[2:] for p in frame])
    assert feed(assembler, packets[1] + packets[4]) == [False] * (len(packets[1]) + len(packets[4]))
    assert [f.data for f in out] == data


def test_randomly_reordered_stream_without_loss_is_complete() -> None:
    assembler, out = video()
    data, packets = stream(40)
    flat = [p for frame in packets for p in frame]
    rng = random.Random(7)
    for i in range(0, len(flat) - 3, 3):  # swap within small windows, as networks do
        window = flat[i:i + 3]
        rng.shuffle(window)
        flat[i:i + 3] = window
    feed(assembler, flat)
    assert [f.data for f in out] == data


def opus_packets(seqs: Iterable[int], *, level: int | None = None) -> list[RtpPacket]:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(
        id=1, uri="urn:ietf:params:rtp-hdrext:ssrc-audio-level")]))
    out = []
    for seq in seqs:
        sent = RtpPacket(payload_type=111, marker=1, sequence_number=seq & 0xFFFF,
                         timestamp=seq * 960, ssrc=77, payload=b"opus-%d" % seq)
        if level is not None:
            sent.extensions.audio_level = (True, level)
        packet = RtpPacket.parse(sent.serialize(ext_map), ext_map)  # as received
        packet._data = depayload(OPUS, packet.payload)  # type: ignore[attr-defined]
        out.append(packet)
    return out


def audio() -> tuple[AudioAssembler, list[EncodedFrame], list[int]]:
    out: list[EncodedFrame] = []
    levels: list[int] = []
    return AudioAssembler(out.append, levels.append), out, levels


def test_audio_packets_are_emitted_once_each_in_order() -> None:
    assembler, out, _ = audio()
    assert feed(assembler, opus_packets(range(10))) == [False] * 10
    assert [f.data for f in out] == [b"opus-%d" % i for i in range(10)]
    assert [f.timestamp for f in out] == [i * 960 for i in range(10)]
    assert all(f.keyframe and not f.discontinuity for f in out)
    assert assembler.ssrc == 77


def test_late_and_duplicate_audio_packets_are_dropped() -> None:
    assembler, out, _ = audio()
    feed(assembler, opus_packets([0, 1, 3, 2, 3, 1, 4]))
    assert [f.data for f in out] == [b"opus-0", b"opus-1", b"opus-3", b"opus-4"]


def test_audio_sequence_numbers_wrap() -> None:
    assembler, out, _ = audio()
    feed(assembler, opus_packets([65534, 65535, 65536, 65537]))
    assert len(out) == 4


def test_audio_level_is_reported_from_the_header_extension() -> None:
    assembler, out, levels = audio()
    feed(assembler, opus_packets([0, 1], level=6))
    feed(assembler, opus_packets([2]))  # no extension: nothing reported
    feed(assembler, opus_packets([3], level=127))
    feed(assembler, opus_packets([1], level=0))  # late: ignored
    assert levels == [6, 6, 127]
    assert len(out) == 4


def test_empty_audio_packet_is_not_a_frame() -> None:
    assembler, out, _ = audio()
    packet = opus_packets([0])[0]
    packet._data = b""  # type: ignore[attr-defined]
    feed(assembler, [packet])
    assert out == []


# -- media that arrives seconds late (a node resuming after it was stopped) -------------
def test_a_frozen_nodes_backlog_is_dropped_and_video_restarts_from_a_key_frame(
        clock: Clock) -> None:
    """30 frames play in real time; then the node stops for 5 s. Its socket kept the
    first second of what was sent meanwhile (frames 30-59) and dropped the rest (60-179);
    all of that is read at once on resume, followed by current frames (180 on, the
    publisher's answer to the key-frame request being 182)."""
    assembler, out = video()
    data, packets = stream(200)
    packets[182] = packetize(vp8_frame(182, 2500, key=True), seq=packets[182][0].sequence_number,
                             timestamp=packets[182][0].timestamp)
    plis: list[bool] = []
    for frame in packets[:30]:
        clock.now += 1 / FPS
        plis += feed(assembler, frame)
    clock.now += 150 / FPS  # stopped: frames 30-179 were sent meanwhile
    plis += feed(assembler, (p for frame in packets[30:60] for p in frame))  # the backlog
    assert plis.count(True) == 1, "one key-frame request, at the first late packet"
    assert len(out) == 30
    for frame in packets[180:]:
        plis += feed(assembler, frame)
        clock.now += 1 / FPS
    assert plis.count(True) == 1
    assert [f.data for f in out] == data[:30] + data[180:182] + [vp8_frame(182, 2500, key=True)] \
        + data[183:]
    assert [f.discontinuity for f in out[29:32]] == [False, True, False]
    assert out[32].keyframe  # 182: consumers hold from the discontinuity to here
    assert assembler.late.late_packets == sum(len(f) for f in packets[30:60])


def test_jitter_and_late_retransmissions_are_not_mistaken_for_a_frozen_node(
        clock: Clock) -> None:
    """Arrival times wander by ±0.2 s and every tenth packet comes 0.5 s late (a
    retransmission on a slow path): none of it counts as late."""
    assembler, out = video()
    _, packets = stream(300)
    rng = random.Random(3)
    arrivals = []
    for i, frame in enumerate(packets):
        for j, packet in enumerate(frame):
            delay = rng.uniform(0.0, 0.4) + (0.5 if (i + j) % 10 == 0 else 0.0)
            arrivals.append((i / FPS + delay, packet))
    for at, packet in sorted(arrivals, key=lambda a: a[0]):
        clock.now = 1000.0 + at
        feed(assembler, [packet])
    assert assembler.late.late_packets == 0
    assert len(out) > 250


def test_a_lasting_longer_path_delay_is_accepted_after_the_window(clock: Clock) -> None:
    """The publisher's path gets 1.5 s slower for good: a burst is dropped, then the new
    delay is the norm and frames flow again."""
    filt = frames.LateFilter(90000, limit=1.0, window=2.0)
    verdicts = []
    for i in range(600):
        media = i / FPS
        clock.now = 1000.0 + media + (1.5 if i >= 100 else 0.0)
        verdicts.append(filt.late(int(media * 90000) & 0xFFFFFFFF, clock.now))
    assert not any(verdicts[:100])
    assert all(verdicts[100:110])
    assert not any(verdicts[100 + 2 * FPS + 1:])


def test_a_timestamp_jumping_back_restarts_the_late_filter() -> None:
    filt = frames.LateFilter(90000)
    for i in range(100):
        assert not filt.late(900_000 + i * TICKS, 10.0 + i / FPS)
    assert not filt.late(1000, 10.0 + 100 / FPS)  # a new timeline, 10 s back
    assert not filt.late(1000 + TICKS, 10.0 + 101 / FPS)


def test_a_frozen_nodes_audio_backlog_is_dropped(clock: Clock) -> None:
    assembler, out, _ = audio()
    for seq in range(50):  # 20 ms packets in real time
        clock.now += 0.02
        feed(assembler, opus_packets([seq]))
    clock.now += 5.0
    feed(assembler, opus_packets(range(50, 100)))  # the backlog, all at once
    for seq in range(300, 320):
        feed(assembler, opus_packets([seq]))
        clock.now += 0.02
    assert [f.timestamp // 960 for f in out] == list(range(50)) + list(range(300, 320))


def test_current_packets_overtaking_late_ones_are_kept(clock: Clock) -> None:
    """A publisher that queued its packets while the node was stopped sends the queue
    (seconds old) and then current frames, with no gap in sequence numbers; one current
    packet overtakes the last late ones. Every current frame is forwarded, once."""
    assembler, out = video()
    data, packets = stream(60)
    seq = packets[-1][-1].sequence_number + 1
    current, current_data = [], []
    for i in range(180, 200):  # encoded after the stop: their timestamps are current
        frame = vp8_frame(i, 1500, key=i == 180)
        current.append(packetize(frame, seq=seq, timestamp=5000 + i * TICKS))
        current_data.append(frame)
        seq += len(current[-1])
    for frame in packets[:30]:
        clock.now += 1 / FPS
        feed(assembler, frame)
    clock.now += 150 / FPS
    queued = [p for frame in packets[30:] for p in frame]
    overtaking = current[1][1]
    arrivals = queued[:-2] + [overtaking] + queued[-2:] + [
        p for frame in current for p in frame if p is not overtaking]
    plis = feed(assembler, arrivals)
    assert plis.count(True) == 1
    assert [f.data for f in out] == data[:30] + current_data
    assert out[30].discontinuity and out[30].keyframe
    assert assembler.late.late_packets == len(queued)


def test_a_packet_still_missing_after_the_retry_interval_is_nacked_again(clock: Clock) -> None:
    """aiortc NACKs a gap once; when neither that NACK nor its answer gets through, the
    assembler asks again every NACK_RETRY until the frame is complete or given up."""
    assembler, out = video(frame_wait=0.3)
    data, packets = stream(20)
    lost = packets[4][1]
    asked: list[tuple[float, list[int]]] = []
    started = clock.now
    for frame in packets[:14]:  # frame_wait runs out with frame 14
        clock.now += 1 / FPS
        feed(assembler, [p for p in frame if p is not lost])
        if nacks := assembler.take_nacks():
            asked.append((round(clock.now - started, 3), nacks))
    assert [n for _, n in asked] == [[lost.sequence_number]] * 2
    first, second = (t for t, _ in asked)
    assert second - first >= frames.NACK_RETRY
    feed(assembler, [lost])  # the second answer gets through, before frame_wait
    for frame in packets[14:]:
        feed(assembler, frame)
    assert assembler.take_nacks() == []
    assert [f.data for f in out] == data and assembler.frames_dropped == 0


def test_nacks_name_every_missing_packet_with_16_bit_sequence_numbers(clock: Clock) -> None:
    assembler, _ = video()
    _, packets = stream(12, seq=65530)
    flat = [p for frame in packets for p in frame]
    lost = {flat[3].sequence_number, flat[6].sequence_number}
    assert lost == {65533, 0}
    for packet in flat:
        clock.now += 0.02
        if packet.sequence_number not in lost:
            feed(assembler, [packet])
        if nacks := assembler.take_nacks():
            assert set(nacks) <= lost and all(0 <= n <= 0xFFFF for n in nacks)
            return
    raise AssertionError("no NACK within the stream")


def test_a_frame_paced_out_slowly_after_a_quiet_spell_is_not_late() -> None:
    """A screen share quiet for 3 s sends one large frame whose packets are paced over
    1.5 s, then frames in real time: nothing of it is late (a frame is judged by its
    first packet, which was on time)."""
    filt = frames.LateFilter(90000)
    for i in range(30):
        assert not filt.late(i * TICKS, 10.0 + i / FPS)
    big, at = 120 * TICKS, 10.0 + 120 / FPS  # sent on time after 3 s of nothing
    verdicts = [filt.late(big, at + k * 0.015) for k in range(100)]  # paced over 1.5 s
    verdicts += [filt.late((121 + i) * TICKS, at + 1.5 + i / FPS) for i in range(30)]
    assert not any(verdicts) and filt.late_packets == 0


def test_steady_late_arrival_without_a_silence_is_never_dropped() -> None:
    """Packets drifting 2 s later over 10 s (a queue filling on a slow path): no
    silence, so nothing is judged late."""
    filt = frames.LateFilter(90000)
    verdicts = [filt.late(i * TICKS, 10.0 + i / FPS + i * 0.2 / FPS) for i in range(300)]
    assert not any(verdicts)


def test_one_quiet_stream_among_busy_ones_is_never_judged_late() -> None:
    """A static screen share sends nothing for 3 s, then a frame whose timestamp is
    old (a repeated frame): the camera kept the process busy meanwhile, so the node
    was not stopped and nothing is dropped. Had every stream been quiet, it would be."""
    arrivals = frames.Arrivals()
    screen = frames.LateFilter(90000, arrivals=arrivals)
    camera = frames.LateFilter(90000, arrivals=arrivals)
    for i in range(30):
        assert not screen.late(i * TICKS, 10.0 + i / FPS)
    for i in range(30, 130):
        assert not camera.late(i * TICKS, 10.0 + i / FPS)
    assert not screen.late(31 * TICKS, 10.0 + 130 / FPS)  # 3 s late, after 3 s of quiet
    alone = frames.LateFilter(90000, arrivals=frames.Arrivals())
    for i in range(30):
        alone.late(i * TICKS, 10.0 + i / FPS)
    assert alone.late(31 * TICKS, 10.0 + 130 / FPS)
