"""Reassembling encoded frames from RTP, in place of aiortc's jitter buffer.

A :class:`FrameAssembler` is installed on each SFU receiver (sfu/hooks.py).
aiortc still does SRTP, NACKs and depayloading before it; the assembler hands
each complete frame straight to the producer on the event loop, instead of
to a decoder thread. Unlike the stock buffer it never waits long for a lost
packet: after ``frame_wait`` it drops the incomplete frame, flags a
discontinuity (subscribers hold until the next key frame) and asks for a key
frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sfu.encoded import EncodedFrame
from sfu.hooks import depayloaded
from sfu.vp8 import is_keyframe, parse_descriptor

__all__ = ["MAX_PACKETS", "AudioAssembler", "EncodedFrame", "FrameSink", "LossCounter",
           "VideoAssembler"]

MAX_PACKETS = 1024


FrameSink = Callable[[EncodedFrame], None]


class _Unwrapper:
    """16-bit RTP sequence numbers → monotonically comparable integers."""

    def __init__(self) -> None:
        self._last: int | None = None

    def unwrap(self, seq: int) -> int:
        if self._last is None:
            self._last = seq
            return seq
        delta = (seq - self._last) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
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


class AudioAssembler:
    """Audio: every packet is a frame; late and duplicate packets are dropped."""

    def __init__(self, sink: FrameSink, on_level: Callable[[int], None] | None = None) -> None:
        self._sink = sink
        self._on_level = on_level
        self._seq = _Unwrapper()
        self._last: int | None = None
        self.ssrc: int | None = None
        self.last_packet_at = 0.0

    def add(self, packet: Any) -> tuple[bool, None]:
        now = time.perf_counter()
        self.last_packet_at = now
        self.ssrc = packet.ssrc
        seq = self._seq.unwrap(packet.sequence_number)
        if self._last is not None and seq <= self._last:
            return False, None
        self._last = seq
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

    def add(self, packet: Any) -> tuple[bool, None]:
        """Store a depayloaded packet; returns (ask for a key frame, None)."""
        now = time.perf_counter()
        self.last_packet_at = now
        self.ssrc = packet.ssrc
        seq = self._seq.unwrap(packet.sequence_number)
        self.counter.add(seq)
        if self._next is not None and seq < self._next:
            return False, None  # late retransmission of something already sent or dropped
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
        return pli, None

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
        self._discontinuity = True
        self._gap_since = None
        assert self._next is not None
        stuck_ts = None
        first = self._packets.get(self._next)
        if first is not None:
            stuck_ts = first[0].timestamp
        for seq in sorted(self._packets):
            pkt, desc = self._packets[seq]
            if seq > self._next and desc.start and pkt.timestamp != stuck_ts:
                prev = self._packets.get(seq - 1)
                if prev is None or prev[0].marker or prev[0].timestamp != pkt.timestamp:
                    self._next = seq
                    self._drop_before(seq)
                    return
        self._packets.clear()
        self._next = None

    def _drop_before(self, seq: int) -> None:
        for s in [s for s in self._packets if s < seq]:
            del self._packets[s]
