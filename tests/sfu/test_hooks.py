"""The aiortc internals sfu/hooks.py relies on are still where the SFU expects them."""

from __future__ import annotations

import asyncio
import inspect
from fractions import Fraction
from typing import Any

import aioice.ice
import aiortc
import av
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtcrtpreceiver import decoder_worker
from aiortc.rtp import RtpPacket

from sfu import hooks
from sfu.hooks import (
    HookError,
    depayloaded,
    install_assembler,
    redirect_keyframe_requests,
    restrict_host_addresses,
    send_nack,
    send_pli,
)
from sfu.sdp import filter_codecs

JITTER = "_RTCRtpReceiver__jitter_buffer"
DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
ENCODER = "_RTCRtpSender__encoder"
FORCE_KEYFRAME = "_RTCRtpSender__force_keyframe"
ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"


def test_aiortc_version_is_the_pinned_one() -> None:
    assert aiortc.__version__ == "1.16.0", (
        "aiortc changed: re-verify every hook point in sfu/hooks.py against the new "
        "sources (receiver jitter buffer, _send_keyframe, _send_rtcp_pli, sender packing, "
        "aioice host addresses), then update the pin and this test")


class Recorder:
    """Stands where aiortc's jitter buffer was; keeps what aiortc hands it."""

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []
        self.frames = asyncio.Event()

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        self.packets.append(packet)
        if sum(p.marker for p in self.packets) >= 10:
            self.frames.set()
        return False, None


async def test_receiver_jitter_buffer_is_replaced_per_receiver() -> None:
    pc = RTCPeerConnection()
    try:
        first = pc.addTransceiver("video").receiver
        second = pc.addTransceiver("video").receiver
        assert hasattr(first, JITTER) and callable(getattr(first, JITTER).add)
        assert callable(getattr(first, DECODER_QUEUE).put)
        original = getattr(second, JITTER), getattr(second, DECODER_QUEUE)
        recorder = Recorder()
        no_decode = install_assembler(first, recorder)
        assert getattr(first, JITTER) is recorder
        assert getattr(first, DECODER_QUEUE) is no_decode
        assert (getattr(second, JITTER), getattr(second, DECODER_QUEUE)) == original
    finally:
        await pc.close()


async def test_install_assembler_fails_loudly_when_the_attribute_is_gone() -> None:
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio").receiver
        delattr(receiver, JITTER)
        with pytest.raises(HookError):
            install_assembler(receiver, Recorder())
    finally:
        await pc.close()


def test_receiver_hands_each_depayloaded_packet_to_the_jitter_buffer() -> None:
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "self.__jitter_buffer.add(packet)" in source
    assert "packet._data = depayload(codec, packet.payload)" in source


def test_depayloaded_reads_what_the_receiver_stored_and_fails_loudly_without_it() -> None:
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=3000,
                       payload=b"\x10" + b"\x00" * 9)
    with pytest.raises(HookError):
        depayloaded(packet)
    packet._data = vp8_depayload(packet.payload)  # type: ignore[attr-defined]
    assert depayloaded(packet) == b"\x00" * 9


def test_decoder_thread_reads_its_queue_until_none() -> None:
    source = inspect.getsource(decoder_worker)
    assert "input_q.get()" in source and "if task is None:" in source
    receive = inspect.getsource(RTCRtpReceiver.receive)
    assert "self.__decoder_queue," in receive  # read when the thread starts, not before


def test_receiver_can_send_a_pli() -> None:
    assert inspect.iscoroutinefunction(RTCRtpReceiver._send_rtcp_pli)
    assert list(inspect.signature(RTCRtpReceiver._send_rtcp_pli).parameters) == [
        "self", "media_ssrc"]


def test_receiver_can_send_a_nack() -> None:
    assert inspect.iscoroutinefunction(RTCRtpReceiver._send_rtcp_nack)
    assert list(inspect.signature(RTCRtpReceiver._send_rtcp_nack).parameters) == [
        "self", "media_ssrc", "lost"]


def test_sender_packs_anything_that_is_not_a_frame() -> None:
    source = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "isinstance(data, Frame)" in source
    assert ".pack(data)" in source


async def test_sender_keeps_a_codec_object_set_before_it_starts() -> None:
    source = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "if self.__encoder is None:" in source
    rtcp = inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert 'hasattr(self.__encoder, "target_bitrate")' in rtcp  # REMB reaches the packer
    pc = RTCPeerConnection()
    try:
        assert getattr(pc.addTransceiver("video").sender, ENCODER) is None
    finally:
        await pc.close()


def test_sender_turns_pli_and_fir_into_send_keyframe() -> None:
    source = inspect.getsource(RTCRtpSender._handle_rtcp_packet)
    assert "RTCP_PSFB_PLI" in source and "RTCP_PSFB_FIR" in source
    assert "self._send_keyframe()" in source


