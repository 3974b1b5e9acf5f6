"""Encoded frames as they pass through the SFU: in from a publisher, out to a subscriber.

Plain values; this module imports nothing else of the SFU's, so every other
module (hooks, assemblers, consumers, renditions) may use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A complete frame from a publisher (or a rendition), as a producer hands it on."""

    data: bytes
    timestamp: int
    """RTP timestamp of the frame, as the publisher sent it."""
    keyframe: bool
    discontinuity: bool
    """Frames were lost before this one: decoders need a key frame."""
    tid: int | None = None
    received_at: float = 0.0
    """``time.perf_counter()`` when the frame's last packet arrived."""
    decoded: tuple[Any, ...] = ()
    """Decoded frames; only in the transcoding baseline (``SfuConfig.transcode``)."""
    layer: int | None = None
    """Simulcast encoding the frame belongs to (0: the lowest); None without simulcast."""


class ForwardedFrame:
    """What a slot hands its sender: encoded bytes and the outgoing RTP timestamp.

    aiortc's sender packs anything that is not an ``av.Frame``; the SFU's packer
    reads these two fields, so no ``av.Packet`` (and no copy) is made per subscriber.
    """

    __slots__ = ("data", "pts")

    def __init__(self, data: bytes, pts: int) -> None:
        self.data = data
        self.pts = pts

    def __bytes__(self) -> bytes:
        return self.data
