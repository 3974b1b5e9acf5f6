"""The aiortc internals client/hooks.py relies on are still where the client expects them.

That a PLI or FIR calls ``RTCRtpSender._send_keyframe`` is checked once, for the SFU
(tests/sfu/test_hooks.py), against the same pinned aiortc.
"""

from __future__ import annotations

import inspect

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver

from client.counting import AudioFrameCounter
from client.hooks import HookError, redirect_keyframe_requests, replace_jitter_buffer

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
