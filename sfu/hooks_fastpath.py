"""aiortc internals the forwarding fast path (sfu/fastpath.py) relies on, in one module.

aiortc is pinned (pyproject.toml); tests/sfu/test_hooks_fastpath.py checks each
hook point so that an upgrade which moves one fails loudly.

- Sender take-over: ``RTCRtpSender.send(parameters)`` is replaced on an SFU
  sender by a version that registers the sender with its DTLS transport's RTP
  router (so the subscriber's RTCP still reaches it by SSRC) and hands the
  negotiated parameters to the fast path, but starts neither of aiortc's
  sender tasks: no ``_run_rtp`` reading the track, no ``_run_rtcp`` sending
  sender reports with counts the fast path does not feed. ``stop()``
  unregisters it, and ``_handle_rtcp_packet`` goes to the fast path.
  The SSRCs are aiortc's (``_ssrc``, ``_rtx_ssrc``): they are in the offer.
- Wire: a started DTLS transport's state (``_state``, an
  ``aiortc.rtcdtlstransport.State``; the public ``state`` property formats a
  string each call), its SRTP session (``_tx_srtp``) and its ICE
  connection's selected pair (``RTCIceTransport._connection._nominated[1]``,
  an aioice ``CandidatePair`` whose ``protocol.transport`` is the datagram
  transport, a socket of aioice or the node's shared UDP port).
- GSO: a frame's packets to one subscriber leave in one ``sendmsg`` with
  ``UDP_SEGMENT`` on the pair's socket (asyncio's ``_SelectorDatagramTransport._sock``),
  only while the transport has nothing queued. On the node's shared port
  (sfu/udpmux.py) that is the shared socket, used directly only for an address
  already routed to the connection (so the endpoint's ``sendto`` would do nothing
  but pass the packets on). Otherwise, or where the kernel refuses, one ``sendto``
  per packet through the transport.
- SRTP: a frame's packets are protected through the DTLS transport's pylibsrtp
  ``Session`` without ``Session.protect``'s per-call checks and allocations
  (:class:`Protector`: the packet is written into the session's own buffer,
  ``srtp_protect`` is called on its ``srtp_t`` with a length cell allocated once);
  where pylibsrtp no longer has those internals, ``Session.protect`` is used.
- The compiled loop (``sfu._rtploop``, built from sfu/_rtploop.c when a compiler is
  at hand) calls the same ``srtp_protect`` through the address cffi gives for it,
  on the same ``srtp_t``, after checking the function's C type is libsrtp 2's.
- Header extension ids come from the negotiated ``RTCRtpSendParameters``
  (public), by URI, as aiortc's ``HeaderExtensionsMap`` reads them.
"""

from __future__ import annotations

import asyncio.selector_events
import importlib
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp
from aiortc import RTCRtpSender
from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import State

from sfu.hooks import HookError, guard_remb_parsing
from sfu.udpmux import MuxEndpoint

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


@dataclass(frozen=True, kw_only=True)
class SendParameters:
    """What a subscriber negotiated for one sending m-line, read once when it starts."""

    ssrc: int
    rtx_ssrc: int
    payload_type: int
    rtx_payload_type: int | None
    """None: RTX not negotiated; NACKed packets are resent as they were."""
    mid: str
    mid_id: int | None
    """One-byte header extension id of ``sdes:mid``; None when not negotiated."""
    abs_send_time_id: int | None
    cname: str


def check_sender_hook_points(sender: RTCRtpSender) -> None:
    """Raise HookError unless ``sender`` still has what :func:`take_over_sender` replaces."""
    for name in ("send", "stop", "_handle_rtcp_packet"):
        if not callable(getattr(sender, name, None)):
            raise HookError(f"RTCRtpSender.{name} is gone")
    for name in ("_ssrc", "_rtx_ssrc", "_enabled"):
        if not hasattr(sender, name):
            raise HookError(f"RTCRtpSender has no {name}")
    for name in ("_register_rtp_sender", "_unregister_rtp_sender"):
        if not callable(getattr(sender.transport, name, None)):
            raise HookError(f"RTCDtlsTransport.{name} is gone")


