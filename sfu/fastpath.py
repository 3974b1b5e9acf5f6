"""The forwarding fast path: RTP written straight from each frame to each subscriber.

aiortc's sender costs one task per subscriber, woken for each frame, and per
packet an ``RtpPacket`` object, a re-packetization, ``serialize`` with a header
extension map and two datetime-based NTP conversions. Here, instead:

- each frame is cut into RTP payload chunks **once** (:func:`packets_of`; a frame
  handed to many subscribers in one fan-out loop is cut on the first);
- per subscriber (:class:`Outbound`, one per subscribe m-line) the header comes
  from a small per-subscriber state (:class:`HeaderState`: SSRC, next sequence
  number, timestamp offset, VP8 picture id) and a per-frame extension block
  (mid and abs-send-time, the latter computed once per frame);
- it is SRTP-protected with that subscriber's session (header, protection and the
  NACK history's record written by the compiled loop, sfu/_rtploop.c, when it was
  built; by the same loop in Python otherwise) and sent on the selected ICE pair
  at once, synchronously, from the producer's fan-out: no queue, no task;
  a frame's packets to one subscriber leave in one ``sendmsg`` where the kernel
  segments UDP (GSO, sfu/hooks_fastpath.py);
- what aiortc's sender did for the subscriber stays: NACKs answered from a
  per-subscriber history (RTX where negotiated), sender reports with packet and
  octet counts and the NTP/RTP mapping of the last frame sent, PLI/FIR passed
  to the consumer, REMB kept for the bandwidth allocator, receiver reports
  passed on with the round-trip time.

Sequence numbers are assigned per subscriber to the packets it is actually
sent, so frames a consumer skips (temporal layers, key-frame gating, pause)
leave no gap. aiortc internals are reached only through sfu/hooks_fastpath.py.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import random
import struct
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)

from sfu.encoded import EncodedFrame
from sfu.hooks_fastpath import (
    NATIVE_LOOP,
    Protector,
    SendParameters,
    Wire,
    send_buffer,
    send_packets,
    take_over_sender,
)
from sfu.stats import ForwardingStats

log = logging.getLogger("parley.sfu.fastpath")

PACKET_MAX = 1300
"""RTP payload bytes per packet, VP8 descriptor included (aiortc's packetizer's limit)."""
VP8_DESCRIPTOR = 4
"""X, I and a 15-bit PictureID: always this long, so one cut of a frame suits everyone."""
HISTORY = 256
"""Packets kept per subscriber for NACK (a power of two; 2.5 s of 1 Mbit/s video, 1 s
of 2.5 Mbit/s). Each packet's slot holds its frame's :data:`HistoryRecord`, one per
frame and subscriber, from which the packet is written again: no copy of the
payload is kept per subscriber."""
HistoryRecord = tuple[int, int, int, int, int, bytes, bytes, list[bytes]]
"""A frame as sent to one subscriber: its first sequence number, header byte 0,
payload type, timestamp, SSRC, the first packet's prefix (extensions and VP8
descriptor), the others' prefix, and the chunks (shared by every subscriber)."""
RESEND_GAP = 0.05
"""Seconds a packet is not resent again after a retransmission, at least (the subscriber's
RTT when known): a NACK repeated before the first resend could arrive asks for nothing new.
Under jitter browsers NACK each reordered packet several times."""
NTP_EPOCH_OFFSET = 2208988800
"""Seconds from 1900 (NTP) to 1970 (Unix)."""
REPORT_INTERVAL = (0.5, 1.5)
"""Seconds between sender reports, drawn uniformly (RFC 3550 randomisation, as aiortc)."""

_HEADER = struct.Struct("!BBHII")
_DESCRIPTOR = struct.Struct("!BBH")
_SEQ = struct.Struct("!H")


