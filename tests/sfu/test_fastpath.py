"""The forwarding fast path, sending to a real aiortc receiver over loopback DTLS-SRTP."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtp import RtcpSrPacket, RtpPacket

from sfu import fastpath
from sfu.encoded import EncodedFrame
from sfu.fastpath import (
    HISTORY,
    PACKET_MAX,
    RESEND_GAP,
    HeaderState,
    Outbound,
    TimestampLine,
    ntp_of,
    packets_of,
)
from sfu.hooks import depayloaded, install_assembler, send_pli, send_remb
from sfu.hooks_fastpath import NATIVE_LOOP, Gso
from sfu.stats import ForwardingStats

pytestmark = pytest.mark.usefixtures("loopback_ice")


@pytest.fixture(autouse=True, params=["compiled", "python"])
def send_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the compiled per-packet loop (sfu/_rtploop.c) and the Python one."""
    if request.param == "compiled" and NATIVE_LOOP is None:
        pytest.skip("sfu._rtploop was not built")
    if request.param == "python":
        monkeypatch.setattr(fastpath, "NATIVE_LOOP", None)
    return str(request.param)


class Recorder:
    """Stands where the receiving peer's jitter buffer was: keeps every RTP packet."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.arrived = asyncio.Event()

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.packets.append(packet)
        self.arrived.set()
        return False, None

    async def wait_for(self, count: int) -> list[RtpPacket]:
        async with asyncio.timeout(5):
            while len(self.packets) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return list(self.packets)


Report = tuple[float, int, float | None, tuple[int, int, int]]
"""(fraction lost, jitter, RTT, (SSRC, cumulative lost, highest sequence))."""


@dataclass
class Link:
    outbound: Outbound
    sender: RTCRtpSender
    receiver: RTCRtpReceiver
    recorder: Recorder
    stats: ForwardingStats
    keyframe_requests: list[int] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    srs: list[RtcpSrPacket] = field(default_factory=list)


@contextlib.asynccontextmanager
async def link(kind: str = "video") -> AsyncIterator[Link]:
    """An SFU-side peer connection whose one sender the fast path took over, connected
    to a plain aiortc peer that records what it receives."""
    sfu, client = RTCPeerConnection(), RTCPeerConnection()
    try:
        transceiver = sfu.addTransceiver(kind, direction="sendonly")
        caps = RTCRtpSender.getCapabilities(kind)
        wanted = ("vp8", "rtx") if kind == "video" else ("opus",)
        transceiver.setCodecPreferences(
            [c for c in caps.codecs if c.mimeType.split("/")[1].lower() in wanted])
        stats = ForwardingStats()
        requests: list[int] = []
        reports: list[Report] = []
        outbound = Outbound(transceiver.sender, kind, stats,
                            on_keyframe_request=lambda: requests.append(1),
                            on_report=lambda *r: reports.append(r))
        await sfu.setLocalDescription(await sfu.createOffer())
        await client.setRemoteDescription(sfu.localDescription)
        receiver = client.getTransceivers()[0].receiver
        recorder = Recorder()
        install_assembler(receiver, recorder)
        srs: list[RtcpSrPacket] = []
        original = receiver._handle_rtcp_packet

        async def tap(packet: Any) -> None:  # test tap on the client only
            if isinstance(packet, RtcpSrPacket):
                srs.append(packet)
            await original(packet)

        receiver._handle_rtcp_packet = tap  # type: ignore[method-assign]
        await client.setLocalDescription(await client.createAnswer())
        await sfu.setRemoteDescription(client.localDescription)
        probe = EncodedFrame(data=b"\x10" + bytes(10), timestamp=0, keyframe=True,
                             discontinuity=False)
        async with asyncio.timeout(10):
            while outbound._wire.route() is None or outbound.params is None:
                await asyncio.sleep(0.02)
        assert outbound.send_frame(probe)
        await recorder.wait_for(1)
        recorder.packets.clear()
        yield Link(outbound, transceiver.sender, receiver, recorder, stats, requests,
                   reports, srs)
    finally:
        await client.close()
        await sfu.close()


def frame(index: int, size: int = 3000, *, tid: int | None = None) -> EncodedFrame:
    data = bytes([0x10 if index == 0 else 0x11]) + index.to_bytes(4, "big") + \
        bytes(i & 0xFF for i in range(size))
    return EncodedFrame(data=data, timestamp=1000 + 3000 * index, keyframe=index == 0,
                        discontinuity=False, tid=tid, received_at=0.0)


def frames_of(packets: list[RtpPacket]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for p in packets:
        out[p.timestamp] = out.get(p.timestamp, b"") + depayloaded(p)
    return out


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "sendto-per-packet"])
async def test_frames_arrive_whole_with_continuous_numbering_and_extensions(
        gso: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Gso, "enabled", gso)
    batches = Gso.batches
    async with link() as ln:
        sent = [frame(i) for i in range(1, 6)]
        for f in sent:
            assert ln.outbound.send_frame(f)
        packets = await ln.recorder.wait_for(5 * 3)
        assert len(packets) == 15  # 3005 bytes: 3 packets of at most 1296 each
        assert max(len(p.payload) for p in packets) <= PACKET_MAX
        assert all(depayloaded(p) == vp8_depayload(p.payload) for p in packets)
        assert list(frames_of(packets).values()) == [f.data for f in sent]
        seqs = [p.sequence_number for p in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(15)]
        assert {p.ssrc for p in packets} == {ln.sender._ssrc}
        assert [p.marker for p in packets] == [0, 0, 1] * 5
        stamps = sorted(frames_of(packets))
        assert [b - a for a, b in itertools.pairwise(stamps)] == [3000] * 4
        assert {p.extensions.mid for p in packets} == {ln.outbound.params.mid}  # type: ignore[union-attr]
        assert all(p.extensions.abs_send_time is not None for p in packets)
        pids = {p.payload[2:4] for p in packets[:3]}
        assert len(pids) == 1 and packets[0].payload[0] & 0x10 and not packets[1].payload[0] & 0x10
        assert ln.stats.frames_out == 6 and ln.stats.packets_out == 16
        assert (Gso.batches > batches) == gso  # one sendmsg a frame, cut by the kernel
        assert (ln.stats.segmented_sends == 5) == gso  # counted for the node's metrics


async def test_a_key_frame_longer_than_one_gso_batch_arrives_whole() -> None:
    async with link() as ln:
        big = frame(1, 60_000)  # 47 packets: two sendmsg calls
        assert ln.outbound.send_frame(big)
        packets = await ln.recorder.wait_for(47)
        assert list(frames_of(packets).values()) == [big.data]


async def test_skipped_frames_leave_no_gap_in_sequence_numbers() -> None:
    async with link() as ln:
        for i in range(1, 9):
            if i % 2 == 0:  # a consumer dropping the upper temporal layer
                assert ln.outbound.send_frame(frame(i, 500))
        packets = await ln.recorder.wait_for(4)
        seqs = [p.sequence_number for p in packets]
        assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]
        pids = [int.from_bytes(p.payload[2:4], "big") & 0x7FFF for p in packets]
        assert pids == [(pids[0] + i) & 0x7FFF for i in range(4)]


async def test_a_nacked_packet_comes_back_as_rtx_and_is_unwrapped_by_the_receiver() -> None:
    async with link() as ln:
        assert ln.outbound.params is not None and ln.outbound.params.rtx_payload_type
        ln.outbound.send_frame(frame(1))
        first = await ln.recorder.wait_for(3)
        lost = first[1]
        assert ln.outbound.retransmit(lost.sequence_number)
        packets = await ln.recorder.wait_for(4)
        again = packets[3]
        assert (again.sequence_number, again.payload) == (lost.sequence_number, lost.payload)
        assert ln.stats.packets_retransmitted == 1
        assert not ln.outbound.retransmit((lost.sequence_number + 100) & 0xFFFF)
        for i in range(2, 2 + HISTORY // 3 + 1):  # history is a ring of HISTORY packets
            ln.outbound.send_frame(frame(i))
        assert not ln.outbound.retransmit(lost.sequence_number)


async def test_a_packet_nacked_again_within_the_round_trip_is_resent_once() -> None:
    async with link() as ln:
        ln.outbound.send_frame(frame(1))
        lost = (await ln.recorder.wait_for(3))[1]
        assert ln.outbound.retransmit(lost.sequence_number)
        assert not ln.outbound.retransmit(lost.sequence_number)  # a repeated NACK
        await asyncio.sleep(RESEND_GAP + 0.02)
        assert ln.outbound.retransmit(lost.sequence_number)  # the resend was lost too
        assert ln.stats.packets_retransmitted == 2


async def test_sender_reports_count_packets_and_octets_and_map_ntp_to_rtp() -> None:
    async with link() as ln:
        for i in range(1, 4):
            ln.outbound.send_frame(frame(i))
        await ln.recorder.wait_for(9)
        async with asyncio.timeout(5):
            while not ln.srs or ln.srs[-1].sender_info.packet_count < 10:
                await asyncio.sleep(0.05)
        info = ln.srs[-1].sender_info
        assert info.packet_count == 10  # the probe and three 3-packet frames
        assert info.octet_count == 11 + 4 + 3 * (3005 + 3 * 4)  # payloads with descriptors
        last = ln.outbound.header.last_timestamp
        # the RTP time of the report is the last frame's, advanced by wall time since
        advanced = (info.rtp_timestamp - last) & 0xFFFFFFFF
        assert 0 <= advanced < 90000 * 2
        assert ntp_of(0.0) >> 32 == 2208988800


async def test_pli_reaches_the_consumer_and_reports_carry_a_round_trip_time() -> None:
    async with link() as ln:
        await send_pli(ln.receiver, ln.sender._ssrc)
        async with asyncio.timeout(5):
            while not ln.keyframe_requests:
                await asyncio.sleep(0.02)
        async with asyncio.timeout(8):
            while not ln.reports or ln.reports[-1][2] is None:
                ln.outbound.send_frame(frame(1, 100))
                await asyncio.sleep(0.1)
        fraction, _, rtt, (ssrc, lost, highest) = ln.reports[-1]
        assert fraction == 0.0 and rtt is not None and 0 <= rtt < 1.0
        assert ssrc == ln.sender._ssrc and lost == 0 and highest > 0


async def test_the_subscribers_remb_is_kept_for_the_allocator() -> None:
    async with link() as ln:
        await send_remb(ln.receiver, ln.sender._ssrc, 345_000)
        async with asyncio.timeout(5):
            while ln.outbound.target_bitrate != 345_000:
                await asyncio.sleep(0.02)


async def test_audio_goes_out_one_packet_a_frame_with_the_marker_set() -> None:
    async with link("audio") as ln:
        for i in range(3):
            data = bytes([0xFC]) + bytes(60)
            ln.outbound.send_frame(EncodedFrame(data=data, timestamp=960 * i, keyframe=True,
                                                discontinuity=False))
        packets = await ln.recorder.wait_for(3)
        assert [p.payload for p in packets] == [bytes([0xFC]) + bytes(60)] * 3
        assert all(p.marker for p in packets)
        assert [p.timestamp - packets[0].timestamp for p in packets] == [0, 960, 1920]


async def test_a_stopped_outbound_sends_nothing_and_stop_is_idempotent() -> None:
    async with link() as ln:
        ln.outbound.stop()
        ln.outbound.stop()
        assert not ln.outbound.send_frame(frame(1))


async def test_a_packet_lost_on_the_way_is_nacked_by_the_receiver_and_resent() -> None:
    async with link() as ln:
        dtls = ln.receiver.transport
        original = dtls._handle_rtp_data
        dropped: list[bytes] = []

        async def lossy(data: bytes, arrival_time_ms: int) -> None:  # the client's side only
            if not dropped and data[1] & 0x7F == ln.outbound.params.payload_type \
                    and not data[1] & 0x80:  # type: ignore[union-attr]
                dropped.append(data)  # the first packet of the frame never arrives
                return
            await original(data, arrival_time_ms)

        dtls._handle_rtp_data = lossy
        ln.outbound.send_frame(frame(1))
        packets = await ln.recorder.wait_for(3)  # two at once, the lost one resent as RTX
        lost = int.from_bytes(dropped[0][2:4], "big")
        assert packets[-1].sequence_number == lost
        assert ln.stats.packets_retransmitted == 1
        assert frames_of(sorted(packets, key=lambda p: p.sequence_number)) == {
            packets[0].timestamp: frame(1).data}


async def test_reports_stop_when_the_connection_closes_under_the_sender() -> None:
    async with link() as ln:
        await ln.sender.transport.stop()  # the DTLS transport closes; the sender is not stopped
        async with asyncio.timeout(5):
            while not ln.outbound.stopped:
                await asyncio.sleep(0.05)
        assert ln.outbound._report_timer is None


def test_a_rebase_advances_the_timestamp_by_the_time_that_passed() -> None:
    state = HeaderState(ssrc=1, clock=90000)
    first = state.timestamp(10_000, at=100.0)
    assert state.timestamp(13_000, at=100.02) == (first + 3000) & 0xFFFFFFFF  # source spacing
    state.rebase()  # another source with an unrelated clock, whose key frame came late
    assert state.timestamp(999_999, at=100.52) == (first + 3000 + 45_000) & 0xFFFFFFFF
    assert state.timestamp(1_002_999, at=100.6) == (first + 51_000) & 0xFFFFFFFF
    state.rebase()  # a source whose frame arrives at once still moves the line forward
    assert state.timestamp(5, at=100.6) == (first + 51_001) & 0xFFFFFFFF


def test_a_rebase_onto_a_quick_key_frame_keeps_the_line_continuous() -> None:
    line = TimestampLine(clock=90000)
    line.last_timestamp = 0xFFFFFF00  # wraps
    assert line.timestamp(7, at=5.0) == 0xFFFFFF01  # the first frame: one tick on
    line.rebase()
    assert line.timestamp(123, at=5.033) == (0xFFFFFF01 + 2970) & 0xFFFFFFFF


def test_packets_of_a_source_left_behind_are_told_apart() -> None:
    state = HeaderState(ssrc=1, clock=90000)
    state.seq = 0xFFFE
    state.timestamp(0, at=1.0)
    old = [0xFFFE, 0xFFFF]
    state.seq = 1
    state.rebase()
    state.timestamp(50, at=1.1)
    assert all(state.before_source(seq) for seq in old)
    assert not state.before_source(1) and not state.before_source(2)


async def test_packets_sent_before_a_switch_are_not_resent() -> None:
    async with link() as ln:
        ln.outbound.send_frame(frame(1))
        lost = (await ln.recorder.wait_for(3))[1]
        ln.outbound.header.rebase()  # another layer starts, with its key frame
        ln.outbound.send_frame(frame(0))
        after = (await ln.recorder.wait_for(6))[4]
        assert not ln.outbound.retransmit(lost.sequence_number)
        assert ln.outbound.retransmit(after.sequence_number)
        assert ln.stats.packets_retransmitted == 1


def test_a_frame_is_cut_once_for_every_subscriber() -> None:
    f = frame(1, 5000)
    cut = packets_of(f, "video")
    assert packets_of(f, "video") is cut
    assert b"".join(cut.chunks) == f.data
    assert all(len(c) <= PACKET_MAX - 4 for c in cut.chunks)
    assert packets_of(frame(2), "video") is not cut


async def test_no_automatic_collection_runs_inside_a_fan_out() -> None:
    collections: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(note)
    try:
        assert gc.isenabled()
        packets_of(frame(40), "video")  # a fan-out begins
        assert not gc.isenabled()
        garbage = [[n] for n in range(3 * gc.get_threshold()[0])]  # past the threshold
        assert collections == []
        del garbage
        await asyncio.sleep(0)  # the callback holding the fan-out is over
        assert gc.isenabled()
        _ = [[n] for n in range(gc.get_threshold()[0])]
        assert collections  # the collection that fell due has run
    finally:
        gc.callbacks.remove(note)
        gc.enable()


def test_a_collector_turned_off_by_someone_else_stays_off() -> None:
    gc.disable()
    try:
        packets_of(frame(41), "video")
        assert not gc.isenabled()
    finally:
        gc.enable()
    packets_of(frame(42), "video")  # no running loop: nothing held
    assert gc.isenabled()


async def test_the_loop_chosen_is_the_one_that_sends(send_loop: str) -> None:
    async with link() as ln:
        assert ln.outbound._native is (send_loop == "compiled")
        ln.outbound.send_frame(frame(1))
        assert len(frames_of(await ln.recorder.wait_for(3))) == 1
