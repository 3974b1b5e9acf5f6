"""Router: the SFU side of one room on this node; parent of its transports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.linkstats import SubscriberLink, update_publisher, update_subscriber
from sfu.producer import Producer
from sfu.rendition import DEFAULT_TIERS, RenditionBudget, RenditionSet
from sfu.stats import ForwardingStats
from sfu.transport import PublishTransport, SubscribeTransport

Speakers = list[tuple[dict[str, Any], int]]
"""(producer app data, audio level in -dBov) of each active speaker, loudest first."""


@dataclass(frozen=True, kw_only=True)
class RouterCounts:
    producers: int
    consumers: int
    peer_connections: int


class Router:
    """Creates transports; tracks live producers; computes active speakers.

    ``close()`` closes every transport (and so every producer and consumer)
    and stops the speaker task; it is idempotent.
    """

    def __init__(self, config: SfuConfig, *,
                 on_active_speakers: Callable[[Speakers], None] | None = None,
                 budget: RenditionBudget | None = None) -> None:
        self.config = config
        self._budget = budget or RenditionBudget(config.bandwidth.max_renditions)
        self.renditions: dict[str, RenditionSet] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.transports: set[PublishTransport | SubscribeTransport] = set()
        self.producers: dict[str, Producer] = {}
        self.stats = ForwardingStats()
        self._on_active_speakers = on_active_speakers
        self._last_speakers: list[str] = []
        self.closed = False
        self.on_links: Callable[[list[tuple[SubscribeTransport, SubscriberLink]]], None] | None \
            = None
        """Called after every bandwidth update with each subscriber link."""
        loop = asyncio.get_running_loop()
        self._speaker_task = loop.create_task(self._speaker_loop(), name="active-speakers")
        self._bandwidth_task: asyncio.Task[None] | None = None
        if config.bandwidth.enabled:
            self._bandwidth_task = loop.create_task(self._bandwidth_loop(), name="bandwidth")

    def create_publish_transport(
        self, app_data: dict[str, Any], on_producer: Callable[[Producer], None]
    ) -> PublishTransport:
        def produced(producer: Producer) -> None:
            self.producers[producer.id] = producer
            producer.add_close_listener(self._forget)
            on_producer(producer)

        transport = PublishTransport(self.config, app_data, produced)
        self.transports.add(transport)
        return transport

    def create_subscribe_transport(
        self, app_data: dict[str, Any],
        on_offer: Callable[[str, dict[str, dict[str, Any]]], None],
        on_data: Callable[[str], None] | None = None,
    ) -> SubscribeTransport:
        transport = SubscribeTransport(self.config, app_data, on_offer, on_data, self.stats)
        self.transports.add(transport)
        return transport

    def _forget(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)

    async def close_transport(self, transport: PublishTransport | SubscribeTransport) -> None:
        self.transports.discard(transport)
        await transport.close()

    def active_speakers(self) -> Speakers:
        threshold = self.config.active_speaker_threshold
        live = [(p.app_data, p.audio_level) for p in self.producers.values()
                if p.kind == "audio" and not p.paused and not p.stalled
                and p.audio_level < threshold]
        return sorted(live, key=lambda item: item[1])

    async def _speaker_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.active_speaker_interval)
            speakers = self.active_speakers()
            ids = [str(app.get("participant")) for app, _ in speakers]
            if ids != self._last_speakers:
                self._last_speakers = ids
                if self._on_active_speakers is not None:
                    self._on_active_speakers(speakers)

    def update_bandwidth(self, now: float, dt: float) -> None:
        """One allocation step (sfu/linkstats.py): estimates, layers and pauses, REMB."""
        cfg = self.config.bandwidth
        links = []
        for transport in list(self.transports):
            if isinstance(transport, SubscribeTransport) and not transport.closed:
                links.append((transport, update_subscriber(
                    transport, cfg, now, dt, self._serve if cfg.max_renditions > 0 else None)))
        for producer in list(self.producers.values()):
            if producer.kind == "video" and not producer.closed:
                producer.send_remb(update_publisher(producer, cfg, dt))
        if self.on_links is not None:
            self.on_links(links)

    def _serve(self, consumer: Consumer, share: float, layer: int | None) -> bool:
        """Serve a constrained consumer from a shared rendition when layers cannot help."""
        producer = consumer.producer
        # What the original stream needs at the least: its lowest temporal layer
        # (about 30 % of its bitrate) or, without layers, all of it.
        need = producer.link.bitrate * (0.3 if producer.has_layers else 1.0)
        current = consumer.rendition
        if current is not None:  # hysteresis: go back to the original only with room
            needs = layer is None or share < 1.3 * need
        else:
            needs = layer is None or share < need
        if consumer.link is not None and needs:
            consumer.link.probe_target = max(consumer.link.probe_target, 1.3 * need)
        if not needs or producer.closed:
            if current is not None:
                consumer.leave_rendition()
                current.detach(consumer)
            return False
        renditions = self.renditions.get(producer.id)
        if renditions is None:
            renditions = RenditionSet(producer, DEFAULT_TIERS, self._budget, self._rendition_idle)
            self.renditions[producer.id] = renditions
            producer.renditions = renditions
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
            consumer.leave_rendition()
            current.detach(consumer)
            if current is renditions:  # it may have just closed: start afresh next time
                return False
        if tier is None or not renditions.attach(consumer, tier):
            if not renditions.consumers:
                self._rendition_idle(renditions)
            return False
        consumer.use_rendition(renditions, tier)
        return True

    def _rendition_idle(self, renditions: RenditionSet) -> None:
        if self.renditions.get(renditions.producer.id) is renditions:
            del self.renditions[renditions.producer.id]
        if renditions.producer.renditions is renditions:
            renditions.producer.renditions = None
        task = asyncio.get_running_loop().create_task(renditions.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _bandwidth_loop(self) -> None:
        interval = self.config.bandwidth.update_interval
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.update_bandwidth(now, now - last)
            last = now

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in (self._speaker_task, self._bandwidth_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for transport in list(self.transports):
            await transport.close()
        self.transports.clear()
        for renditions in list(self.renditions.values()):
            await renditions.close()
        self.renditions.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self.producers.clear()

    def counts(self) -> RouterCounts:
        return RouterCounts(producers=len(self.producers),
                            consumers=sum(len(p.consumers) for p in self.producers.values()),
                            peer_connections=len(self.transports))
