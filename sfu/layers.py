"""The simulcast layers of a producer: one encoding each, received and assembled apart."""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.encoded import EncodedFrame
from sfu.frames import VideoAssembler
from sfu.hooks_simulcast import SimulcastEncoding
from sfu.layeralloc import LayerCost
from sfu.vp8 import keyframe_size

ACTIVE_WITHIN = 1.0
"""Seconds since its last frame within which a layer counts as sent."""
HEADROOM = 1.15
"""A layer is counted at this much more than measured (its bitrate varies)."""
MIN_COST = 50_000
"""…and at least this many bits per second (just started: not measured yet)."""


@dataclass(kw_only=True, eq=False)
class ProducerLayer:
    """One encoding of a simulcast producer, with what was measured of it."""

    rid: str
    index: int
    """0: the lowest layer (the first RID the publisher listed)."""
    assembler: VideoAssembler
    encoding: SimulcastEncoding | None = None
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    width: int | None = None
    """From the last key frame's VP8 header."""
    height: int | None = None
    last_frame_at: float = 0.0
    """``time.perf_counter()`` of the last frame (0: none yet)."""
    bitrate: float = 0.0
    """Bits per second over the last full window (about a second)."""
    _window_start: float = field(default=0.0, repr=False)
    _window_bytes: int = field(default=0, repr=False)

    @property
    def ssrc(self) -> int | None:
        return self.encoding.ssrc if self.encoding is not None else self.assembler.ssrc

    def count(self, frame: EncodedFrame) -> None:
        self.frames += 1
        self.bytes += len(frame.data)
        self._window_bytes += len(frame.data)
        self.last_frame_at = frame.received_at
        if frame.keyframe:
            self.keyframes += 1
            size = keyframe_size(frame.data)
            if size is not None:
                self.width, self.height = size

    def tick(self, now: float) -> None:
        """Close the bitrate window once it is a second old."""
        if not self._window_start:
            self._window_start = now
        elif now - self._window_start >= 1.0:
            self.bitrate = self._window_bytes * 8 / (now - self._window_start)
            self._window_start, self._window_bytes = now, 0

    def active(self, now: float) -> bool:
        """The publisher is sending this layer."""
        return bool(self.last_frame_at) and now - self.last_frame_at < ACTIVE_WITHIN

    def cost(self, now: float) -> LayerCost:
        """What the layer allocator (sfu/layeralloc.py) needs of it."""
        return LayerCost(bitrate=max(float(MIN_COST), self.bitrate * HEADROOM),
                         width=self.width, active=self.active(now))

    def info(self, now: float) -> dict[str, object]:
        """What the producer reports of the layer (stats, the allocator's input)."""
        return {"rid": self.rid, "layer": self.index, "active": self.active(now),
                "frames": self.frames, "keyframes": self.keyframes,
                "bitrate": int(self.bitrate), "width": self.width, "height": self.height}