class FramePackets:
    """One frame cut into RTP payload chunks (VP8: without the descriptor), with the
    send time shared by every copy of it: wall clock and abs-send-time bytes."""

    __slots__ = ("abs_send_time", "chunks", "frame", "wall")

    def __init__(self, frame: EncodedFrame, kind: str) -> None:
        self.frame = frame
        data = frame.data
        if kind == "video":
            size = PACKET_MAX - VP8_DESCRIPTOR
            self.chunks = [data[pos:pos + size] for pos in range(0, len(data), size)]
        else:
            self.chunks = [data]
        self.wall = time.time()
        # abs-send-time: 6.18 fixed-point seconds, mod 64 s (the NTP offset is a multiple of 64)
        self.abs_send_time = (int(self.wall * 262144) & 0xFFFFFF).to_bytes(3, "big")


_last: FramePackets | None = None


def packets_of(frame: EncodedFrame, kind: str) -> FramePackets:
    """The chunks of ``frame``, cut once: a producer hands one frame object to all of
    its consumers in one loop, so every subscriber after the first reuses the cut.
    A new cut is a fan-out beginning: see :func:`hold_collector`."""
    global _last
    last = _last
    if last is not None and last.frame is frame:
        return last
    hold_collector()
    last = _last = FramePackets(frame, kind)
    return last


def hold_collector() -> None:
    """Keep Python's automatic garbage collection out of the fan-out that begins.

    A producer's fan-out runs in one event-loop callback (sending to 150 subscribers
    takes milliseconds). A collection the interpreter starts in its middle delays every
    subscriber after that point: a young-generation pass by a millisecond or so, a full
    one (some 170,000 tracked objects in a node at 1→150) by 50-100 ms. So the
    collector is paused now and resumed by the loop's next turn, once the callback that
    holds the fan-out is over; a collection that fell due meanwhile then runs at once,
    on the first allocation after it, between frames rather than inside one. Nothing
    is held if the collector is already off (someone else's choice) or no loop runs.
    """
    if not gc.isenabled():
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    gc.disable()
    loop.call_soon(gc.enable)


def ntp_of(wall: float) -> int:
    """Unix seconds → 64-bit NTP timestamp."""
    return int((wall + NTP_EPOCH_OFFSET) * 4294967296) & 0xFFFFFFFFFFFFFFFF


class TimestampLine:
    """One subscriber's RTP timestamp line of one m-line, across the sources it carries.

    Within a source, outgoing timestamps keep the source's spacing (a fixed offset).
    A new source (another producer in a reused slot, another simulcast encoding)
    calls :meth:`rebase`: the next frame's timestamp advances from the last one sent
    by the time that really passed between the two frames (their arrival at the
    SFU), at least one tick. The receiver's playout clock, which maps timestamps to
    its own clock, then sees no jump: a fixed step would run behind after a wait for
    a key frame (the frames after it look late, and the receiver's jitter estimate
    and delay grow) or ahead after a quick one.
    """

    __slots__ = ("clock", "last_at", "last_timestamp", "offset")

    def __init__(self, *, clock: int) -> None:
        self.clock = clock
        self.last_timestamp = random.randrange(1 << 32)
        self.last_at: float | None = None
        """When the last frame arrived (``time.perf_counter()``; None: none sent yet)."""
        self.offset: int | None = None

    def rebase(self) -> None:
        """The next frame comes from another source timeline."""
        self.offset = None

    def timestamp(self, source_timestamp: int, at: float) -> int:
        """The outgoing timestamp of a frame stamped ``source_timestamp`` by its source,
        which arrived at ``at`` (``time.perf_counter()``)."""
        if self.offset is None:
            self.offset = self.last_timestamp + self.advance(at) - source_timestamp
        ts = (source_timestamp + self.offset) & 0xFFFFFFFF
        self.last_timestamp = ts
        self.last_at = at
        return ts

    def advance(self, at: float) -> int:
        """Ticks from the last frame sent to one arriving at ``at`` (at least one)."""
        if self.last_at is None:
            return 1
        return max(1, round((at - self.last_at) * self.clock))


