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
- DTLS transport (light receiving, client/light.py): ``RTCDtlsTransport._recv_next``
  unprotects each SRTP packet and awaits ``self._handle_rtp_data(data,
  arrival_time_ms=...)``, which parses it and routes it to a receiver. Replacing
  that method on one transport instance hands the decrypted packets to a plain
  callback instead: no parse into ``RtpPacket``, no receiver, no jitter buffer,
  no NACK. RTCP keeps its own path (``_handle_rtcp_data``).
- ICE connection (light receiving, earlier still): aioice hands every datagram
  that is not STUN to ``Connection.data_received(data, component)``, which
  queues it for the DTLS transport's receive loop. Once DTLS-SRTP is up
  (``RTCDtlsTransport._rx_srtp`` set), ``divert_rtp`` unprotects SRTP packets
  right there and calls the callback, so a packet costs no queue, no task
  wake-up and no trip through ``_recv_next``; DTLS, SRTCP and data channel
  datagrams are queued as before. At the first such packet, each of the
  connection's ``StunProtocol``s (``Connection._protocols``) gets a
  ``datagram_received`` that hands RTP and RTCP (first byte 128-191, never STUN,
  RFC 7983) straight to the connection instead of first trying to parse them as
  STUN, which costs a raised ``ValueError`` per packet.
- ICE gathering: aioice 0.13's ``Connection.close()`` closes the protocols listed in
  ``Connection._protocols``, but ``get_component_candidates`` lists the sockets it
  binds only once all are bound; a close in between (a client that leaves or gives
  up a connection while it is still answering an offer) leaves them open.
  :func:`close_late_candidates` wraps ``Connection.gather_candidates`` to close
  what a closed connection gathered (the node installs the same fix, marked the
  same way, so either one suffices in a process that runs both).
- ICE consent: aioice's ``Connection.connect()`` starts its consent loop
  (``query_consent``) once its checks succeed, even when ``close()`` ran meanwhile
  (``Connection._closing`` set) and found no loop to cancel: that loop then runs
  for the life of the process, holding the closed connection. The class's loop
  is wrapped to end at once on a closing connection (process-wide, idempotent;
  the node's connections run a loop of their own, sfu/hooks.py, with the same
  guard).
- Closing: ``close_peer_connection`` stops what aiortc's connect task may start
  while ``RTCPeerConnection.close()`` runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import aioice.ice
import pylibsrtp
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtp import is_rtcp

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_RTP_DISPATCH = "_handle_rtp_data"
_ICE_CONNECTION = "_connection"
_ICE_DATA = "data_received"
_RX_SRTP = "_rx_srtp"
_ICE_PROTOCOLS = "_protocols"

RtpCallback = Callable[[bytes], None]
"""Called with each decrypted RTP packet (header and payload) a transport receives."""


class HookError(RuntimeError):
    """The installed aiortc no longer has a hook point the client relies on."""


def replace_jitter_buffer(receiver: RTCRtpReceiver, counter: Any) -> None:
    """Give ``receiver``'s packets to ``counter`` (an object with aiortc's
    ``add(packet) -> (pli, frame)``) instead of its jitter buffer; best before
    the first packet arrives (the ``track`` event is early enough)."""
    if not hasattr(receiver, _JITTER_ATTR):
        raise HookError(f"RTCRtpReceiver has no {_JITTER_ATTR} to replace")
    setattr(receiver, _JITTER_ATTR, counter)


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """``pc.close()``, then every sender and receiver stopped again: aiortc's close
    stops them before their transports, and when a DTLS handshake ends in between, its
    connect task starts one after it was stopped (an RTCP task and a decoder thread
    that would run for the life of the process). Once the transports are closed
    nothing else starts."""
    await pc.close()
    for transceiver in pc.getTransceivers():
        await transceiver.sender.stop()
        await transceiver.receiver.stop()


