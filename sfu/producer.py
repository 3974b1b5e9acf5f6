"""Producer: one incoming track of a publisher, fanned out to its consumers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame

from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.encoded import EncodedFrame
from sfu.frames import AudioAssembler, VideoAssembler
from sfu.hooks import install_assembler, intercept_remb, send_nack, send_pli, send_remb
from sfu.linkstats import PublisherLink
from sfu.rendition import RenditionSet
from sfu.tasks import TaskSet

log = logging.getLogger("parley.sfu.producer")


class Producer:
    """Created by a PublishTransport for each incoming track.

    Owns the monitor task (key-frame re-requests, stall detection) and closes
    its consumers when closed. ``close()`` is idempotent.
    """

    def __init__(
        self,
        *,
        producer_id: str,
        kind: str,
        receiver: RTCRtpReceiver,
        config: SfuConfig,
        app_data: dict[str, Any],
    ) -> None:
        self.id = producer_id
        self.kind = kind
        self.app_data = app_data
        self._receiver = receiver
        self._config = config
        self.consumers: set[Consumer] = set()
        self.paused = False
        self.closed = False
        self.stalled = False
        self.audio_level = 127
        self.frames_in = 0
        self.bytes_in = 0
        self.on_stalled: Callable[[Producer, bool], None] | None = None
        self._close_listeners: list[Callable[[Producer], None]] = []
        self._last_pli = 0.0
        self._pli_wanted = False
        self._created = time.perf_counter()
        self.assembler: AudioAssembler | VideoAssembler
        if kind == "audio":
            self.assembler = AudioAssembler(self._on_frame, self._on_level)
        else:
            self.assembler = VideoAssembler(self._on_frame, config.frame_wait)
        self.decoder_queue = install_assembler(receiver, _PliAwareAssembler(self))
        self.link = PublisherLink()
        self.renditions: RenditionSet | None = None
        """Shared low-bitrate renditions of this producer, while someone needs one."""
        self.has_layers = False
        """The publisher sends VP8 temporal layers (seen in its descriptors)."""
        self._remb = intercept_remb(receiver) if config.bandwidth.enabled else None
        self._decoder: Any = None
        if config.transcode:
            self._decoder = _baseline_decoder(kind)
        self._rtcp = TaskSet("producer-rtcp")
        """PLI and REMB sends in flight."""
        self._monitor = asyncio.get_running_loop().create_task(
            self._monitor_loop(), name=f"producer-{producer_id}")

    # -- frames ----------------------------------------------------------------
    def _on_frame(self, frame: EncodedFrame) -> None:
        self.frames_in += 1
        self.bytes_in += len(frame.data)
        if frame.tid is not None:
            self.has_layers = True
        if self.paused:
            return
        if self.renditions is not None:
            self.renditions.feed(frame)
        if self._decoder is not None:
            decoded = tuple(self._decoder.decode(JitterFrame(frame.data, frame.timestamp)))
            frame = dataclasses.replace(frame, decoded=decoded)
        for consumer in list(self.consumers):
            consumer.deliver(frame)

    def _on_level(self, level: int) -> None:
        self.audio_level = level if self.audio_level == 127 else (self.audio_level * 3 + level) // 4

    def publisher_estimate(self) -> int | None:
        """The receiver's delay-based estimate of the publisher's own link, if any."""
        return self._remb.estimate if self._remb is not None else None

    def send_remb(self, bitrate: int) -> None:
        ssrc = self.assembler.ssrc
        if ssrc is None or self.closed:
            return
        self._rtcp.spawn(send_remb(self._receiver, ssrc, bitrate))

    def send_nack(self, lost: list[int]) -> None:
        """Ask the publisher again for packets a frame still waits for."""
        ssrc = self.assembler.ssrc
        if ssrc is None or self.closed or not lost:
            return
        self._rtcp.spawn(send_nack(self._receiver, ssrc, lost))

    def set_paused(self, paused: bool) -> None:
        """Stop or restart forwarding at the source (a muted track). Video consumers
        restart from a key frame: the frames held back are references they lack."""
        if self.paused and not paused and self.kind == "video":
            for consumer in self.consumers:
                consumer.waiting_keyframe = True
            self.paused = False
            self.request_keyframe()
        self.paused = paused

    # -- key frames ----------------------------------------------------------
    def request_keyframe(self) -> None:
        """Coalesced: at most one PLI per ``keyframe_interval``; later ones are deferred."""
        if self.kind != "video" or self.closed:
            return
        now = time.perf_counter()
        if now - self._last_pli >= self._config.keyframe_interval:
            self._send_pli(now)
        else:
            self._pli_wanted = True

    def _send_pli(self, now: float) -> None:
        ssrc = self.assembler.ssrc
        if ssrc is None:
            self._pli_wanted = True
            return
        self._last_pli = now
        self._pli_wanted = False
        self._rtcp.spawn(send_pli(self._receiver, ssrc))

    async def _monitor_loop(self) -> None:
        tick = min(0.25, self._config.keyframe_interval / 2)
        ticked = time.perf_counter()
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            lag, ticked = now - ticked - tick, now
            # (held back for bandwidth, paused or on a rendition: no use for one yet)
            waiting = any(c.waiting_keyframe and not (c.bandwidth_paused or c.paused)
                          and c.rendition is None for c in self.consumers)
            if (self._pli_wanted or waiting) and \
                    now - self._last_pli >= self._config.keyframe_interval:
                self._send_pli(now)
            if lag > 1.0:
                # This process did not run (stopped, blocked): the media it has not read
                # yet is in its socket. Judge the publisher once that has been read.
                continue
            last = self.assembler.last_packet_at or self._created
            stalled = now - last > self._config.stall_timeout
            if stalled != self.stalled:
                self.stalled = stalled
                log.info("producer %s", "stalled" if stalled else "resumed",
                         extra={"producer": self.id})
                if self.on_stalled is not None:
                    self.on_stalled(self, stalled)

    # -- lifecycle -------------------------------------------------------------
    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.add(consumer)
        self.request_keyframe()

    def remove_consumer(self, consumer: Consumer) -> None:
        self.consumers.discard(consumer)

    async def close(self) -> None:
        """Close every consumer and stop the monitor. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self._monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._monitor
        await self._rtcp.cancel()
        for consumer in list(self.consumers):
            consumer.producer_closed()
        self.consumers.clear()
        for listener in self._close_listeners:
            listener(self)

    def add_close_listener(self, listener: Callable[[Producer], None]) -> None:
        """Called once, after the producer and its consumers are closed."""
        self._close_listeners.append(listener)


def _baseline_decoder(kind: str) -> Any:
    """A decoder for the transcoding baseline (never used when forwarding)."""
    if kind == "audio":
        codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    else:
        codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000)
    return get_decoder(codec)


class _PliAwareAssembler:
    """Adapts the assembler to aiortc's jitter-buffer call; routes its PLI through coalescing."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._assembler = producer.assembler

    @property
    def capacity(self) -> int:
        return 1024

    def add(self, packet: Any) -> tuple[bool, None]:
        assembler = self._assembler
        pli, _ = assembler.add(packet)
        if pli:
            self._producer.request_keyframe()
        if isinstance(assembler, VideoAssembler) and (nacks := assembler.take_nacks()):
            self._producer.send_nack(nacks)
        return False, None
