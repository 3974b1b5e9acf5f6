"""The aiortc internals client/hooks.py relies on are still where the client expects them.

That a PLI or FIR calls ``RTCRtpSender._send_keyframe`` is checked once, for the SFU
(tests/sfu/test_hooks.py), against the same pinned aiortc.
"""

from __future__ import annotations

import asyncio
import inspect

import pytest
from aioice.ice import Connection, StunProtocol
from aiortc import RTCDtlsTransport, RTCIceTransport, RTCPeerConnection, RTCRtpReceiver

from client.counting import AudioFrameCounter
from client.hooks import (
    HookError,
    divert_rtp,
    end_consent_of_closed_connections,
    redirect_keyframe_requests,
    replace_jitter_buffer,
)
from client.light import LightReceiver
from client.media import EncodedTrack, encode_video
from sfu.hooks import restrict_host_addresses
from tests.sfu.test_consent import close_while_connecting, prepared_pair

JITTER = "_RTCRtpReceiver__jitter_buffer"
FORCE_KEYFRAME = "_RTCRtpSender__force_keyframe"


def test_receiver_hands_each_depayloaded_packet_to_the_jitter_buffer() -> None:
    source = inspect.getsource(RTCRtpReceiver._handle_rtp_packet)
    assert "packet._data = depayload(codec, packet.payload)" in source
    assert "pli_flag, encoded_frame = self.__jitter_buffer.add(packet)" in source
    assert "if encoded_frame is not None and self.__decoder_thread:" in source


async def test_jitter_buffer_is_replaced_on_one_receiver_only() -> None:
    pc = RTCPeerConnection()
    try:
        counted = pc.addTransceiver("audio").receiver
        other = pc.addTransceiver("audio").receiver
        original = getattr(other, JITTER)
        counter = AudioFrameCounter(lambda keyframe: None)
        replace_jitter_buffer(counted, counter)
        assert getattr(counted, JITTER) is counter
        assert getattr(other, JITTER) is original
    finally:
        await pc.close()


async def test_replacing_fails_loudly_when_the_attribute_is_gone() -> None:
    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("video").receiver
        delattr(receiver, JITTER)
        with pytest.raises(HookError):
            replace_jitter_buffer(receiver, AudioFrameCounter(lambda keyframe: None))
    finally:
        await pc.close()


async def test_keyframe_requests_are_redirected_on_one_sender_only() -> None:
    pc = RTCPeerConnection()
    try:
        redirected = pc.addTransceiver("video").sender
        other = pc.addTransceiver("video").sender
        calls: list[str] = []
        redirect_keyframe_requests(redirected, lambda: calls.append("restart"))
        redirected._send_keyframe()
        assert calls == ["restart"] and not getattr(redirected, FORCE_KEYFRAME)
        other._send_keyframe()
        assert calls == ["restart"] and getattr(other, FORCE_KEYFRAME) is True
    finally:
        await pc.close()


def test_redirect_fails_loudly_without_send_keyframe() -> None:
    with pytest.raises(HookError):
        redirect_keyframe_requests(object(), lambda: None)  # type: ignore[arg-type]


def test_dtls_transport_dispatches_each_unprotected_rtp_packet() -> None:
    source = inspect.getsource(RTCDtlsTransport._recv_next)
    assert "data = self._rx_srtp.unprotect(data)" in source
    assert "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)" in source
    assert inspect.iscoroutinefunction(RTCDtlsTransport._handle_rtp_data)
    assert "self._rx_srtp = Session(rx_policy)" in inspect.getsource(RTCDtlsTransport)


def test_ice_connection_queues_every_datagram_that_is_not_stun() -> None:
    received = inspect.getsource(StunProtocol.datagram_received)
    assert "message = stun.parse_message(data)" in received
    assert "self.receiver.data_received(data, self.local_candidate.component)" in received
    assert "self._protocols: list[StunProtocol] = []" in inspect.getsource(Connection)
    assert "self._queue.put_nowait((data, component))" in \
        inspect.getsource(Connection.data_received)
    assert "self._connection = gatherer._connection" in inspect.getsource(RTCIceTransport)


async def test_diverted_rtp_reaches_the_callback_and_not_the_receiver() -> None:
    """Two real peers: every VP8 frame sent is counted from headers; the track gets nothing."""
    sender_pc, receiver_pc = RTCPeerConnection(), RTCPeerConnection()
    track = EncodedTrack(encode_video(seconds=0.5, width=160, height=120, bitrate=200_000))
    light = LightReceiver()
    try:
        sender_pc.addTrack(track)
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        light.attach(receiver_pc)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        remote = receiver_pc.getReceivers()[0].track
        async with asyncio.timeout(10):
            while light.totals().get("video", {}).get("complete", 0) < 20:
                await asyncio.sleep(0.05)
        video = light.totals()["video"]
        assert video["lost"] == 0 and video["frames"] >= video["complete"] >= 20
        assert video["packets"] >= video["frames"] and light.take_samples()
        assert remote._queue.empty()  # aiortc's receiver never saw a packet
        connection = receiver_pc.getTransceivers()[0].receiver.transport.transport._connection
        assert connection._protocols and all(
            getattr(p.datagram_received, "stun_skipped", False) for p in connection._protocols)
        light.attach(receiver_pc)  # again (a re-offer): still counted once
        before = light.totals()["video"]["packets"]
        await asyncio.sleep(0.3)
        after = light.totals()["video"]
        assert after["packets"] > before and after["lost"] == 0
    finally:
        await sender_pc.close()
        await receiver_pc.close()


def test_diverting_fails_loudly_when_the_dispatch_method_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCDtlsTransport, "_handle_rtp_data")
    with pytest.raises(HookError):
        divert_rtp(object(), lambda data: None)  # type: ignore[arg-type]


async def test_aioice_s_consent_loop_does_not_outlive_a_connection_closed_while_connecting(
) -> None:
    end_consent_of_closed_connections()
    end_consent_of_closed_connections()  # idempotent: wrapped once
    assert not hasattr(inspect.unwrap(Connection.query_consent), "_parley_guarded")
    restrict_host_addresses(("127.0.0.1",))
    try:
        closed, other = await prepared_pair(None)  # aioice's own loop
        await close_while_connecting(closed, other)
        await asyncio.sleep(0.1)
        task = closed._query_consent_task
        assert task is None or task.done(), "aioice's loop outlives its closed connection"
        await other.close()
    finally:
        restrict_host_addresses(())
