"""Receiving RID-based simulcast with the pinned aiortc: every internal it touches.

aiortc (1.16) gives one receiver per m-line and routes incoming RTP by SSRC, then
by payload type when the SSRC is unknown and only one receiver has that type
(``RtpRouter.route_rtp`` on the DTLS transport); it never reads the MID or RID
header extensions to route, and one receiver keeps one NACK sequence space and
one RTX mapping (from ``a=ssrc-group:FID``, which RID simulcast does not send).
Three encodings of one m-line would be mixed into one stream, or dropped when
two video m-lines share a payload type (Chromium bundles them so).

So, per DTLS transport that carries simulcast:

- :func:`accept_rid_extensions` adds the offer's ``sdes:rtp-stream-id`` and
  ``repaired-rtp-stream-id`` extensions to the transceiver's negotiated list
  (``RTCRtpTransceiver._headerExtensions``) before the answer is created: aiortc
  then answers them and its header-extension map parses them
  (``packet.extensions.rtp_stream_id`` / ``repaired_rtp_stream_id``).
- :class:`SimulcastDemux` wraps that transport's ``_rtp_router.route_rtp``: a
  packet whose SSRC is a known encoding's, or that names a simulcast m-line's
  MID and one of its RIDs (the repaired RID: its RTX stream), is routed to that
  encoding's :class:`SimulcastEncoding`; every other packet goes to aiortc's
  routing as before, so publishers that do not simulcast are untouched. A packet
  of a simulcast m-line that names no known RID is dropped (never handed to the
  m-line's receiver). A learned SSRC is also put in the router's SSRC table, so
  the publisher's sender reports reach the receiver (round-trip times in its
  receiver reports).
- :class:`SimulcastEncoding` stands where aiortc's receiver would be called
  (``_handle_rtp_packet(packet, arrival_time_ms)``) and does, per encoding, what
  the receiver does for one stream: feeds the receiver's remote bitrate
  estimator and its receiver-report statistics
  (``RTCRtpReceiver.__remote_bitrate_estimator``, ``__remote_streams``), unwraps
  RTX (``aiortc.rtp.unwrap_rtx``), sends NACKs from its own ``NackGenerator``
  through ``RTCRtpReceiver._send_rtcp_nack``, depayloads
  (``aiortc.codecs.depayload``, into ``RtpPacket._data`` like aiortc) and hands the
  packet to the encoding's assembler (sfu/frames.py). Key frames are asked per
  encoding SSRC with :func:`sfu.hooks.send_pli`.

tests/sfu/test_hooks_simulcast.py checks each of these against the installed aiortc.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.codecs import depayload, is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import RtpPacket, unwrap_rtx

from sfu.hooks import HookError
from sfu.simulcast import REPAIRED_RID_URI, RID_URI, SimulcastOffer

_CODECS = "_RTCRtpReceiver__codecs"
_STREAMS = "_RTCRtpReceiver__remote_streams"
_ESTIMATOR = "_RTCRtpReceiver__remote_bitrate_estimator"
_DEMUX = "_parley_simulcast_demux"


PacketSink = Callable[[Any], object]
"""What an encoding hands its depayloaded packets to (an assembler's ``add``)."""


def accept_rid_extensions(transceiver: RTCRtpTransceiver, offer: SimulcastOffer) -> None:
    """Negotiate the offer's RID header extensions on ``transceiver`` (between aiortc's
    ``setRemoteDescription`` and ``createAnswer``). Idempotent."""
    extensions = getattr(transceiver, "_headerExtensions", None)
    if not isinstance(extensions, list):
        raise HookError("RTCRtpTransceiver has no _headerExtensions list")
    wanted = [(RID_URI, offer.rid_extension)]
    if offer.repaired_extension is not None:
        wanted.append((REPAIRED_RID_URI, offer.repaired_extension))
    have = {ext.uri for ext in extensions}
    for uri, ext_id in wanted:
        if uri not in have:
            extensions.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))