def end_consent_of_closed_connections() -> None:
    """No consent loop starts on an ICE connection that is already closing."""
    stock = aioice.ice.Connection.query_consent
    if getattr(stock, "_parley_guarded", False):
        return
    if "self._closing = True" not in inspect.getsource(aioice.ice.Connection.close):
        raise HookError("aioice Connection.close no longer sets _closing")

    @functools.wraps(stock)
    def query_consent(self: Any) -> Coroutine[Any, Any, None]:
        return _no_loop() if self._closing else stock(self)

    query_consent._parley_guarded = True  # type: ignore[attr-defined]
    aioice.ice.Connection.query_consent = query_consent  # type: ignore[method-assign]


async def _no_loop() -> None:
    return None


def redirect_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """A receiver's PLI/FIR on ``sender`` calls ``callback`` instead of its encoder."""
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise HookError("RTCRtpSender._send_keyframe is gone")
    sender._send_keyframe = callback  # type: ignore[method-assign]


def divert_rtp(transport: RTCDtlsTransport, callback: RtpCallback) -> None:
    """Give each RTP packet ``transport`` decrypts to ``callback`` instead of aiortc's
    receivers. Install it before media flows (after ``setRemoteDescription``); RTCP,
    DTLS and data channels are untouched. Installing twice replaces the callback."""
    if not inspect.iscoroutinefunction(getattr(RTCDtlsTransport, _RTP_DISPATCH, None)):
        raise HookError(f"RTCDtlsTransport.{_RTP_DISPATCH} is gone")

    async def dispatch(data: bytes, arrival_time_ms: int) -> None:
        callback(data)

    setattr(transport, _RTP_DISPATCH, dispatch)
    _divert_at_ice(transport, callback)


def _divert_at_ice(transport: RTCDtlsTransport, callback: RtpCallback) -> None:
    connection = getattr(transport.transport, _ICE_CONNECTION, None)
    queue = getattr(connection, _ICE_DATA, None)
    if not callable(queue):
        raise HookError(f"RTCIceTransport.{_ICE_CONNECTION}.{_ICE_DATA} is gone")
    queue = getattr(queue, "queued", queue)  # installed twice: wrap the original only

    patched = False

    def data_received(data: bytes, component: int) -> None:
        nonlocal patched
        srtp = getattr(transport, _RX_SRTP, None)
        if srtp is None or not 127 < data[0] < 192 or is_rtcp(data):
            queue(data, component)
            return
        if not patched:
            patched = True
            for protocol in getattr(connection, _ICE_PROTOCOLS, ()):
                _skip_stun_parsing(protocol)
        try:
            plain = srtp.unprotect(data)
        except pylibsrtp.Error:
            return
        callback(plain)

    data_received.queued = queue  # type: ignore[attr-defined]
    setattr(connection, _ICE_DATA, data_received)


def _skip_stun_parsing(protocol: Any) -> None:
    if getattr(protocol.datagram_received, "stun_skipped", False):
        return
    original = protocol.datagram_received
    connection = protocol.receiver
    component = protocol.local_candidate.component

    def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
        if 127 < data[0] < 192:
            connection.data_received(data, component)
        else:
            original(data, addr)

    datagram_received.stun_skipped = True  # type: ignore[attr-defined]
    protocol.datagram_received = datagram_received


LATE_CANDIDATES_MARK = "closes_late_candidates"


def close_late_candidates() -> None:
    """Install the gathering fix above (idempotent)."""
    current = aioice.ice.Connection.gather_candidates
    if getattr(current, LATE_CANDIDATES_MARK, False):
        return
    if not inspect.iscoroutinefunction(current):
        raise HookError("aioice.ice.Connection.gather_candidates is gone")

    @functools.wraps(current)
    async def gather_candidates(self: Any) -> None:
        try:
            await current(self)
        finally:
            if getattr(self, "_closing", False):
                late, self._protocols = list(getattr(self, _ICE_PROTOCOLS)), []
                for protocol in late:
                    await protocol.close()

    setattr(gather_candidates, LATE_CANDIDATES_MARK, True)
    aioice.ice.Connection.gather_candidates = gather_candidates  # type: ignore[method-assign]