def read_parameters(sender: RTCRtpSender, parameters: Any) -> SendParameters:
    codec = parameters.codecs[0]
    rtx = next((c.payloadType for c in parameters.codecs
                if is_rtx(c) and c.parameters.get("apt") == codec.payloadType), None)
    ids = {ext.uri: ext.id for ext in parameters.headerExtensions}
    return SendParameters(ssrc=sender._ssrc, rtx_ssrc=sender._rtx_ssrc,
                          payload_type=codec.payloadType, rtx_payload_type=rtx,
                          mid=parameters.muxId or "", mid_id=ids.get(MID_URI),
                          abs_send_time_id=ids.get(ABS_SEND_TIME_URI),
                          cname=parameters.rtcp.cname or "")


def take_over_sender(sender: RTCRtpSender, *, on_start: Callable[[SendParameters], None],
                     on_rtcp: Callable[[Any], None], on_stop: Callable[[], None]) -> None:
    """Make ``sender`` a shell the fast path sends through (call before it starts).

    ``on_start`` gets the negotiated parameters once; ``on_rtcp`` every RTCP packet
    routed to the sender (reports, NACK, PLI/FIR, REMB); ``on_stop`` is called once
    when aiortc stops the sender (transceiver stopped, connection closed).
    """
    check_sender_hook_points(sender)
    guard_remb_parsing()
    state = {"started": False, "stopped": False}

    async def send(parameters: Any) -> None:
        if state["started"] or state["stopped"]:
            return
        state["started"] = True
        sender.transport._register_rtp_sender(sender, parameters)
        on_start(read_parameters(sender, parameters))

    async def stop() -> None:
        if state["stopped"]:
            return
        state["stopped"] = True
        if state["started"]:
            sender.transport._unregister_rtp_sender(sender)
        on_stop()

    async def handle_rtcp(packet: Any) -> None:
        on_rtcp(packet)

    sender.send = send  # type: ignore[method-assign]
    sender.stop = stop  # type: ignore[method-assign]
    sender._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]


Route = tuple[Callable[[bytes], bytes], Any, socket.socket | None, Any]
"""(SRTP protect, the pair's datagram transport, its socket when packets may bypass the
transport (see :func:`send_packets`), remote address) of a connected sender."""

UDP_SEGMENT = 103
"""Linux ``UDP_SEGMENT`` (``linux/udp.h``; not in Python's socket module)."""
GSO_MAX_SEGMENTS = 32
"""Datagrams per ``sendmsg`` (the kernel takes at most 64 and 64 KiB)."""
_SEGMENT_SIZE = struct.Struct("=H")
ASYNCIO_DATAGRAM = getattr(asyncio.selector_events, "_SelectorDatagramTransport", None)
"""The only transport whose socket is used directly (aioice's host sockets and, behind
its endpoints, the node's shared port; a TURN relay's transport is not)."""


class Gso:
    """UDP generic segmentation offload for the fast path, process-wide: one
    ``sendmsg`` carries a frame's packets to one subscriber, and the kernel cuts
    it into datagrams (all but the last the same size, which a frame's packets
    are). Turned off for good by the first error other than a full buffer."""

    enabled = sys.platform == "linux"
    batches = 0
    """``sendmsg`` calls that carried more than one datagram."""


def send_packets(packets: list[bytes], transport: Any, sock: socket.socket | None,
                 addr: Any) -> int:
    """Send a frame's protected packets to one subscriber, in order; returns how many
    segmented ``sendmsg`` calls carried them (0: none)."""
    if sock is not None:
        if len(packets) == 1:  # audio, small video frames: no GSO needed
            try:
                sock.sendto(packets[0], addr)
                return 0
            except OSError:
                pass  # full buffer or an error: asyncio's transport queues or reports it
        elif Gso.enabled:
            return _send_segmented(packets, transport, sock, addr)
    for packet in packets:
        transport.sendto(packet, addr)
    return 0


_CONTROL: dict[int, list[tuple[int, int, bytes]]] = {}
"""``sendmsg`` ancillary data per segment size (a subscriber's packets have one size)."""


def _control(size: int) -> list[tuple[int, int, bytes]]:
    control = _CONTROL.get(size)
    if control is None:
        control = _CONTROL[size] = [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))]
    return control


