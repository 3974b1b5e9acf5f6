"""Every place the SFU reaches into aiortc's internals, in one module.

aiortc is pinned (pyproject.toml); tests/sfu/test_hooks.py checks each hook
point so that an upgrade which moves one fails loudly instead of silently
decoding or stalling.

- Receiver: aiortc depayloads each RTP packet and hands it to the receiver's
  jitter buffer (``_RTCRtpReceiver__jitter_buffer.add(packet)``), whose
  complete frames go to a decoder thread. The SFU replaces that buffer, per
  receiver, with a frame assembler that returns no frame to aiortc and gives
  the encoded frame to the producer instead, so nothing is ever decoded. The
  decoder thread aiortc starts stays idle. Other receivers in the process
  (a decoding client) are untouched.
- Sender: anything that is not an ``av.Frame`` is packed, not encoded
  (``RTCRtpSender._next_encoded_frame``). A subscriber's PLI/FIR calls
  ``RTCRtpSender._send_keyframe``; the SFU replaces that method on its own
  senders to send the request upstream instead.
- Key frames: ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)``.
- ICE: ``aioice.ice.get_host_addresses`` chooses host candidates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aioice.ice
from aiortc import RTCRtpReceiver, RTCRtpSender

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_ENCODER_ATTR = "_RTCRtpSender__encoder"
_original_host_addresses = aioice.ice.get_host_addresses


class HookError(RuntimeError):
    """The installed aiortc no longer has a hook point the SFU relies on."""


def install_assembler(receiver: RTCRtpReceiver, assembler: Any) -> None:
    """Make ``receiver`` give frames to ``assembler`` instead of its decoder."""
    if not hasattr(receiver, _JITTER_ATTR):
        raise HookError("RTCRtpReceiver has no jitter buffer attribute to replace")
    setattr(receiver, _JITTER_ATTR, assembler)


def redirect_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """A subscriber's PLI/FIR on ``sender`` calls ``callback`` instead of its encoder."""
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise HookError("RTCRtpSender._send_keyframe is gone")
    sender._send_keyframe = callback  # type: ignore[method-assign]


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the publisher behind ``receiver`` for a key frame."""
    await receiver._send_rtcp_pli(media_ssrc)


def sender_encoder(sender: RTCRtpSender) -> Any:
    """The sender's codec object (it only packs for the SFU; see tests)."""
    return getattr(sender, _ENCODER_ATTR, None)


def restrict_host_addresses(addresses: tuple[str, ...]) -> None:
    """Gather host candidates only on ``addresses`` (process-wide; empty restores default)."""
    if not addresses:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
