"""Client-side media helpers: pre-encoded test streams for bots, tests and load generation.

A pattern is encoded once (VP8 with libvpx, Opus with libopus through aiortc's
own encoders); the tracks then loop the encoded packets with rewritten
timestamps, so a publisher spends no CPU on encoding.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000


@dataclass(frozen=True)
class EncodedClip:
    """Encoded frames of one kind, in order; the first video frame is a key frame."""

    kind: str
    frames: tuple[bytes, ...]
    fps: float
    clock: int


def _pattern(width: int, height: int, i: int) -> av.VideoFrame:
    """Moving stripes and a checkerboard in luma; flat chroma."""
    frame = av.VideoFrame(width, height, "yuv420p")
    shift = (i * 8) % width
    row_cache: dict[int, bytes] = {}
    rows = []
    for y in range(height):
        key = (y // 32 + i // 4) % 2
        if key not in row_cache:
            row_cache[key] = bytes(
                ((x + shift) * 200 // width + (55 if (x // 32 + key) % 2 else 0)) & 0xFF
                for x in range(width))
        rows.append(row_cache[key])
    luma = frame.planes[0]
    stride = luma.line_size
    pad = b"\0" * (stride - width)
    luma.update(b"".join(r + pad for r in rows))
    for plane in frame.planes[1:]:
        plane.update(bytes([128]) * plane.buffer_size)
    return frame


def encode_video(seconds: float = 2.0, fps: int = 30, width: int = 640, height: int = 480,
                 bitrate: int = 1_000_000) -> EncodedClip:
    """A moving test pattern as VP8 frames (a key frame first, then only deltas)."""
    encoder = Vp8Encoder()
    encoder.target_bitrate = bitrate
    frames: list[bytes] = []
    for i in range(int(seconds * fps)):
        frame = _pattern(width, height, i)
        frame.pts = i * VIDEO_CLOCK // fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        payloads, _ = encoder.encode(frame, force_keyframe=(i == 0))
        frames.append(_vp8_frame(payloads))
    return EncodedClip(kind="video", frames=tuple(frames), fps=fps, clock=VIDEO_CLOCK)


def _vp8_frame(payloads: list[bytes]) -> bytes:
    from aiortc.codecs.vpx import vp8_depayload

    return b"".join(vp8_depayload(p) for p in payloads)


def encode_audio(seconds: float = 2.0, tone_hz: float = 440.0) -> EncodedClip:
    """A tone as 20 ms Opus packets."""
    encoder = OpusEncoder()
    frames: list[bytes] = []
    samples = 960
    for i in range(int(seconds * 50)):
        pcm = array("h")
        for n in range(samples):
            v = int(math.sin(2 * math.pi * tone_hz * (n + i * samples) / AUDIO_CLOCK) * 8000)
            pcm.extend((v, v))
        frame = av.AudioFrame(format="s16", layout="stereo", samples=samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i * samples
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK)
        payloads, _ = encoder.encode(frame)
        frames.extend(payloads)
    return EncodedClip(kind="audio", frames=tuple(frames), fps=50.0, clock=AUDIO_CLOCK)


class EncodedTrack(MediaStreamTrack):
    """Plays an EncodedClip in a loop in real time, as ``av.Packet``s (no encoding).

    ``loops`` bounds the playback (None: forever). After the first pass only
    delta frames would follow a key frame, so a key-frame request restarts the
    clip at its key frame.
    """

    def __init__(self, clip: EncodedClip, loops: int | None = None) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self._loops = loops
        self._index = 0
        self._count = 0
        self._start: float | None = None
        self._time_base = fractions.Fraction(1, clip.clock)
        self.sent: list[bytes] = []
        """Every frame handed to the sender, for tests (bounded by ``keep``)."""
        self.keep = 0
        self.on_frame: Callable[[bytes], None] | None = None
        """Called with each frame as it is handed to the sender (client/light.py ``SendLog``)."""
        self.frames_sent = 0

    def restart(self) -> None:
        """Next frame is the key frame (call on a key-frame request)."""
        self._index = 0

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self._loops is not None and self._count >= self._loops * len(self.clip.frames):
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._count / self.clip.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        data = self.clip.frames[self._index]
        packet = av.Packet(data)
        packet.pts = int(self._count * self.clip.clock / self.clip.fps)
        packet.time_base = self._time_base
        self._index = (self._index + 1) % len(self.clip.frames)
        self._count += 1
        if len(self.sent) < self.keep:
            self.sent.append(data)
        self.frames_sent += 1
        if self.on_frame is not None:
            self.on_frame(data)
        return packet