class HeaderState(TimestampLine):
    """One subscriber's RTP numbering of one m-line: SSRC, next sequence number,
    the timestamp line, VP8 picture id.

    Across a :meth:`rebase` sequence numbers and picture ids simply carry on and
    the timestamp continues (:class:`TimestampLine`), so the subscriber sees one
    continuous stream. Packets sent before the last rebase are of a source the
    subscriber no longer decodes: ``first_seq`` marks where the current one began.
    """

    __slots__ = ("first_seq", "picture_id", "seq", "ssrc")

    def __init__(self, *, ssrc: int, clock: int) -> None:
        super().__init__(clock=clock)
        self.ssrc = ssrc
        self.seq = random.randrange(0x8000)  # lower half: no early wrap (as aiortc)
        self.picture_id = random.randrange(0x8000)
        self.first_seq = self.seq
        """Sequence number of the first packet of the current source."""

    def timestamp(self, source_timestamp: int, at: float) -> int:
        if self.offset is None:
            self.first_seq = self.seq
        return super().timestamp(source_timestamp, at)

    def before_source(self, seq: int) -> bool:
        """Packet ``seq`` was sent before the current source began (half the number
        space back at most): its frame is of a line the subscriber left."""
        return 0 < (self.first_seq - seq) & 0xFFFF < 0x8000


@functools.cache
def _warn_not_built() -> None:
    """Once per process."""
    log.warning("sfu._rtploop is not built (no C compiler or Python headers at install): "
                "the fast path's per-packet loop runs in Python")


