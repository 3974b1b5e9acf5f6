"""Counting received frames without decoding them (``ParleyClient(decode=False)``).

A counter takes the place of an aiortc receiver's jitter buffer (client/hooks.py):
aiortc still does SRTP, NACKs and depayloading, then hands each RTP packet to
``add``, which always returns no frame, so nothing reaches a decoder. A frame
is counted once, when it is complete; ``on_frame(keyframe)`` is called for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc.codecs.vpx import VpxPayloadDescriptor

FrameCallback = Callable[[bool], None]
"""Called with ``keyframe`` for each complete frame (audio frames count as key frames)."""

_RECENT = 64
"""How many counted video frames are remembered, so a late retransmission is not recounted."""


def _newer(seq: int, last: int) -> bool:
    """16-bit RTP sequence number ``seq`` comes after ``last``."""
    return 0 < (seq - last) & 0xFFFF < 0x8000


class AudioFrameCounter:
    """Opus: every new packet with a payload is a frame; duplicates and late packets are not."""

    def __init__(self, on_frame: FrameCallback) -> None:
        self._on_frame = on_frame
        self._last: int | None = None

    def add(self, packet: Any) -> tuple[bool, None]:
        seq = packet.sequence_number
        if self._last is not None and not _newer(seq, self._last):
            return False, None
        self._last = seq
        if packet._data:
            self._on_frame(True)
        return False, None


@dataclass
class _Partial:
    since: float
    seqs: set[int] = field(default_factory=set)
    first: int | None = None
    """Sequence number of the packet that starts the frame (S bit, partition 0)."""
    last: int | None = None
    """Sequence number of the packet with the marker bit."""
    keyframe: bool = False

    def complete(self) -> bool:
        if self.first is None or self.last is None:
            return False
        return ((self.last - self.first) & 0xFFFF) + 1 == len(self.seqs)


class VideoFrameCounter:
    """VP8: a frame counts once every packet from its first (S bit) to its last (marker) came.

    A frame still incomplete ``frame_wait`` seconds after its first packet is given
    up, and ``add`` asks aiortc for a key frame (PLI).
    """

    def __init__(self, on_frame: FrameCallback, frame_wait: float = 0.3) -> None:
        self._on_frame = on_frame
        self._wait = frame_wait
        self._partial: dict[int, _Partial] = {}
        """Incomplete frames by RTP timestamp."""
        self._counted: deque[int] = deque(maxlen=_RECENT)
        self.frames_given_up = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        now = time.perf_counter()
        pli = self._give_up_stale(now)
        if not packet.payload or packet.timestamp in self._counted:
            return pli, None
        frame = self._partial.setdefault(packet.timestamp, _Partial(since=now))
        frame.seqs.add(packet.sequence_number)
        descriptor, _ = VpxPayloadDescriptor.parse(packet.payload)
        if descriptor.partition_start and descriptor.partition_id == 0:
            frame.first = packet.sequence_number
            # The P bit of a VP8 frame's first byte is 0 on a key frame.
            frame.keyframe = bool(packet._data) and not packet._data[0] & 0x01
        if packet.marker:
            frame.last = packet.sequence_number
        if frame.complete():
            del self._partial[packet.timestamp]
            self._counted.append(packet.timestamp)
            self._on_frame(frame.keyframe)
        return pli, None

    def _give_up_stale(self, now: float) -> bool:
        stale = [ts for ts, frame in self._partial.items() if now - frame.since > self._wait]
        for ts in stale:
            del self._partial[ts]
        self.frames_given_up += len(stale)
        return bool(stale)
