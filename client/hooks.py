"""Every place the client reaches into aiortc's internals, in one module.

aiortc is pinned (pyproject.toml); tests/client/test_hooks.py checks each hook
point so that an upgrade which moves one fails loudly.

- Receiver: aiortc hands each depayloaded RTP packet to the receiver's jitter
  buffer (``_RTCRtpReceiver__jitter_buffer.add(packet)``) and queues the
  complete frames it returns for a decoder thread. A frame counter
  (client/counting.py) in the buffer's place returns none, so that thread
  waits idle and nothing is decoded.
- Sender: a receiver's PLI/FIR calls ``RTCRtpSender._send_keyframe``; a
  pre-encoded track replaces it to restart its clip at the key frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"


class HookError(RuntimeError):
    """The installed aiortc no longer has a hook point the client relies on."""


def replace_jitter_buffer(receiver: RTCRtpReceiver, counter: Any) -> None:
    """Give ``receiver``'s packets to ``counter`` (an object with aiortc's
    ``add(packet) -> (pli, frame)``) instead of its jitter buffer; best before
    the first packet arrives (the ``track`` event is early enough)."""
    if not hasattr(receiver, _JITTER_ATTR):
        raise HookError(f"RTCRtpReceiver has no {_JITTER_ATTR} to replace")
    setattr(receiver, _JITTER_ATTR, counter)


def redirect_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """A receiver's PLI/FIR on ``sender`` calls ``callback`` instead of its encoder."""
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise HookError("RTCRtpSender._send_keyframe is gone")
    sender._send_keyframe = callback  # type: ignore[method-assign]
