"""Shared low-bitrate renditions for constrained subscribers.

When a subscriber's link cannot carry a publisher's video, and the publisher
sends no temporal layers to drop (an aiortc or Safari publisher), pausing the
video is the only forwarding answer. Instead the SFU may decode that
publisher's video **once** and encode it **once per quality tier**, and every
constrained subscriber of that publisher shares the tier that fits it.
Subscribers with enough capacity stay on pure forwarding.

A :class:`RenditionSet` exists per producer only while some consumer uses one
of its tiers; it runs one worker thread (decode, scale, encode), and a
node-wide :class:`RenditionBudget` bounds how many tiers run at once. A
router's :class:`RenditionPool` holds its sets and decides, each bandwidth
interval, which constrained consumer is served from which tier.

This module knows consumers and producers only through the two small
protocols below (:class:`Subscriber`, :class:`Source`), so it imports neither.
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
from typing import Any, Protocol

import av
from aiortc.codecs.vpx import Vp8Decoder
from aiortc.jitterbuffer import JitterFrame

from sfu.encoded import EncodedFrame
from sfu.linkstats import PublisherLink, SubscriberLink
from sfu.tasks import TaskSet
from sfu.vp8 import is_keyframe

log = logging.getLogger("parley.sfu.rendition")

_TIME_BASE = fractions.Fraction(1, 90000)


@dataclass(frozen=True)
class Tier:
    bitrate: int
    """Target bits per second of the encoded rendition."""
    scale: int
    """Width and height are divided by this."""


DEFAULT_TIERS = (Tier(bitrate=250_000, scale=2), Tier(bitrate=100_000, scale=4))


class Subscriber(Protocol):
    """What renditions need of a consumer (sfu/consumer.py's Consumer)."""

    @property
    def rendition(self) -> RenditionSet | None: ...

    @property
    def rendition_tier(self) -> Tier | None: ...

    def use_rendition(self, renditions: RenditionSet, tier: Tier) -> None: ...

    def leave_rendition(self) -> None: ...

    def deliver_rendition(self, frame: EncodedFrame) -> None: ...


class Source(Protocol):
    """What renditions need of a producer (sfu/producer.py's Producer)."""

    renditions: RenditionSet | None
    """The producer feeds its frames to this set while it exists."""

    @property
    def id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def has_layers(self) -> bool: ...

    @property
    def link(self) -> PublisherLink: ...

    def request_keyframe(self) -> None: ...


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

    def __init__(self, *, producer_id: str, request_keyframe: Callable[[], None],
                 tiers: tuple[Tier, ...], budget: RenditionBudget,
                 on_empty: Callable[[RenditionSet], None]) -> None:
        self.producer_id = producer_id
        self._request_keyframe = request_keyframe
        self.tiers = tiers
        self._budget = budget
        self._on_empty = on_empty
        self.consumers: dict[Tier, set[Subscriber]] = {}
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

    def attach(self, consumer: Subscriber, tier: Tier) -> bool:
        """Serve ``consumer`` from ``tier``; False if the node's budget is spent."""
        with self._lock:
            if tier not in self._encoders:
                if not self._budget.acquire():
                    return False
                self._encoders[tier] = _Encoder(tier)
                log.info("rendition started", extra={"producer": self.producer_id,
                                                     "bitrate": tier.bitrate})
            self._keyframe.add(tier)
        self.consumers.setdefault(tier, set()).add(consumer)
        self._request_keyframe()
        return True

    def move(self, consumer: Subscriber, tier: Tier) -> bool:
        """Switch ``consumer`` to another tier of this set (the old tier stops if unused)."""
        if not self.attach(consumer, tier):
            return False
        self._leave_tiers(consumer, keep=tier)
        return True

    def detach(self, consumer: Subscriber) -> None:
        self._leave_tiers(consumer, keep=None)
        if not self.consumers:
            self._on_empty(self)

    def _leave_tiers(self, consumer: Subscriber, keep: Tier | None) -> None:
        for tier, users in list(self.consumers.items()):
            if tier == keep:
                continue
            users.discard(consumer)
            if not users:
                del self.consumers[tier]
                with self._lock:
                    if self._encoders.pop(tier, None) is not None:
                        self._budget.release()
                log.info("rendition stopped", extra={"producer": self.producer_id,
                                                     "bitrate": tier.bitrate})

    def feed(self, frame: EncodedFrame) -> None:
        """A frame from the producer (event loop); decoded and encoded in the worker."""
        try:
            self._input.put_nowait(frame)
        except queue.Full:  # the worker is behind: restart from a key frame
            while not self._input.empty():
                self._input.get_nowait()
            self._request_keyframe()

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
                self._loop.call_soon_threadsafe(self._request_keyframe)
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


class RenditionPool:
    """A router's rendition sets (one per producer, while used) and the policy that
    serves constrained consumers from them. ``close()`` is idempotent."""

    def __init__(self, budget: RenditionBudget, tiers: tuple[Tier, ...] = DEFAULT_TIERS) -> None:
        self.budget = budget
        self.tiers = tiers
        self.sets: dict[str, RenditionSet] = {}
        """By producer id."""
        self._closing = TaskSet("rendition-close")
        self.closed = False

    def serve(self, consumer: Subscriber, source: Source | None, share: float,
              layer: int | None, link: SubscriberLink | None) -> bool:
        """Serve a constrained consumer from a shared rendition when layers cannot help.

        ``share`` and ``layer`` are the allocation's decision for the consumer's link;
        ``source`` is its producer (None: gone). True: the consumer is served from a
        rendition; False: layers or a pause apply to the original stream.
        """
        if source is None:
            self._leave(consumer)
            return False
        # What the original stream needs at the least: its lowest temporal layer
        # (about 30 % of its bitrate) or, without layers, all of it.
        need = source.link.bitrate * (0.3 if source.has_layers else 1.0)
        current = consumer.rendition
        if current is not None:  # hysteresis: go back to the original only with room
            needs = layer is None or share < 1.3 * need
        else:
            needs = layer is None or share < need
        if link is not None and needs:
            link.probe_target = max(link.probe_target, 1.3 * need)
        if not needs or source.closed:
            self._leave(consumer)
            return False
        renditions = self.sets.get(source.id)
        if renditions is None:
            renditions = RenditionSet(
                producer_id=source.id, request_keyframe=source.request_keyframe,
                tiers=self.tiers, budget=self.budget,
                on_empty=lambda idle: self._idle(idle, source))
            self.sets[source.id] = renditions
            source.renditions = renditions
        return self._choose_tier(consumer, source, renditions, share)

    def _choose_tier(self, consumer: Subscriber, source: Source, renditions: RenditionSet,
                     share: float) -> bool:
        current = consumer.rendition
        tier = renditions.tier_for(share)
        kept = consumer.rendition_tier
        if current is renditions and kept is not None and (
                tier == kept or (share >= 0.7 * kept.bitrate and (
                    tier is None or tier.bitrate < kept.bitrate))):
            return True  # hysteresis: keep the tier while the link roughly carries it
        if current is renditions and tier is not None:
            if renditions.move(consumer, tier):
                consumer.use_rendition(renditions, tier)
                return True
        if current is not None:
            self._leave(consumer)
            if current is renditions:  # it may have just closed: start afresh next time
                return False
        if tier is None or not renditions.attach(consumer, tier):
            if not renditions.consumers:
                self._idle(renditions, source)
            return False
        consumer.use_rendition(renditions, tier)
        return True

    @staticmethod
    def _leave(consumer: Subscriber) -> None:
        current = consumer.rendition
        if current is not None:
            consumer.leave_rendition()
            current.detach(consumer)

    def _idle(self, renditions: RenditionSet, source: Source) -> None:
        if self.sets.get(renditions.producer_id) is renditions:
            del self.sets[renditions.producer_id]
        if source.renditions is renditions:
            source.renditions = None
        self._closing.spawn(renditions.close())

    async def close(self) -> None:
        """Stop every set and wait for the ones already stopping."""
        if self.closed:
            return
        self.closed = True
        for renditions in list(self.sets.values()):
            await renditions.close()
        self.sets.clear()
        await self._closing.wait()