async def test_keyframe_requests_are_redirected_on_one_sender_only() -> None:
    pc = RTCPeerConnection()
    try:
        redirected = pc.addTransceiver("video").sender
        other = pc.addTransceiver("video").sender
        calls: list[str] = []
        redirect_keyframe_requests(redirected, lambda: calls.append("upstream"))
        redirected._send_keyframe()
        assert calls == ["upstream"]
        assert not getattr(redirected, FORCE_KEYFRAME)
        other._send_keyframe()
        assert calls == ["upstream"]
        assert getattr(other, FORCE_KEYFRAME) is True
        assert "_send_keyframe" not in vars(other)
    finally:
        await pc.close()


def test_redirect_fails_loudly_without_send_keyframe() -> None:
    with pytest.raises(HookError):
        redirect_keyframe_requests(object(), lambda: None)  # type: ignore[arg-type]


def test_host_addresses_are_restricted_and_restored() -> None:
    original = hooks._original_host_addresses
    try:
        restrict_host_addresses(("127.0.0.1", "::1"))
        assert aioice.ice.get_host_addresses is not original
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True) == ["::1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == [
            "127.0.0.1", "::1"]
    finally:
        restrict_host_addresses(())
    assert aioice.ice.get_host_addresses is original
    assert "127.0.0.1" not in original(use_ipv4=True, use_ipv6=False)  # loopback skipped


def test_ice_gathering_looks_the_function_up_at_call_time() -> None:
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in source
    original = hooks._original_host_addresses
    assert (original.__module__, original.__qualname__) == ("aioice.ice", "get_host_addresses")


def vp8_bytes(index: int) -> bytes:
    """A self-identifying frame spanning several RTP packets."""
    tag = 0x10 if index == 0 else 0x11
    return bytes([tag]) + index.to_bytes(4, "big") + bytes(range(256)) * 10


class PacketTrack(MediaStreamTrack):
    """Gives the sender encoded VP8 frames as av.Packet, as the SFU's tracks do."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> Any:
        await asyncio.sleep(1 / 30)
        packet = av.Packet(vp8_bytes(self.sent))
        packet.pts = self.sent * 3000
        packet.time_base = Fraction(1, 90000)
        self.sent += 1
        return packet


async def test_packed_frames_reach_the_installed_assembler_and_pli_goes_upstream(
    loopback_ice: None,
) -> None:
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    recorder = Recorder()
    keyframe_requests = asyncio.Event()
    try:
        sender = publisher.addTrack(PacketTrack())
        redirect_keyframe_requests(sender, keyframe_requests.set)
        await publisher.setLocalDescription(await publisher.createOffer())
        offer = publisher.localDescription.sdp
        candidates = [ln for ln in offer.splitlines() if ln.startswith("a=candidate:")]
        assert candidates and all(" 127.0.0.1 " in ln for ln in candidates)
        await subscriber.setRemoteDescription(
            RTCSessionDescription(filter_codecs(offer), "offer"))
        receiver = subscriber.getTransceivers()[0].receiver
        no_decode = install_assembler(receiver, recorder)
        await subscriber.setLocalDescription(await subscriber.createAnswer())
        await publisher.setRemoteDescription(subscriber.localDescription)

        await asyncio.wait_for(recorder.frames.wait(), 10)
        packets = list(recorder.packets)
        assert all(depayloaded(p) == vp8_depayload(p.payload) for p in packets)
        frames: dict[int, bytes] = {}
        for p in packets:
            frames[p.timestamp] = frames.get(p.timestamp, b"") + depayloaded(p)
        complete = [frames[p.timestamp] for p in packets if p.marker]
        first = int.from_bytes(complete[0][1:5], "big")
        assert complete == [vp8_bytes(first + i) for i in range(len(complete))]
        assert max(len(p.payload) for p in packets) < len(vp8_bytes(0))  # really packetized
        assert no_decode.frames_offered == 0

        assert not keyframe_requests.is_set()
        await send_pli(receiver, packets[0].ssrc)
        await asyncio.wait_for(keyframe_requests.wait(), 5)
        assert not getattr(sender, FORCE_KEYFRAME)

        # A NACK for a packet already received brings it once more (the sender's history).
        again = packets[-1].sequence_number
        await send_nack(receiver, packets[-1].ssrc, [again])
        async with asyncio.timeout(5):
            while sum(p.sequence_number == again for p in recorder.packets) < 2:
                await asyncio.sleep(0.01)
    finally:
        await subscriber.close()
        await publisher.close()


async def test_a_video_receiver_has_a_bitrate_estimator_to_drop() -> None:
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("video").receiver
        assert getattr(receiver, ESTIMATOR) is not None
        hooks.drop_bitrate_estimator(receiver)
        assert getattr(receiver, ESTIMATOR) is None
        delattr(receiver, ESTIMATOR)
        with pytest.raises(HookError):
            hooks.drop_bitrate_estimator(receiver)
    finally:
        await pc.close()