def send_buffer(data: bytes, segment: int, transport: Any, sock: socket.socket | None,
                addr: Any) -> int:
    """Send a frame's protected packets laid end to end in ``data``, each ``segment``
    bytes long but the last (what :meth:`Protector.protect_frame` gives), in order;
    returns how many segmented ``sendmsg`` calls carried them."""
    size = len(data)
    if size <= segment:
        return send_packets([data], transport, sock, addr)
    sends = 0
    if sock is not None and Gso.enabled:
        view = memoryview(data)
        limit = segment * GSO_MAX_SEGMENTS
        for start in range(0, size, limit):
            part = view[start:start + limit]
            if len(part) > segment and _segmented(sock, [part], segment, addr):
                sends += 1
                continue
            for pos in range(0, len(part), segment):
                transport.sendto(bytes(part[pos:pos + segment]), addr)
        return sends
    for start in range(0, size, segment):
        transport.sendto(data[start:start + segment], addr)
    return 0


def _send_segmented(packets: list[bytes], transport: Any, sock: socket.socket,
                    addr: Any) -> int:
    sends = 0
    for start in range(0, len(packets), GSO_MAX_SEGMENTS):
        group = packets if len(packets) <= GSO_MAX_SEGMENTS else \
            packets[start:start + GSO_MAX_SEGMENTS]
        if len(group) > 1 and _segmented(sock, group, len(group[0]), addr):
            sends += 1
            continue
        for packet in group:
            transport.sendto(packet, addr)
    return sends


def _segmented(sock: socket.socket, buffers: list[Any], segment: int, addr: Any) -> bool:
    """One ``sendmsg`` the kernel cuts into ``segment``-byte datagrams; False: not sent
    (the caller sends them one by one through the transport)."""
    try:
        sock.sendmsg(buffers, _control(segment), 0, addr)
    except BlockingIOError:
        return False  # the socket's buffer is full: asyncio's transport queues them
    except OSError:
        Gso.enabled = False  # no GSO on this kernel or route
        return False
    Gso.batches += 1
    return True


_binding: Any
try:
    _binding = importlib.import_module("pylibsrtp._binding")  # cffi's ffi and lib
except ImportError:  # pragma: no cover - another pylibsrtp layout: Session.protect
    _binding = None

_srtp_protect: Any = getattr(getattr(_binding, "lib", None), "srtp_protect", None)
SRTP_PROTECT_TYPE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
"""libsrtp 2's ``srtp_protect``, as cffi names its type: what sfu/_rtploop.c calls."""

_rtploop: Any
try:
    _rtploop = importlib.import_module("sfu._rtploop")
except ImportError:  # not built (no C compiler at install): the Python loop sends
    _rtploop = None


def _protect_address() -> int | None:
    """The address of pylibsrtp's ``srtp_protect`` if it has the type the C loop calls."""
    if _srtp_protect is None:
        return None
    ffi = _binding.ffi
    try:
        pointer = ffi.addressof(_binding.lib, "srtp_protect")
    except (AttributeError, TypeError):  # pragma: no cover - another cffi mode
        return None
    if ffi.typeof(pointer).cname != SRTP_PROTECT_TYPE:
        return None
    return int(ffi.cast("uintptr_t", pointer))


_PROTECT_ADDRESS = _protect_address()
NATIVE_LOOP: Any = _rtploop.protect_frame if _rtploop is not None and _PROTECT_ADDRESS \
    else None
"""``sfu._rtploop.protect_frame`` when it is built and can call pylibsrtp's libsrtp."""
SRTP_TRAILER_MAX = 16 + 128
"""Bytes SRTP may append (``SRTP_MAX_TRAILER_LEN`` in libsrtp: tag and MKI)."""


