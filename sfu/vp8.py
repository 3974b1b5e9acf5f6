"""The VP8 RTP payload descriptor (RFC 7741), read without touching the payload."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Vp8Descriptor:
    start: bool
    """S bit with partition index 0: the first packet of a frame."""
    tid: int | None
    """Temporal layer id, when the publisher sends temporal layers."""
    size: int
    """Descriptor length in bytes."""


def parse_descriptor(payload: bytes) -> Vp8Descriptor | None:
    """Parse the descriptor at the start of a VP8 RTP payload; None if truncated."""
    if not payload:
        return None
    b0 = payload[0]
    pos = 1
    tid: int | None = None
    if b0 & 0x80:  # X
        if len(payload) < 2:
            return None
        b1 = payload[1]
        pos = 2
        if b1 & 0x80:  # I: picture id
            if len(payload) <= pos:
                return None
            pos += 2 if payload[pos] & 0x80 else 1
        if b1 & 0x40:  # L: TL0PICIDX
            pos += 1
        if b1 & 0x30:  # T or K
            if len(payload) <= pos:
                return None
            if b1 & 0x20:
                tid = payload[pos] >> 6
            pos += 1
    if len(payload) < pos:
        return None
    return Vp8Descriptor(start=bool(b0 & 0x10) and (b0 & 0x07) == 0, tid=tid, size=pos)


def is_keyframe(frame: bytes) -> bool:
    """A depayloaded VP8 frame is a key frame when the P bit of its first byte is 0."""
    return bool(frame) and not frame[0] & 0x01


def keyframe_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a depayloaded VP8 key frame's header (RFC 6386 9.1); None for
    an inter frame or a truncated header. The two scaling bits are ignored."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height