class Outbound:
    """One subscribe m-line sent by the fast path (created with its transceiver).

    ``on_keyframe_request`` is called for the subscriber's PLI/FIR; ``on_report``
    with (fraction lost 0..1, jitter, RTT seconds or None, (SSRC, cumulative packets
    lost, extended highest sequence number)) for each of its receiver report blocks
    about this stream.
    """

    def __init__(self, sender: RTCRtpSender, kind: str, stats: ForwardingStats, *,
                 on_keyframe_request: Callable[[], None],
                 on_report: Callable[[float, int, float | None, tuple[int, int, int]], None]
                 | None = None, native: bool = True) -> None:
        self.kind = kind
        self._stats = stats
        self._wire = Wire(sender)
        self.clock = 90000 if kind == "video" else 48000
        self.header = HeaderState(ssrc=sender._ssrc, clock=self.clock)
        self.params: SendParameters | None = None
        self.on_keyframe_request = on_keyframe_request
        self.on_report = on_report
        self._native = native and NATIVE_LOOP is not None
        if native and NATIVE_LOOP is None:
            _warn_not_built()
        self._history: list[HistoryRecord | None] = [None] * HISTORY
        self._resent: list[tuple[int, float]] = [(-1, 0.0)] * HISTORY
        """Per history slot: the sequence number last resent from it, and when."""
        self._ext = b""
        self._ext_head = b""
        self._ext_tail = b""
        self._rtx_seq = random.randrange(0x8000)
        self.packet_count = 0
        self.octet_count = 0
        self.bytes_sent = 0
        """Frame payload bytes sent (read by the bandwidth allocator)."""
        self.target_bitrate: int | None = None
        """The subscriber's REMB for this stream, when it sends one."""
        self.retransmitted = 0
        self.rtt: float | None = None
        self._last_wall = 0.0
        self._lsr: int | None = None
        self._lsr_time = 0.0
        self._report_timer: Any = None
        self.stopped = False
        take_over_sender(sender, on_start=self._start, on_rtcp=self.handle_rtcp,
                         on_stop=self.stop)

    # -- start / stop ----------------------------------------------------------
    def _start(self, params: SendParameters) -> None:
        if self.stopped:
            return
        self.params = params
        self._build_extensions(params)
        self._schedule_report()

    def _build_extensions(self, params: SendParameters) -> None:
        """The one-byte-header extension block: ``head + abs-send-time + tail`` per frame."""
        mid = params.mid.encode()
        mid_elem = bytes([(params.mid_id << 4) | (len(mid) - 1)]) + mid \
            if params.mid_id is not None and 0 < len(mid) <= 16 else b""
        ast = params.abs_send_time_id
        size = len(mid_elem) + (4 if ast is not None else 0)
        if size == 0:
            return
        pad = b"\x00" * (-size % 4)
        head = b"\xbe\xde" + _SEQ.pack((size + len(pad)) // 4)
        if ast is None:
            self._ext = head + mid_elem + pad
        else:
            self._ext_head = head + bytes([(ast << 4) | 2])
            self._ext_tail = mid_elem + pad
            self._ext = self._ext_head + b"\x00\x00\x00" + self._ext_tail

    def stop(self) -> None:
        """Idempotent: no more reports; a BYE if the connection is still up."""
        if self.stopped:
            return
        self.stopped = True
        if self._report_timer is not None:
            self._report_timer.cancel()
            self._report_timer = None
        if self.params is not None:
            self._send_rtcp(bytes(RtcpByePacket(sources=[self.params.ssrc])))

    # -- media -------------------------------------------------------------------
    def send_frame(self, frame: EncodedFrame) -> bool:
        """Send ``frame`` now; False (nothing sent) while the connection is not up."""
        params = self.params
        if params is None or self.stopped:
            return False
        route = self._wire.route()
        if route is None:
            return False
        protect, transport, sock, addr = route
        cut = packets_of(frame, self.kind)
        state = self.header
        at = frame.received_at or time.perf_counter()
        offset = state.offset
        if offset is None:  # the first frame of a source: see TimestampLine
            ts = state.timestamp(frame.timestamp, at)
        else:
            ts = state.last_timestamp = (frame.timestamp + offset) & 0xFFFFFFFF
            state.last_at = at
        ext = self._ext_head + cut.abs_send_time + self._ext_tail if self._ext_head \
            else self._ext
        b0 = 0x90 if ext else 0x80
        pt = params.payload_type
        ssrc = state.ssrc
        seq = state.seq
        history = self._history
        chunks = cut.chunks
        last = len(chunks) - 1
        pack = _HEADER.pack
        join = b"".join
        if self.kind == "video":
            pid = state.picture_id
            state.picture_id = (pid + 1) & 0x7FFF
            pid_bytes = _SEQ.pack(0x8000 | pid)
            first = ext + b"\x90\x80" + pid_bytes
            rest = ext + b"\x80\x80" + pid_bytes if last else first
        else:
            first = rest = ext
        count = len(chunks)
        record = (seq, b0, pt, ts, ssrc, first, rest, chunks)
        if self._native and type(protect) is Protector:
            try:
                data, segment = protect.protect_frame(b0, pt, seq, ts, ssrc, first, rest,
                                                      chunks, history, record)
            finally:  # numbers given out stay given: a gap is NACKed from history
                state.seq = (seq + count) & 0xFFFF
            segmented = send_buffer(data, segment, transport, sock, addr)
        else:
            out = []
            try:
                for i, chunk in enumerate(chunks):
                    history[seq & (HISTORY - 1)] = record
                    out.append(protect(join((pack(b0, pt | 0x80 if i == last else pt, seq,
                                                  ts, ssrc), rest if i else first, chunk))))
                    seq = (seq + 1) & 0xFFFF
            finally:
                state.seq = seq
            segmented = send_packets(out, transport, sock, addr)
        self._last_wall = cut.wall
        self.packet_count += count
        self.octet_count += len(frame.data) + count * (len(first) - len(ext))
        size = len(frame.data)
        self.bytes_sent += size
        stats = self._stats
        stats.frames_out += 1
        stats.packets_out += count
        stats.segmented_sends += segmented
        stats.bytes_out += size
        if frame.received_at:
            stats.observe_latency(time.perf_counter() - frame.received_at)
        return True

    def retransmit(self, seq: int) -> bool:
        """Resend packet ``seq`` if still in history (as RTX when negotiated) and of the
        current source: after a layer switch the old layer's packets are worth nothing to
        the subscriber, and on a link too slow for that layer they would delay the new
        one's key frame."""
        params = self.params
        slot = seq & (HISTORY - 1)
        entry = self._history[slot]
        if params is None or entry is None:
            return False
        first_seq, b0, pt, ts, ssrc, first, rest, chunks = entry
        index = (seq - first_seq) & 0xFFFF
        if index >= len(chunks):
            return False  # the slot holds a later frame's packet
        if self.header.before_source(seq):
            return False  # of the layer (or producer) left: the key frame since replaces it
        now = time.monotonic()
        resent_seq, resent_at = self._resent[slot]
        if resent_seq == seq and now - resent_at < max(self.rtt or 0.0, RESEND_GAP):
            return False  # already on its way
        route = self._wire.route()
        if route is None:
            return False
        protect, transport, _, addr = route
        marker = 0x80 if index == len(chunks) - 1 else 0
        prefix = rest if index else first
        chunk = chunks[index]
        if params.rtx_payload_type is None:
            packet = b"".join((_HEADER.pack(b0, pt | marker, seq, ts, ssrc), prefix, chunk))
        else:  # RFC 4588: RTX header, same extensions, then the original sequence number
            split = len(self._ext)
            rtx = _HEADER.pack(b0, marker | params.rtx_payload_type, self._rtx_seq, ts,
                               params.rtx_ssrc)
            packet = b"".join((rtx, prefix[:split], _SEQ.pack(seq), prefix[split:], chunk))
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        transport.sendto(protect(packet), addr)
        self._resent[slot] = (seq, now)
        self.retransmitted += 1
        self._stats.packets_retransmitted += 1
        return True

    # -- RTCP --------------------------------------------------------------------
    def handle_rtcp(self, packet: Any) -> None:
        """A packet the subscriber's RTCP router sent to this m-line's SSRC."""
        params = self.params
        if params is None:
            return
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == params.ssrc:
                    self._on_report_block(report)
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            for seq in packet.lost:
                self.retransmit(seq)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_FIR,
                                                                    RTCP_PSFB_PLI):
            self.on_keyframe_request()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if params.ssrc in ssrcs:
                self.target_bitrate = bitrate

    def _on_report_block(self, report: Any) -> None:
        if self._lsr is not None and report.lsr == self._lsr and report.dlsr:
            rtt = time.time() - self._lsr_time - report.dlsr / 65536
            self.rtt = rtt if self.rtt is None else 0.85 * self.rtt + 0.15 * rtt
        if self.on_report is not None:
            self.on_report(report.fraction_lost / 256.0, report.jitter, self.rtt,
                           (report.ssrc, report.packets_lost, report.highest_sequence))

    def _schedule_report(self) -> None:
        delay = random.uniform(*REPORT_INTERVAL)
        self._report_timer = asyncio.get_running_loop().call_later(delay, self._report)

    def _report(self) -> None:
        self._report_timer = None
        if self.stopped or self.params is None:
            return
        if self._wire.closed:  # closed without aiortc stopping the sender: no more timers
            self.stop()
            return
        self._schedule_report()
        self._send_rtcp(self.sender_report())

    def sender_report(self) -> bytes:
        """SR (+ SDES cname): counts so far, and the wall clock now with the RTP time it
        maps to (the last frame's timestamp, advanced by the time since it was sent)."""
        assert self.params is not None
        now = time.time()
        ntp = ntp_of(now)
        rtp = self.header.last_timestamp
        if self._last_wall:
            rtp = (rtp + int((now - self._last_wall) * self.clock)) & 0xFFFFFFFF
        packets: list[Any] = [RtcpSrPacket(ssrc=self.params.ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=rtp,
            packet_count=self.packet_count & 0xFFFFFFFF,
            octet_count=self.octet_count & 0xFFFFFFFF))]
        if self.params.cname:
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(
                ssrc=self.params.ssrc, items=[(1, self.params.cname.encode())])]))
        self._lsr = (ntp >> 16) & 0xFFFFFFFF
        self._lsr_time = now
        return b"".join(bytes(p) for p in packets)

    def _send_rtcp(self, data: bytes) -> None:
        route = self._wire.rtcp_route()
        if route is None:
            return
        protect, transport, _, addr = route
        try:
            transport.sendto(protect(data), addr)
        except Exception:  # pylibsrtp.Error, a closing socket: a report is not worth a crash
            log.debug("sender report not sent", exc_info=True)

