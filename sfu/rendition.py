"""Shared low-bitrate renditions for constrained subscribers.

When a subscriber's link cannot carry a publisher's video, and the publisher
sends no temporal layers to drop (an aiortc or Safari publisher), pausing the
video is the only forwarding answer. Instead the SFU may decode that
publisher's video **once** and encode it **once per quality tier**, and every
constrained subscriber of that publisher shares the tier that fits it.
Subscribers with enough capacity stay on pure forwarding.

A :class:`RenditionSet` exists per producer only while some consumer uses one
of its tiers; it runs one worker thread (decode, scale, encode), and a
node-wide :class:`RenditionBudget` bounds how many tiers run at once.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.jitterbuffer import JitterFrame

from sfu.frames import EncodedFrame
from sfu.vp8 import is_keyframe

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.producer import Producer

log = logging.getLogger("parley.sfu.rendition")

_TIME_BASE = fractions.Fraction(1, 90000)


@dataclass(frozen=True)
class Tier:
    bitrate: int
    """Target bits per second of the encoded rendition."""
    scale: int
    """Width and height are divided by this."""


DEFAULT_TIERS = (Tier(bitrate=250_000, scale=2), Tier(bitrate=100_000, scale=4))


class RenditionBudget:
    """Node-wide: how many tiers may be encoding at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)


class _Encoder:
    """libvpx at a fixed low bitrate (aiortc's encoder will not go below 250 kbit/s)."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier
        self.codec: Any = None
        self.frames = 0

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> bytes:
        width = max(16, frame.width // self.tier.scale // 2 * 2)
        height = max(16, frame.height // self.tier.scale // 2 * 2)
        if self.codec is not None and (self.codec.width, self.codec.height) != (width, height):
            self.codec = None
        if self.codec is None:
            keyframe = True
            codec = av.CodecContext.create("libvpx", "w")
            codec.width, codec.height = width, height
            codec.bit_rate = self.tier.bitrate
            codec.pix_fmt = "yuv420p"
            codec.time_base = _TIME_BASE
            codec.gop_size = 3000
            codec.thread_count = 1  # small pictures: one thread, predictable cost
            codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                             "error-resilient": "1", "maxrate": str(self.tier.bitrate),
                             "minrate": str(self.tier.bitrate),
                             "bufsize": str(self.tier.bitrate)}
            self.codec = codec
        scaled = frame.reformat(width=width, height=height, format="yuv420p",
                                interpolation="FAST_BILINEAR")
        scaled.pts = self.frames
        scaled.time_base = _TIME_BASE
        if keyframe:
            scaled.pict_type = av.video.frame.PictureType.I
        self.frames += 1
        return b"".join(bytes(p) for p in self.codec.encode(scaled))


class RenditionSet:
    """Decode-once, encode-per-tier for one producer. ``close()`` is idempotent."""

    def __init__(self, producer: Producer, tiers: tuple[Tier, ...], budget: RenditionBudget,
                 on_empty: Callable[[RenditionSet], None]) -> None:
        self.producer = producer
        self.tiers = tiers
        self._budget = budget
        self._on_empty = on_empty
        self.consumers: dict[Tier, set[Consumer]] = {}
        self._encoders: dict[Tier, _Encoder] = {}
        self._keyframe: set[Tier] = set()
        self._input: queue.Queue[EncodedFrame | None] = queue.Queue(maxsize=8)
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="rendition", daemon=True)
        self._thread.start()
        self.closed = False
        self.cpu_seconds = 0.0
        self.frames_encoded = 0

    def tier_for(self, share: float) -> Tier | None:
        """The best tier a link with ``share`` bits per second can take (10 % headroom)."""
        for tier in sorted(self.tiers, key=lambda t: -t.bitrate):
            if share >= tier.bitrate * 1.1:
                return tier
        return None

    def attach(self, consumer: Consumer, tier: Tier) -> bool:
        """Serve ``consumer`` from ``tier``; False if the node's budget is spent."""
        with self._lock:
            if tier not in self._encoders:
                if not self._budget.acquire():
                    return False
                self._encoders[tier] = _Encoder(tier)
                log.info("rendition started", extra={"producer": self.producer.id,
                                                     "bitrate": tier.bitrate})
            self._keyframe.add(tier)
        self.consumers.setdefault(tier, set()).add(consumer)
        self.producer.request_keyframe()
        return True

    def move(self, consumer: Consumer, tier: Tier) -> bool:
        """Switch ``consumer`` to another tier of this set (the old tier stops if unused)."""
        if not self.attach(consumer, tier):
            return False
        self._leave_tiers(consumer, keep=tier)
        return True

    def detach(self, consumer: Consumer) -> None:
        self._leave_tiers(consumer, keep=None)
        if not self.consumers:
            self._on_empty(self)

    def _leave_tiers(self, consumer: Consumer, keep: Tier | None) -> None:
        for tier, users in list(self.consumers.items()):
            if tier == keep:
                continue
            users.discard(consumer)
            if not users:
                del self.consumers[tier]
                with self._lock:
                    if self._encoders.pop(tier, None) is not None:
                        self._budget.release()
                log.info("rendition stopped", extra={"producer": self.producer.id,
                                                     "bitrate": tier.bitrate})

    def feed(self, frame: EncodedFrame) -> None:
        """A frame from the producer (event loop); decoded and encoded in the worker."""
        try:
            self._input.put_nowait(frame)
        except queue.Full:  # the worker is behind: restart from a key frame
            while not self._input.empty():
                self._input.get_nowait()
            self.producer.request_keyframe()

    def _work(self) -> None:
        decoder = Vp8Decoder()
        while True:
            frame = self._input.get()
            if frame is None:
                return
            started = time.thread_time()
            try:
                pictures = decoder.decode(JitterFrame(frame.data, frame.timestamp))
            except av.FFmpegError:
                self._loop.call_soon_threadsafe(self.producer.request_keyframe)
                continue
            with self._lock:
                encoders = list(self._encoders.items())
                force = set(self._keyframe)
                self._keyframe.clear()
            for picture in pictures:
                if not isinstance(picture, av.VideoFrame):
                    continue
                for tier, encoder in encoders:
                    data = encoder.encode(picture, keyframe=tier in force)
                    if data:
                        out = EncodedFrame(data=data, timestamp=frame.timestamp,
                                           keyframe=is_keyframe(data), discontinuity=False,
                                           received_at=frame.received_at)
                        self._loop.call_soon_threadsafe(self._deliver, tier, out)
                        self.frames_encoded += 1
            self.cpu_seconds += time.thread_time() - started

    def _deliver(self, tier: Tier, frame: EncodedFrame) -> None:
        for consumer in list(self.consumers.get(tier, ())):
            consumer.deliver_rendition(frame)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._lock:
            for _ in self._encoders:
                self._budget.release()
            self._encoders.clear()
        self.consumers.clear()
        while True:
            try:
                self._input.put_nowait(None)
                break
            except queue.Full:
                self._input.get_nowait()
        await self._loop.run_in_executor(None, self._thread.join)
