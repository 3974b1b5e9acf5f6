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
from sfu.hooks_simulcast import SimulcastDemux, simulcast_demux
from sfu.layers import ProducerLayer
from sfu.linkstats import PublisherLink
from sfu.rendition import RenditionSet
from sfu.simulcast import SimulcastOffer
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
        simulcast: SimulcastOffer | None = None,
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
        self._last_pli: dict[int | None, float] = {}
        """When a PLI last went out, by layer (None: the one stream of a producer
        without simulcast)."""
        self._pli_wanted: set[int | None] = set()
        self._created = time.perf_counter()
        self.assembler: AudioAssembler | VideoAssembler
        self._demux: SimulcastDemux | None = None
        self.layers: tuple[ProducerLayer, ...] = ()
        """Simulcast layers, lowest first; empty when the publisher sends one encoding."""
        if kind == "audio":
            self.assembler = AudioAssembler(self._on_frame, self._on_level)
        elif simulcast is None:
            self.assembler = VideoAssembler(self._on_frame, config.frame_wait)
        else:
            self.layers = self._receive_layers(simulcast, str(app_data.get("mid", "")))
            self.assembler = self.layers[-1].assembler
        # (simulcast: the demultiplexer takes every encoding's packets; none should reach
        # the receiver itself, and any that does is not mixed into a layer)
        self.decoder_queue = install_assembler(
            receiver, _Discard() if self.layers else _PliAwareAssembler(self))
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

    def _receive_layers(self, offer: SimulcastOffer, mid: str) -> tuple[ProducerLayer, ...]:
        """One assembler per encoding, each fed by the transport's simulcast demultiplexer."""
        layers = tuple(
            ProducerLayer(rid=rid, index=i, assembler=VideoAssembler(
                self._on_frame, self._config.frame_wait, layer=i))
            for i, rid in enumerate(offer.rids))
        self._demux = simulcast_demux(self._receiver.transport)
        sinks = [_PliAwareAssembler(self, layer.assembler, layer.index).add for layer in layers]
        encodings = self._demux.add(mid, self._receiver, offer.rids, sinks)
        for layer, encoding in zip(layers, encodings, strict=True):
            layer.encoding = encoding
        return layers

    def layer_info(self) -> list[dict[str, object]]:
        """Each simulcast layer: rid, active, frames, key frames, bitrate, size."""
        now = time.perf_counter()
        return [layer.info(now) for layer in self.layers]

    # -- frames ----------------------------------------------------------------
    def _on_frame(self, frame: EncodedFrame) -> None:
        self.frames_in += 1
        self.bytes_in += len(frame.data)
        if frame.tid is not None:
            self.has_layers = True
        if frame.layer is not None:
            self.layers[frame.layer].count(frame)
        if self.paused:
            return
        if self.renditions is not None and (frame.layer is None
                                            or frame.layer == len(self.layers) - 1):
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
        # A simulcast publisher's estimate covers all its encodings, and any of their SSRCs
        # names it: the top one may not have started yet (Firefox sends it only once told
        # it has the bandwidth, so waiting for it would never tell it).
        ssrc = next((layer.ssrc for layer in reversed(self.layers) if layer.ssrc is not None),
                    self.assembler.ssrc)
        if ssrc is None or self.closed:
            return
        self._rtcp.spawn(send_remb(self._receiver, ssrc, bitrate))

    def send_nack(self, lost: list[int], ssrc: int | None = None) -> None:
        """Ask the publisher again for packets a frame still waits for (of the stream
        ``ssrc``, by default the one the track's assembler reads)."""
        ssrc = self.assembler.ssrc if ssrc is None else ssrc
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
    def request_keyframe(self, layer: int | None = None) -> None:
        """Coalesced per layer: at most one PLI per ``keyframe_interval``; later ones are
        deferred. ``layer``: a simulcast layer's index (None: every layer)."""
        if self.kind != "video" or self.closed:
            return
        now = time.perf_counter()
        for key in self._pli_keys(layer):
            if now - self._last_pli.get(key, 0.0) >= self._config.keyframe_interval:
                self._send_pli(key, now)
            else:
                self._pli_wanted.add(key)

    def _pli_keys(self, layer: int | None) -> tuple[int | None, ...]:
        if not self.layers:
            return (None,)
        if layer is None:
            return tuple(range(len(self.layers)))
        return (max(0, min(layer, len(self.layers) - 1)),)

    def _send_pli(self, key: int | None, now: float) -> None:
        ssrc = self.assembler.ssrc if key is None else self.layers[key].ssrc
        if ssrc is None:
            self._pli_wanted.add(key)
            return
        self._last_pli[key] = now
        self._pli_wanted.discard(key)
        self._rtcp.spawn(send_pli(self._receiver, ssrc))

    def _waiting_layers(self) -> set[int | None]:
        """Layers some consumer waits for a key frame of (held back for bandwidth, paused
        or on a rendition: no use for one yet)."""
        keys: set[int | None] = set()
        for c in self.consumers:
            if c.bandwidth_paused or c.paused or c.rendition is not None:
                continue
            switch = c.switch
            if switch is not None and switch.pending:
                keys.add(switch.target)
            elif c.waiting_keyframe:
                keys.add(None if switch is None else switch.wanted_keyframe())
        if self.layers and None in keys:
            keys.discard(None)
            keys.update(range(len(self.layers)))
        return keys

    def _last_packet_at(self) -> float:
        if not self.layers:
            return self.assembler.last_packet_at
        return max(layer.assembler.last_packet_at for layer in self.layers)

    async def _monitor_loop(self) -> None:
        tick = min(0.25, self._config.keyframe_interval / 2)
        ticked = time.perf_counter()
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            lag, ticked = now - ticked - tick, now
            for key in self._pli_wanted | self._waiting_layers():
                if now - self._last_pli.get(key, 0.0) >= self._config.keyframe_interval:
                    self._send_pli(key, now)
            for layer in self.layers:
                layer.tick(now)
            if lag > 1.0:
                # This process did not run (stopped, blocked): the media it has not read
                # yet is in its socket. Judge the publisher once that has been read.
                continue
            last = self._last_packet_at() or self._created
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
        if self._demux is not None:
            self._demux.remove(str(self.app_data.get("mid", "")))
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

    def __init__(self, producer: Producer, assembler: AudioAssembler | VideoAssembler | None = None,
                 layer: int | None = None) -> None:
        self._producer = producer
        self._assembler = assembler or producer.assembler
        self._layer = layer

    @property
    def capacity(self) -> int:
        return 1024

    def add(self, packet: Any) -> tuple[bool, None]:
        assembler = self._assembler
        pli, _ = assembler.add(packet)
        if pli:
            self._producer.request_keyframe(self._layer)
        if isinstance(assembler, VideoAssembler) and (nacks := assembler.take_nacks()):
            self._producer.send_nack(nacks, assembler.ssrc)
        return False, None


class _Discard:
    """In a simulcast receiver's jitter-buffer place: every packet is the demultiplexer's."""

    capacity = 1024

    def add(self, packet: Any) -> tuple[bool, None]:
        return False, None
