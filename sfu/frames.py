"""Reassembling encoded frames from RTP, in place of aiortc's jitter buffer.

A :class:`FrameAssembler` is installed on each SFU receiver (sfu/hooks.py).
aiortc still does SRTP, NACKs and depayloading before it; the assembler hands
each complete frame straight to the producer on the event loop, instead of
to a decoder thread. Unlike the stock buffer it never waits long for a lost
packet: after ``frame_wait`` it drops the incomplete frame, flags a
discontinuity (subscribers hold until the next key frame) and asks for a key
frame.

Packets that arrive long after their RTP timestamp says they should (a node
that was frozen, its socket full of seconds-old media) are not forwarded
either: see :class:`LateFilter`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sfu.encoded import EncodedFrame
from sfu.hooks import depayloaded
from sfu.vp8 import is_keyframe, parse_descriptor

__all__ = ["MAX_NACKS", "MAX_PACKETS", "NACK_RETRY", "PROCESS_ARRIVALS", "Arrivals",
           "AudioAssembler", "EncodedFrame",
           "FrameSink", "LateFilter", "LossCounter", "VideoAssembler"]

MAX_PACKETS = 1024
NACK_RETRY = 0.1
"""Seconds between repeated NACKs for packets a frame still waits for. aiortc NACKs a
gap once, when it appears; if that NACK or its retransmission is lost too, the frame
would wait out ``frame_wait`` and cost every subscriber a key frame."""
MAX_NACKS = 32


FrameSink = Callable[[EncodedFrame], None]


class _Unwrapper:
    """16-bit RTP sequence numbers (or 32-bit timestamps) → comparable integers."""

    def __init__(self, bits: int = 16) -> None:
        self._last: int | None = None
        self._mask = (1 << bits) - 1
        self._half = 1 << (bits - 1)

    def unwrap(self, seq: int) -> int:
        if self._last is None:
            self._last = seq
            return seq
        delta = (seq - self._last) & self._mask
        if delta >= self._half:
            delta -= self._mask + 1
        value = self._last + delta
        if delta > 0:
            self._last = value
        return value


class LossCounter:
    """Packets expected vs received on the publisher's leg (after NACK recovery)."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.first: int | None = None
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0

    def add(self, seq: int) -> None:
        if self.first is None:
            self.first = seq
        if self.highest is None or seq > self.highest:
            self.highest = seq
        self.received += 1

    def interval_loss(self) -> float:
        """Loss fraction since the previous call (0 when nothing was expected)."""
        if self.first is None or self.highest is None:
            return 0.0
        expected = self.highest - self.first + 1
        exp, rec = expected - self._expected_prior, self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        return max(0.0, (exp - rec) / exp) if exp > 0 else 0.0


class Arrivals:
    """When any stream of the process last received a packet. A silence of every
    stream at once is this process not reading (stopped, blocked) or its network
    gone, not one publisher going quiet (a static screen share sends nothing)."""

    def __init__(self, silence: float = 1.0, watch: float = 1.0) -> None:
        self._silence = silence
        self._watch = watch
        self._last = float("-inf")
        self.watch_until = float("-inf")
        """Until then, streams that were quiet look for late media."""

    def note(self, now: float) -> None:
        if now - self._last >= self._silence:
            self.watch_until = now + self._watch
        self._last = now


PROCESS_ARRIVALS = Arrivals()