class SimulcastEncoding:
    """One encoding of a simulcast m-line, received apart from the others."""

    def __init__(self, *, mid: str, rid: str, layer: int, receiver: RTCRtpReceiver,
                 sink: PacketSink) -> None:
        for attr in (_CODECS, _STREAMS, _ESTIMATOR):
            if not hasattr(receiver, attr):
                raise HookError(f"RTCRtpReceiver has no {attr}")
        if not callable(getattr(receiver, "_send_rtcp_nack", None)):
            raise HookError("RTCRtpReceiver._send_rtcp_nack is gone")
        self.mid = mid
        self.rid = rid
        self.layer = layer
        self._receiver = receiver
        self._sink = sink
        self._nack = NackGenerator()
        self.ssrc: int | None = None
        """The encoding's media SSRC, once a packet named its RID."""
        self.rtx_ssrc: int | None = None
        self.packets = 0
        self.retransmissions = 0
        self.nacks_sent = 0

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc's DTLS transport awaits this for each packet routed here."""
        receiver = self._receiver
        if not receiver._enabled:
            return
        estimator = getattr(receiver, _ESTIMATOR)
        if estimator is not None and packet.extensions.abs_send_time is not None:
            estimator.add(abs_send_time=packet.extensions.abs_send_time,
                          arrival_time_ms=arrival_time_ms,
                          payload_size=len(packet.payload) + packet.padding_size,
                          ssrc=packet.ssrc)
        codecs: dict[int, Any] = getattr(receiver, _CODECS)
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        streams: dict[int, StreamStatistics] = getattr(receiver, _STREAMS)
        if packet.ssrc not in streams:
            streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        streams[packet.ssrc].add(packet)
        if is_rtx(codec):
            apt = codec.parameters.get("apt")
            if self.ssrc is None or len(packet.payload) < 2 or not isinstance(apt, int) \
                    or apt not in codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=self.ssrc)
            codec = codecs[apt]
            self.retransmissions += 1
        elif packet.ssrc != self.ssrc:
            return
        self.packets += 1
        if self._nack.add(packet):
            self.nacks_sent += 1
            await receiver._send_rtcp_nack(packet.ssrc, sorted(self._nack.missing))
        try:
            packet._data = depayload(codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return
        self._sink(packet)


class SimulcastDemux:
    """Routes the encodings of a DTLS transport's simulcast m-lines (module docstring)."""

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        router = getattr(dtls, "_rtp_router", None)
        if router is None or not callable(getattr(router, "route_rtp", None)) \
                or not isinstance(getattr(router, "ssrc_table", None), dict):
            raise HookError("RTCDtlsTransport has no _rtp_router with route_rtp and ssrc_table")
        self._router = router
        self._original: Callable[[RtpPacket], Any] = router.route_rtp
        self._mids: dict[str, dict[str, SimulcastEncoding]] = {}
        self._by_ssrc: dict[int, SimulcastEncoding] = {}
        self._only_mid: str | None = None
        router.route_rtp = self.route
        self.dropped = 0
        """Packets of a simulcast m-line whose encoding could not be told."""

    def add(self, mid: str, receiver: RTCRtpReceiver, rids: Sequence[str],
            sinks: Sequence[PacketSink]) -> tuple[SimulcastEncoding, ...]:
        """Receive the m-line ``mid``'s encodings ``rids`` (lowest first), each into its sink."""
        encodings = tuple(SimulcastEncoding(mid=mid, rid=rid, layer=i, receiver=receiver,
                                            sink=sink)
                          for i, (rid, sink) in enumerate(zip(rids, sinks, strict=True)))
        self.remove(mid)
        self._mids[mid] = {e.rid: e for e in encodings}
        self._only_mid = next(iter(self._mids)) if len(self._mids) == 1 else None
        return encodings

    def remove(self, mid: str) -> None:
        """Forget an m-line's encodings (its producer closed). Idempotent."""
        gone = self._mids.pop(mid, None)
        if gone is None:
            return
        for ssrc in [s for s, e in self._by_ssrc.items() if e.mid == mid]:
            del self._by_ssrc[ssrc]
            self._router.ssrc_table.pop(ssrc, None)
        self._only_mid = next(iter(self._mids)) if len(self._mids) == 1 else None

    def route(self, packet: RtpPacket) -> Any:
        """In place of ``RtpRouter.route_rtp``."""
        encoding = self._by_ssrc.get(packet.ssrc)
        if encoding is not None:
            return encoding
        ext = packet.extensions
        mid = ext.mid if ext.mid is not None else self._only_mid
        if mid is None or mid not in self._mids:
            return self._original(packet)
        encodings = self._mids[mid]
        if ext.rtp_stream_id is not None and ext.rtp_stream_id in encodings:
            encoding = encodings[ext.rtp_stream_id]
            encoding.ssrc = packet.ssrc
        elif ext.repaired_rtp_stream_id is not None \
                and ext.repaired_rtp_stream_id in encodings:
            encoding = encodings[ext.repaired_rtp_stream_id]
            encoding.rtx_ssrc = packet.ssrc
        elif ext.mid is None:
            return self._original(packet)  # (one simulcast m-line: nothing says it is this)
        if encoding is None:
            self.dropped += 1
            return None
        self._by_ssrc[packet.ssrc] = encoding
        self._router.ssrc_table[packet.ssrc] = encoding._receiver
        return encoding


def simulcast_demux(dtls: RTCDtlsTransport) -> SimulcastDemux:
    """The transport's demultiplexer, installed on first use (one per DTLS transport)."""
    demux = getattr(dtls, _DEMUX, None)
    if isinstance(demux, SimulcastDemux):
        return demux
    demux = SimulcastDemux(dtls)
    setattr(dtls, _DEMUX, demux)
    return demux

