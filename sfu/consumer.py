"""Consumer: one subscriber's copy of a producer, played out through a slot's track."""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from sfu.encoded import EncodedFrame, ForwardedFrame
from sfu.fastpath import Outbound, TimestampLine
from sfu.layerswitch import LayerSwitch, Verdict
from sfu.linkstats import SubscriberLink
from sfu.rendition import RenditionSet, Tier
from sfu.stats import ForwardingStats

log = logging.getLogger("parley.sfu.consumer")

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000


class SlotTrack(MediaStreamTrack):
    """The outgoing track of one subscribe transceiver; lives as long as the transceiver.

    Consumers attach and detach; the slot keeps the RTP timestamp line
    continuous across them, so a reused m-line never jumps backwards.

    With :attr:`outbound` set (the fast path, ``SfuConfig.fast_path``) a pushed
    frame is sent at once by it; else it is queued for aiortc's sender, which
    reads it with :meth:`recv`.
    """

    def __init__(self, kind: str, queue_size: int, stats: ForwardingStats | None = None) -> None:
        super().__init__()
        self._stats = stats or ForwardingStats()
        self.kind = kind
        self._clock = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
        self._time_base = fractions.Fraction(1, self._clock)
        self._queue: asyncio.Queue[tuple[Any, float]] = asyncio.Queue(queue_size)
        self._line = TimestampLine(clock=self._clock)
        """Timestamps of the frames queued for aiortc's sender (the fast path keeps its own)."""
        self.consumer: Consumer | None = None
        self.frames_out = 0
        self.on_keyframe_request: Callable[[], None] = self._keyframe_request
        self.outbound: Outbound | None = None
        """The fast path's sender of this m-line, if it has one."""

    def _keyframe_request(self) -> None:
        self._stats.keyframe_requests += 1
        if self.consumer is not None:
            self.consumer.keyframe_requested()

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        packet, received_at = await self._queue.get()
        if received_at:
            self._stats.observe_latency(time.perf_counter() - received_at)
        return packet

    def attach(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.rebase()
        self._clear()

    def detach(self) -> None:
        self.consumer = None
        self._clear()

    def rebase(self) -> None:
        """The next frame comes from another source: continue the timestamp line."""
        self._line.rebase()
        if self.outbound is not None:
            self.outbound.header.rebase()

    def _clear(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def push(self, frame: EncodedFrame) -> bool:
        """Queue (or send) a frame; False when it is dropped: the queue is full, or the
        fast path's connection is not up yet."""
        if self.outbound is not None:
            return self._send(self.outbound, frame)
        pts = self._line.timestamp(frame.timestamp, frame.received_at or time.perf_counter())
        items: list[Any]
        if frame.decoded:  # transcoding baseline: the sender encodes these
            items = list(frame.decoded)
            for item in items:
                item.pts = pts
                item.time_base = self._time_base
        else:
            items = [ForwardedFrame(frame.data, pts)]
        try:
            for item in items:
                self._queue.put_nowait((item, frame.received_at))
        except asyncio.QueueFull:
            self._clear()
            return False
        self.frames_out += 1
        return True

    def _send(self, outbound: Outbound, frame: EncodedFrame) -> bool:
        try:
            sent = outbound.send_frame(frame)
        except Exception:  # never into the publisher's receive path
            log.exception("fast path send failed")
            return False
        if sent:
            self.frames_out += 1
        return sent


class Consumer:
    """Created by a SubscribeTransport; ``close()`` is idempotent.

    A consumer does not hold its producer: it knows the producer's id and gets
    two callbacks from whoever creates it. ``request_keyframe`` asks the
    producer for a key frame (the producer coalesces the requests); ``release``
    is called once, on close, so the producer forgets the consumer.

    A video consumer starts (and restarts after any loss) waiting for a key
    frame; frames before it are dropped, and the producer is asked for one.
    """

    def __init__(self, *, consumer_id: str, producer_id: str, kind: str, slot: SlotTrack,
                 app_data: dict[str, Any], request_keyframe: Callable[[], None],
                 release: Callable[[Consumer], None]) -> None:
        self.id = consumer_id
        self.producer_id = producer_id
        self.kind = kind
        self.app_data = app_data
        self._slot = slot
        self._request_keyframe = request_keyframe
        self._release = release
        self.paused = False
        self.closed = False
        self.waiting_keyframe = kind == "video"
        self.frames_forwarded = 0
        self.frames_dropped = 0
        self.on_close: Callable[[Consumer], None] | None = None
        self.link: SubscriberLink | None = None
        """The subscriber link this consumer is sent on (set by its transport)."""
        self.bandwidth_paused = False
        """Video held back because the subscriber's link cannot carry it."""
        self.layer = 2
        """Highest VP8 temporal layer forwarded (2: full, 1: half, 0: quarter rate)."""
        self._target_layer = 2
        self.frames_skipped_layer = 0
        self.rendition: RenditionSet | None = None
        """Served from a shared low-bitrate rendition instead of the original stream."""
        self.rendition_tier: Tier | None = None
        self.switch: LayerSwitch | None = None
        """Which simulcast layer this consumer receives (set for a simulcast producer)."""
        self.render_size: tuple[int, int] | None = None
        """(width, height) in device pixels the subscriber shows this video at, when it
        said; (0, 0): not shown."""
        slot.attach(self)

    @property
    def slot(self) -> SlotTrack:
        return self._slot

    @property
    def target_layer(self) -> int:
        return self._target_layer

    def set_layer(self, layer: int | None) -> None:
        """Bandwidth decision: a temporal-layer cap, or None to pause the video."""
        if layer is None:
            self.bandwidth_paused = True
            return
        if self.bandwidth_paused:
            self.bandwidth_paused = False
            self.waiting_keyframe = True
            self._request_keyframe()
        self._target_layer = layer
        if layer < self.layer:
            self.layer = layer  # going down is safe at once; going up waits for layer 0

    def use_rendition(self, renditions: RenditionSet, tier: Tier) -> None:
        self.rendition, self.rendition_tier = renditions, tier
        self.bandwidth_paused = False
        self.waiting_keyframe = True

    def leave_rendition(self) -> None:
        if self.rendition is None:
            return
        self.rendition, self.rendition_tier = None, None
        self.waiting_keyframe = True
        self._request_keyframe()

    def deliver_rendition(self, frame: EncodedFrame) -> None:
        """A frame of the rendition this consumer is served from."""
        if self.rendition is not None and not self.paused and not self.closed:
            self._forward(frame)

    def deliver(self, frame: EncodedFrame) -> None:
        if self.paused or self.closed or self.bandwidth_paused or self.rendition is not None:
            return
        if frame.layer is not None and self.switch is not None:
            verdict = self.switch.accept(frame.layer, frame.keyframe)
            if verdict is Verdict.DROP:
                return
            if verdict is Verdict.SWITCH:
                self._slot.rebase()
        if frame.tid is not None:
            if self._target_layer > self.layer and (frame.tid == 0 or frame.keyframe):
                self.layer = self._target_layer
            if frame.tid > self.layer:
                self.frames_skipped_layer += 1
                return
        self._forward(frame)

    def _forward(self, frame: EncodedFrame) -> None:
        if self.kind == "video":
            if frame.discontinuity and not frame.keyframe:
                self.waiting_keyframe = True
            if self.waiting_keyframe:
                if not frame.keyframe:
                    self.frames_dropped += 1
                    return
                self.waiting_keyframe = False
        if self._slot.push(frame):
            self.frames_forwarded += 1
        else:
            self.frames_dropped += 1
            if self.kind == "video":
                self.waiting_keyframe = True
                self._request_keyframe()

    def keyframe_requested(self) -> None:
        """The subscriber sent PLI/FIR: forward upstream (coalesced by the producer)."""
        self._request_keyframe()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self.kind == "video":
            self.waiting_keyframe = True
            self._request_keyframe()

    def producer_closed(self) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.rendition is not None:
            self.rendition.detach(self)
            self.rendition = None
        self._release(self)
        if self._slot.consumer is self:
            self._slot.detach()
        if self.on_close is not None:
            self.on_close(self)
