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
  (a decoding client) are untouched. The assembler reads each packet's
  depayloaded bytes (``RtpPacket._data``) through :func:`depayloaded`.
- Sender: anything that is not an ``av.Frame`` is packed, not encoded
  (``RTCRtpSender._next_encoded_frame``). A subscriber's PLI/FIR calls
  ``RTCRtpSender._send_keyframe``; the SFU replaces that method on its own
  senders to send the request upstream instead.
- Subscribe m-lines never receive: their receivers' bandwidth estimators
  (``_RTCRtpReceiver__remote_bitrate_estimator``) are dropped, see
  :func:`drop_bitrate_estimator`.
- Key frames: ``RTCRtpReceiver._send_rtcp_pli(media_ssrc)``; repeated NACKs:
  ``RTCRtpReceiver._send_rtcp_nack(media_ssrc, lost)`` (aiortc NACKs a gap once).
- Bundling: with ``max-bundle`` the first object created (here the data
  channel's SCTP transport) owns the connection's one DTLS transport, but if
  a media m-line comes first in the offer aiortc "unbundles" the SCTP side on
  the answer and stops that very transport. Marking the SCTP transport as
  already bundled (``RTCSctpTransport._bundled``) avoids it.
- ICE: ``aioice.ice.get_host_addresses`` chooses host candidates;
  ``aioice.ice.Connection.get_component_candidates`` binds them (replaced for the
  node's one UDP port and announced address, see the last section).
- ICE consent: ``aioice.ice.Connection.query_consent`` (per connection) is
  replaced by an RFC 7675 loop that retransmits its checks and gives up only
  after ``sfu.consent_timeout`` (30 s) without an answer (sfu/hooks_consent.py).
  It reads ``Connection._closing`` (set first thing by ``close()``): ``connect()``
  starts the loop even when the connection was closed while it connected.
- RTCP: ``aiortc.rtp.unpack_remb_fci`` reads a REMB's SSRC list past the end of a
  short packet and raises ``struct.error``, which neither the DTLS transport's RTCP
  router nor the sender catch (they catch ``ValueError``): one malformed REMB from a
  client would end its whole connection. :func:`guard_remb_parsing` makes it a
  ``ValueError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol

import aioice
import aioice.ice
import aioice.stun
import aioice.utils
import aiortc.rtcrtpsender
import aiortc.rtp
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCSessionDescription
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    pack_remb_fci,
)

from sfu.encoded import ForwardedFrame
from sfu.stats import ForwardingStats

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_DECODER_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_DECODER_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
_ENCODER_ATTR = "_RTCRtpSender__encoder"
_ESTIMATOR_ATTR = "_RTCRtpReceiver__remote_bitrate_estimator"
_original_host_addresses = aioice.ice.get_host_addresses
_original_unpack_remb_fci = aiortc.rtp.unpack_remb_fci


class HookError(RuntimeError):
    """The installed aiortc no longer has a hook point the SFU relies on."""


class NoDecodeQueue:
    """Stands in for a receiver's decoder queue: the decoder thread only ever sees
    the stop signal, so it never creates a decoder. ``frames_offered`` counts
    frames that would have been decoded (it stays 0 for the SFU)."""

    def __init__(self) -> None:
        self._stop: queue.Queue[None] = queue.Queue()
        self.frames_offered = 0

    def put(self, item: Any) -> None:
        if item is None:
            self._stop.put(None)
        else:
            self.frames_offered += 1

    def get(self) -> None:
        return self._stop.get()


def _checked_unpack_remb_fci(data: bytes) -> tuple[int, list[int]]:
    if len(data) >= 8 and len(data) < 8 + 4 * data[4]:
        raise ValueError("REMB FCI is shorter than its SSRC list")
    bitrate, ssrcs = _original_unpack_remb_fci(data)
    return bitrate, ssrcs


def guard_remb_parsing() -> None:
    """Refuse a REMB shorter than its SSRC count with the ValueError aiortc expects.
    Process-wide and idempotent; every SFU receiver and sender installs it."""
    aiortc.rtp.unpack_remb_fci = _checked_unpack_remb_fci
    if not hasattr(aiortc.rtcrtpsender, "unpack_remb_fci"):
        raise HookError("aiortc.rtcrtpsender no longer imports unpack_remb_fci")
    aiortc.rtcrtpsender.unpack_remb_fci = _checked_unpack_remb_fci


def install_assembler(receiver: RTCRtpReceiver, assembler: Any) -> NoDecodeQueue:
    """Make ``receiver`` give frames to ``assembler`` and never to a decoder.

    Best before the receiver starts (the ``track`` event is early enough). A
    track added by a re-offer on a connected transport has its receiver started
    by aiortc before the answer is returned: its decoder thread already waits on
    the stock queue, so that thread is ended here (else closing the receiver
    would join it forever, blocking the event loop).
    """
    for attr in (_JITTER_ATTR, _DECODER_QUEUE_ATTR):
        if not hasattr(receiver, attr):
            raise HookError(f"RTCRtpReceiver has no {attr} to replace")
    guard_remb_parsing()
    previous = getattr(receiver, _DECODER_QUEUE_ATTR)
    no_decode = NoDecodeQueue()
    setattr(receiver, _JITTER_ATTR, assembler)
    setattr(receiver, _DECODER_QUEUE_ATTR, no_decode)
    if getattr(receiver, _DECODER_THREAD_ATTR, None) is not None:
        previous.put(None)  # the started decoder thread reads ``previous``: end it
    return no_decode


def drop_bitrate_estimator(receiver: RTCRtpReceiver) -> None:
    """Free the receive-side bandwidth estimator of a receiver that never receives (a
    subscribe m-line's). aiortc gives every video receiver one, with a 1000-bucket rate
    counter: 1000 objects the garbage collector walks on every full collection, per
    subscriber and video m-line (at 150 subscribers, half the node's objects and full
    collections of 0.1 to 0.8 s). aiortc's audio receivers have none, so ``None`` is a
    state aiortc handles."""
    if not hasattr(receiver, _ESTIMATOR_ATTR):
        raise HookError(f"RTCRtpReceiver has no {_ESTIMATOR_ATTR}")
    setattr(receiver, _ESTIMATOR_ATTR, None)


def depayloaded(packet: Any) -> bytes:
    """The codec payload aiortc depayloaded from ``packet`` before handing it to the
    jitter buffer (VP8: without the payload descriptor; Opus: the packet as is)."""
    try:
        data: bytes = packet._data
    except AttributeError:
        raise HookError("RtpPacket has no _data: aiortc no longer depayloads it "
                        "before the jitter buffer") from None
    return data


class ForwardPacker(Encoder):
    """The codec object of an SFU sender: packs encoded frames, cannot encode.

    ``target_bitrate`` receives the subscriber's REMB estimate (aiortc's sender
    sets it when a REMB arrives).
    """

    def __init__(self, kind: str, stats: ForwardingStats | None = None) -> None:
        self.kind = kind
        self.picture_id = 0
        self.target_bitrate: int | None = None
        self.stats = stats or ForwardingStats()
        self.bytes_sent = 0

    def encode(self, frame: Any, force_keyframe: bool = False) -> Any:
        raise HookError("the SFU never encodes")

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        timestamp = int(packet.pts)
        data = packet.data if isinstance(packet, ForwardedFrame) else bytes(packet)
        if self.kind == "audio":
            payloads = [data]
        else:
            payloads = Vp8Encoder._packetize(data, self.picture_id)
            self.picture_id = (self.picture_id + 1) % (1 << 15)
        self.bytes_sent += len(data)
        stats = self.stats
        stats.frames_out += 1
        stats.packets_out += len(payloads)
        stats.bytes_out += len(data)
        return payloads, timestamp


def install_packer(sender: RTCRtpSender, kind: str,
                   stats: ForwardingStats | None = None) -> ForwardPacker:
    """Give ``sender`` a pack-only codec object before it sends its first frame."""
    if not hasattr(sender, _ENCODER_ATTR):
        raise HookError("RTCRtpSender has no encoder attribute")
    packer = ForwardPacker(kind, stats)
    setattr(sender, _ENCODER_ATTR, packer)
    return packer


def redirect_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """A subscriber's PLI/FIR on ``sender`` calls ``callback`` instead of its encoder."""
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise HookError("RTCRtpSender._send_keyframe is gone")
    sender._send_keyframe = callback  # type: ignore[method-assign]


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the publisher behind ``receiver`` for a key frame."""
    await receiver._send_rtcp_pli(media_ssrc)


async def send_nack(receiver: RTCRtpReceiver, media_ssrc: int, lost: list[int]) -> None:
    """Ask the publisher behind ``receiver`` to resend packets ``lost`` (generic NACK)."""
    await receiver._send_rtcp_nack(media_ssrc, lost)


def sender_encoder(sender: RTCRtpSender) -> Any:
    """The sender's codec object (it only packs for the SFU; see tests)."""
    return getattr(sender, _ENCODER_ATTR, None)


def mark_sctp_bundled(pc: RTCPeerConnection) -> None:
    """Call right after the first ``createDataChannel`` on a max-bundle connection."""
    sctp = getattr(pc, "_RTCPeerConnection__sctp", None)
    if sctp is None or not hasattr(sctp, "_bundled"):
        raise HookError("RTCPeerConnection has no SCTP transport with a _bundled flag")
    sctp._bundled = True


ReportCounters = tuple[int, int, int]
"""(SSRC, cumulative packets lost, extended highest sequence number) of a report block."""


def tap_sender_rtcp(sender: RTCRtpSender,
                    on_report: Callable[[float, int, float | None, ReportCounters], None],
                    ) -> None:
    """Call ``on_report(fraction_lost 0..1, jitter, rtt seconds, counters)`` for every
    receiver report block about ``sender``'s stream, after aiortc has handled it."""
    original = sender._handle_rtcp_packet
    if not callable(original):
        raise HookError("RTCRtpSender._handle_rtcp_packet is gone")
    guard_remb_parsing()

    async def tapped(packet: Any) -> None:
        await original(packet)
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    rtt = getattr(sender, "_RTCRtpSender__rtt", None)
                    on_report(report.fraction_lost / 256.0, report.jitter, rtt,
                              (report.ssrc, report.packets_lost, report.highest_sequence))

    sender._handle_rtcp_packet = tapped  # type: ignore[method-assign]


class RembInterceptor:
    """Takes the place of a receiver's remote bitrate estimator: keeps its estimate of
    the publisher's link (``estimate``) but stops aiortc from sending REMB itself,
    so the SFU alone decides what the publisher is told."""

    def __init__(self, estimator: Any) -> None:
        self._estimator = estimator
        self.estimate: int | None = None

    def add(self, **kwargs: Any) -> None:
        result = self._estimator.add(**kwargs)
        if result is not None:
            self.estimate = int(result[0])


def intercept_remb(receiver: RTCRtpReceiver) -> RembInterceptor | None:
    """Suppress the receiver's own REMB (video only; audio receivers have none)."""
    attr = "_RTCRtpReceiver__remote_bitrate_estimator"
    if not hasattr(receiver, attr):
        raise HookError("RTCRtpReceiver has no remote bitrate estimator attribute")
    estimator = getattr(receiver, attr)
    if estimator is None:
        return None
    interceptor = RembInterceptor(estimator)
    setattr(receiver, attr, interceptor)
    return interceptor


async def send_remb(receiver: RTCRtpReceiver, media_ssrc: int, bitrate: int) -> None:
    """Tell the publisher behind ``receiver`` the bitrate it should send (goog-remb)."""
    rtcp_ssrc = getattr(receiver, "_RTCRtpReceiver__rtcp_ssrc", None)
    if rtcp_ssrc is None:
        return
    packet = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                            fci=pack_remb_fci(bitrate, [media_ssrc]))
    await receiver._send_rtcp(packet)