class Protector:
    """``Session.protect`` for one pylibsrtp session, minus its per-call type and
    length checks and its ``ffi.new`` of a length cell: the packet is copied into the
    session's buffer, protected in place and copied out. Only used on the event loop,
    as the session itself is (its buffer is shared with the session's other calls,
    each of which copies its result out before returning)."""

    __slots__ = ("_address", "_buffer", "_cdata", "_length", "_limit", "_srtp", "session")

    def __init__(self, session: pylibsrtp.Session) -> None:
        self.session = session
        self._srtp = session._srtp[0]
        self._address = int(_binding.ffi.cast("uintptr_t", self._srtp))
        self._cdata = session._cdata
        self._buffer = session._buffer
        self._limit = len(session._cdata) - SRTP_TRAILER_MAX
        self._length = _binding.ffi.new("int *")

    def __call__(self, packet: bytes) -> bytes:
        size = len(packet)
        if size > self._limit:
            raise ValueError("packet is too long")
        buffer, length = self._buffer, self._length
        buffer[0:size] = packet
        length[0] = size
        status = _srtp_protect(self._srtp, self._cdata, length)
        if status:
            raise pylibsrtp.Error(f"srtp_protect failed (status {status})")
        out: bytes = buffer[0:length[0]]
        return out

    def protect_frame(self, b0: int, pt: int, seq: int, ts: int, ssrc: int, first: bytes,
                      rest: bytes, chunks: list[bytes], history: list[Any],
                      record: Any) -> tuple[bytes, int]:
        """One frame's packets, protected by the compiled loop (only where
        :data:`NATIVE_LOOP` is set): see sfu/_rtploop.c's ``protect_frame``."""
        result: tuple[bytes, int] = NATIVE_LOOP(self._address, _PROTECT_ADDRESS, b0, pt, seq,
                                                ts, ssrc, first, rest, chunks, history, record)
        return result


def protector(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """A :class:`Protector` for ``session``, or its own ``protect`` where pylibsrtp's
    internals are not where :class:`Protector` reads them."""
    if _srtp_protect is None or not all(hasattr(session, name) for name in ("_srtp", "_cdata",
                                                                     "_buffer")):
        return session.protect
    return Protector(session)


def shared_socket(endpoint: MuxEndpoint, addr: Any) -> socket.socket | None:
    """The node's shared media socket, for packets to ``addr`` sent past ``endpoint``:
    only when ``addr`` is routed to the endpoint already (its ``sendto`` would just pass
    them on) and the socket's transport has nothing queued; None otherwise."""
    if endpoint.closed or addr not in endpoint.addresses:
        return None
    shared: Any = endpoint.mux.datagram_transport
    if type(shared) is not ASYNCIO_DATAGRAM or shared.get_write_buffer_size():
        return None
    sock: socket.socket = shared._sock
    return sock


class Wire:
    """Where a taken-over sender's packets go: its DTLS transport's SRTP session and
    the selected ICE pair, looked up afresh for each frame (the transport is set by
    bundling, and connects after the sender is created).

    The pair's socket is handed out (for :func:`send_packets`) only when the pair's
    transport is asyncio's own (aioice's socket) or an endpoint of the node's shared
    port (:func:`shared_socket`), with nothing queued, so packets sent past it cannot
    overtake queued ones.
    """

    def __init__(self, sender: RTCRtpSender) -> None:
        self._sender = sender
        self._srtp: Any = None
        self._protect: Callable[[bytes], bytes] | None = None

    def route(self) -> Route | None:
        """None while the connection is not up (or the m-line is inactive)."""
        sender = self._sender
        dtls = sender.transport
        if not sender._enabled or dtls._state is not State.CONNECTED:
            return None
        srtp = dtls._tx_srtp
        pair = dtls.transport._connection._nominated.get(1)
        if srtp is None or pair is None:
            return None
        transport: Any = pair.protocol.transport
        if transport is None:
            return None
        protect = self._protect
        if srtp is not self._srtp or protect is None:  # a new DTLS session's keys
            self._srtp, protect = srtp, protector(srtp)
            self._protect = protect
        sock = None
        if type(transport) is ASYNCIO_DATAGRAM:
            if not transport.get_write_buffer_size():
                sock = transport._sock
        elif type(transport) is MuxEndpoint:
            sock = shared_socket(transport, pair.remote_addr)
        return protect, transport, sock, pair.remote_addr

    @property
    def closed(self) -> bool:
        """The DTLS transport is closed or failed: nothing will be sent on it again."""
        return self._sender.transport._state in (State.CLOSED, State.FAILED)

    def rtcp_route(self) -> Route | None:
        """As :meth:`route`, with SRTCP protection (reports go out on inactive m-lines too)."""
        dtls = self._sender.transport
        if dtls._state is not State.CONNECTED:
            return None
        srtp = dtls._tx_srtp
        pair = dtls.transport._connection._nominated.get(1)
        if srtp is None or pair is None or pair.protocol.transport is None:
            return None
        return srtp.protect_rtcp, pair.protocol.transport, None, pair.remote_addr