class LateFilter:
    """Recognises media that arrives far later than its RTP timestamps imply, after
    the stream went quiet.

    Each frame's *offset* is the arrival time of its first packet minus its media
    time (RTP timestamp over the clock rate); on a steady path it only varies by the
    network's jitter. After ``limit`` seconds without a packet, a frame whose offset
    exceeds the smallest offset of the previous ``window`` seconds of media by more
    than ``limit`` is late, and so is every later one like it until none has been
    for ``settle`` seconds. That is what a node resuming after its process was
    stopped (SIGSTOP, a long GC, a blocked loop) reads out of its socket, and what a
    browser that could not send meanwhile drains from its queue: seconds-old media
    at once. Forwarded, that burst teaches every subscriber's jitter buffer a delay
    of seconds, and its video stays frozen while that delay drains (measured: ~3 s
    after a 5 s stop). Dropped, the subscriber sees one freeze and then current
    video from a key frame.

    Nothing is late without a silence of the whole process first (``arrivals``):
    one stream going quiet (a static screen share), a large frame paced out
    slowly, or jitter, never drops anything; and a frame is judged by its first
    packet. A lasting
    change of path delay is accepted after ``window`` seconds of media; a timestamp
    more than ``restart`` seconds behind the newest one (a new timeline, not a
    queue) restarts the filter.
    """

    def __init__(self, clock_rate: int, *, limit: float = 1.0, window: float = 2.0,
                 settle: float = 0.5, restart: float = 10.0,
                 arrivals: Arrivals = PROCESS_ARRIVALS) -> None:
        self._clock = float(clock_rate)
        self._arrivals = arrivals
        self._limit = limit
        self._window = window
        self._settle = settle
        self._restart = restart
        self._ts = _Unwrapper(bits=32)
        self._mins: deque[tuple[float, float]] = deque()
        """(media time, offset), offsets increasing: the window's minimum is first."""
        self._newest = 0.0
        self._arrived = float("-inf")
        self._watch_until = float("-inf")
        """After a silence: late frames are looked for until then."""
        self._frame: tuple[int, bool] | None = None
        """RTP timestamp and verdict of the frame judged last."""
        self.late_packets = 0

    def late(self, timestamp: int, now: float) -> bool:
        self._arrivals.note(now)
        if now - self._arrived >= self._limit and now < self._arrivals.watch_until:
            self._watch_until = now + self._settle
        self._arrived = now
        if self._frame is None or self._frame[0] != timestamp:
            self._frame = (timestamp, self._judge(timestamp, now))
        late = self._frame[1]
        if late:
            self.late_packets += 1
            self._watch_until = now + self._settle
        return late

    def _judge(self, timestamp: int, now: float) -> bool:
        media = self._ts.unwrap(timestamp) / self._clock
        mins = self._mins
        if mins and media < self._newest - self._restart:
            mins.clear()  # the timeline jumped back: start over
        if not mins or media > self._newest:
            self._newest = media
        offset = now - media
        while mins and mins[0][0] < self._newest - self._window:
            mins.popleft()
        late = bool(mins) and now < self._watch_until and offset - mins[0][1] > self._limit
        while mins and mins[-1][1] >= offset:
            mins.pop()
        mins.append((media, offset))
        return late


class AudioAssembler:
    """Audio: every packet is a frame; late and duplicate packets are dropped."""

    def __init__(self, sink: FrameSink, on_level: Callable[[int], None] | None = None) -> None:
        self._sink = sink
        self._on_level = on_level
        self._seq = _Unwrapper()
        self._last: int | None = None
        self.ssrc: int | None = None
        self.last_packet_at = 0.0
        self.late = LateFilter(48000)

    def add(self, packet: Any) -> tuple[bool, None]:
        now = time.perf_counter()
        self.last_packet_at = now
        self.ssrc = packet.ssrc
        seq = self._seq.unwrap(packet.sequence_number)
        if self._last is not None and seq <= self._last:
            return False, None
        self._last = seq
        if self.late.late(packet.timestamp, now):
            return False, None
        level = packet.extensions.audio_level
        if level is not None and self._on_level is not None:
            self._on_level(int(level[1]))
        data = depayloaded(packet)
        if data:
            self._sink(EncodedFrame(data=data, timestamp=packet.timestamp, keyframe=True,
                                    discontinuity=False, received_at=now))
        return False, None