def restrict_host_addresses(addresses: tuple[str, ...]) -> None:
    """Gather host candidates only on ``addresses`` (process-wide; empty restores default)."""
    if not addresses:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


# -- One UDP port per node, announced address (aioice) ------------------------------
# aioice 0.13 gives each host candidate a socket of its own, bound to
# ``(address, 0)`` in ``Connection.get_component_candidates``, and has no port
# range, no shared socket and no announced address. The replacement below serves
# only connections gathered by a peer connection marked with
# ``mark_peer_connection`` (the SFU's: gathering runs inside
# ``setLocalDescription``, which the mark wraps in a context variable); every
# other connection of the process, a test's client for one, gets aioice's own.
# For a marked one: with the node's mux, one host candidate on the shared socket,
# its ufrag attached to the mux (re-rolled if another connection has it); without
# a mux, aioice's sockets. Host candidates carry the announced address, if set.
# Relayed (TURN) candidates are still aioice's; no server-reflexive candidates.

AIOICE_VERSION = "0.13.0"
_original_component_candidates = aioice.ice.Connection.get_component_candidates
class _MuxEndpoint(Protocol):
    @property
    def ufrag(self) -> str: ...


class _Mux(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...

    def attach(self, ufrag: str, protocol: asyncio.DatagramProtocol, *, key: bytes | None = None,
               new_ufrag: Callable[[], str] | None = None) -> _MuxEndpoint: ...


class NodeMedia(Protocol):
    """What these hooks need of the node's media socket (sfu/udpmux.py's NodeMedia)."""

    @property
    def mux(self) -> _Mux | None: ...
    @property
    def announced_address(self) -> str: ...
    @property
    def host(self) -> str: ...


_node_media: ContextVar[NodeMedia | None] = ContextVar("parley_node_media", default=None)


def install_node_media() -> None:
    """Replace aioice's candidate gathering (idempotent); fails loudly on another aioice."""
    if aioice.__version__ != AIOICE_VERSION:
        raise HookError(f"aioice {aioice.__version__} is not {AIOICE_VERSION}: re-verify "
                        "get_component_candidates, StunProtocol and _local_username")
    for name in ("get_component_candidates", "gather_candidates", "local_username"):
        if not hasattr(aioice.ice.Connection, name):
            raise HookError(f"aioice.ice.Connection has no {name}")
    aioice.ice.Connection.get_component_candidates = _component_candidates  # type: ignore[method-assign]


@contextlib.contextmanager
def gathering_on(media: NodeMedia) -> Iterator[None]:
    """ICE connections that gather candidates in this context (and in tasks it starts)
    use ``media``."""
    token = _node_media.set(media)
    try:
        yield
    finally:
        _node_media.reset(token)


def mark_peer_connection(pc: RTCPeerConnection, media: NodeMedia) -> None:
    """Every ICE connection ``pc`` gathers uses ``media`` (call before its first offer/answer)."""
    original = pc.setLocalDescription

    async def set_local_description(
            sessionDescription: RTCSessionDescription | None = None) -> None:  # aiortc's name
        with gathering_on(media):
            await original(sessionDescription)

    pc.setLocalDescription = set_local_description  # type: ignore[method-assign]


async def _component_candidates(self: Any, component: int, addresses: list[str],
                                timeout: int = 5) -> list[Any]:
    media = _node_media.get()
    if media is None or (media.mux is not None and component != 1):
        return list(await _original_component_candidates(self, component, addresses, timeout))
    if media.mux is None:
        candidates = list(await _original_component_candidates(
            self, component, addresses, timeout))
        for candidate in candidates:
            if candidate.type == "host" and media.announced_address:
                candidate.host = media.announced_address
        return candidates
    candidates = []
    host = _mux_candidate_host(media, addresses)
    if host:
        protocol = aioice.ice.StunProtocol(self)
        endpoint = media.mux.attach(
            self.local_username, protocol, key=self.local_password.encode("utf8"),
            new_ufrag=lambda: aioice.utils.random_string(len(self.local_username)))
        self._local_username = endpoint.ufrag
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host), component=component,
            transport="udp", priority=candidate_priority(component, "host"),
            host=host, port=media.mux.address[1], type="host")
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    # With no addresses aioice only asks the TURN server, if the connection has one.
    candidates += await _original_component_candidates(self, component, [], timeout)
    return candidates


def _mux_candidate_host(media: NodeMedia, addresses: list[str]) -> str:
    """The host candidate's address: announced, else the mux's, else the first found of
    the mux's family. No addresses at all (relay-only policy): no host candidate."""
    if not addresses:
        return ""
    if media.announced_address or media.host:
        return media.announced_address or media.host
    assert media.mux is not None
    ipv6 = ":" in media.mux.address[0]
    return next((a for a in addresses if (":" in a) == ipv6), "")