class VideoAssembler:
    """VP8 frames from packets; bounded wait for missing packets."""

    def __init__(self, sink: FrameSink, frame_wait: float, layer: int | None = None) -> None:
        self._sink = sink
        self._layer = layer
        self._wait = frame_wait
        self._seq = _Unwrapper()
        self._packets: dict[int, Any] = {}
        self._next: int | None = None
        """Sequence number where the next frame starts (None: resynchronising)."""
        self._gap_since: float | None = None
        self._discontinuity = False
        self.ssrc: int | None = None
        self.last_packet_at = 0.0
        self.frames_dropped = 0
        self.counter = LossCounter()
        self.late = LateFilter(90000)
        self._late_at = float("-inf")
        self._nacked_at = float("-inf")
        self._nacks: list[int] = []
        self._floor = -1
        """Sequence number of the latest late packet: nothing up to it is used."""

    def add(self, packet: Any) -> tuple[bool, None]:
        """Store a depayloaded packet; returns (ask for a key frame, None)."""
        now = time.perf_counter()
        self.last_packet_at = now
        self.ssrc = packet.ssrc
        seq = self._seq.unwrap(packet.sequence_number)
        self.counter.add(seq)
        if self._next is not None and seq < self._next:
            return False, None  # late retransmission of something already sent or dropped
        if self._next is None and seq <= self._floor:
            return False, None  # resynchronising after a late packet: older ones are too
        if self.late.late(packet.timestamp, now):
            return self._skip_late(seq, now), None
        desc = parse_descriptor(packet.payload)
        if desc is None:
            return False, None
        self._packets[seq] = (packet, desc)
        if self._next is None:
            if not desc.start:
                return False, None
            self._next = seq
            self._drop_before(seq)
        before = self._next
        pli = self._emit_ready(now)
        if not self._has_gap():
            self._gap_since = None
        elif self._gap_since is None or self._next != before:
            self._gap_since = now
        elif now - self._gap_since > self._wait or len(self._packets) > MAX_PACKETS:
            self._give_up()
            pli = True
            pli |= self._emit_ready(now)
        elif now - self._gap_since >= NACK_RETRY and now - self._nacked_at >= NACK_RETRY:
            self._nacked_at = now
            self._nacks = self._missing()
        return pli, None

    def take_nacks(self) -> list[int]:
        """Sequence numbers (16-bit) to NACK again, once, after :meth:`add` found a gap
        that outlived ``NACK_RETRY``."""
        nacks, self._nacks = self._nacks, []
        return nacks

    def _missing(self) -> list[int]:
        assert self._next is not None
        held = self._packets
        return [s & 0xFFFF for s in range(self._next, max(held)) if s not in held][:MAX_NACKS]

    def _has_gap(self) -> bool:
        """A packet is missing at or after ``_next`` while later ones are stored."""
        if self._next is None or not self._packets:
            return False
        return max(self._packets) - self._next + 1 != len(self._packets)

    def _emit_ready(self, now: float) -> bool:
        """Send every complete frame starting at ``_next``."""
        while self._next is not None:
            first = self._packets.get(self._next)
            if first is None:
                return False
            timestamp = first[0].timestamp
            seq = self._next
            parts: list[bytes] = []
            while True:
                item = self._packets.get(seq)
                if item is None:
                    return False  # incomplete: wait (bounded, see add)
                pkt, _ = item
                if pkt.timestamp != timestamp:
                    break  # next frame began without a marker: this one is complete
                parts.append(depayloaded(pkt))
                seq += 1
                if pkt.marker:
                    break
            for s in range(self._next, seq):
                self._packets.pop(s, None)
            self._next = seq
            data = b"".join(parts)
            if not data:
                continue
            self._sink(EncodedFrame(
                data=data, timestamp=timestamp, keyframe=is_keyframe(data),
                discontinuity=self._discontinuity, tid=first[1].tid, received_at=now,
                layer=self._layer))
            self._discontinuity = False
        return False

    def _give_up(self) -> None:
        """Drop the incomplete frame(s); restart at the next frame start after the gap."""
        self.frames_dropped += 1
        assert self._next is not None
        first = self._packets.get(self._next)
        self._restart_after(self._next, None if first is None else first[0].timestamp)

    def _skip_late(self, seq: int, now: float) -> bool:
        """A late packet: drop it and every held packet up to it, carry on from the next
        frame start after it. True when a key frame should be asked for (the first
        late packet after a second without any)."""
        ask = now - self._late_at > 1.0
        self._late_at = now
        if self._next is not None and any(s < seq for s in self._packets):
            self.frames_dropped += 1
        self._floor = max(self._floor, seq)
        # (current packets that overtook it wait for their frame start)
        self._restart_after(seq, None, keep_later=True)
        return ask

    def _restart_after(self, after: int, stuck_ts: int | None, *,
                       keep_later: bool = False) -> None:
        """Flag a discontinuity; the next frame is the first held one starting after
        sequence number ``after`` (and not part of the frame at ``stuck_ts``). If none
        is held yet, resynchronise on the next frame start, dropping what is held
        (``keep_later``: only what is held up to ``after``)."""
        self._discontinuity = True
        self._gap_since = None
        for seq in sorted(self._packets):
            pkt, desc = self._packets[seq]
            if seq > after and desc.start and pkt.timestamp != stuck_ts:
                prev = self._packets.get(seq - 1)
                if prev is None or prev[0].marker or prev[0].timestamp != pkt.timestamp:
                    self._next = seq
                    self._drop_before(seq)
                    return
        if keep_later:
            self._drop_before(after + 1)
        else:
            self._packets.clear()
        self._next = None

    def _drop_before(self, seq: int) -> None:
        for s in [s for s in self._packets if s < seq]:
            del self._packets[s]
