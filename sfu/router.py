"""Router: the SFU side of one room on this node; parent of its transports."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from sfu.allocation import allocate_publisher, allocate_subscriber
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.layeralloc import Demand
from sfu.linkstats import SubscriberLink
from sfu.producer import Producer
from sfu.rendition import RenditionBudget, RenditionPool, RenditionSet
from sfu.squeeze import POLL
from sfu.stats import ForwardingStats, RouterCounts
from sfu.transport import PublishTransport, SubscribeTransport

Speakers = list[tuple[dict[str, Any], int]]
"""(producer app data, audio level in -dBov) of each active speaker, loudest first."""


class Router:
    """Creates transports; tracks live producers; computes active speakers.

    The periodic loops (active speakers, bandwidth) run only while the router
    has transports: the first transport starts them and closing the last one
    through :meth:`close_transport` stops them, so an idle router (a room with
    no media members) owns no task and no timer.

    ``close()`` closes every transport (and so every producer and consumer)
    and stops the loops; it is idempotent.
    """

    def __init__(self, config: SfuConfig, *,
                 on_active_speakers: Callable[[Speakers], None] | None = None,
                 budget: RenditionBudget | None = None) -> None:
        self.config = config
        self._renditions = RenditionPool(
            budget or RenditionBudget(config.bandwidth.max_renditions))
        self.transports: set[PublishTransport | SubscribeTransport] = set()
        self.producers: dict[str, Producer] = {}
        self.stats = ForwardingStats()
        self._on_active_speakers = on_active_speakers
        self._last_speakers: list[str] = []
        self.closed = False
        self.on_links: Callable[[list[tuple[SubscribeTransport, SubscriberLink]]], None] | None \
            = None
        """Called after every bandwidth update with each subscriber link."""
        self._speaker_task: asyncio.Task[None] | None = None
        self._bandwidth_task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """No periodic loop runs (no transports)."""
        return self._speaker_task is None and self._bandwidth_task is None

    def _start_loops(self) -> None:
        if self.closed or not self.idle:
            return
        loop = asyncio.get_running_loop()
        self._speaker_task = loop.create_task(self._speaker_loop(), name="active-speakers")
        if self.config.bandwidth.enabled:
            self._bandwidth_task = loop.create_task(self._bandwidth_loop(), name="bandwidth")

    async def _stop_loops(self) -> None:
        tasks = (self._speaker_task, self._bandwidth_task)
        self._speaker_task = self._bandwidth_task = None  # a new transport may restart them
        self._last_speakers = []
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def create_publish_transport(
        self, app_data: dict[str, Any], on_producer: Callable[[Producer], None], *,
        may_publish: bool,
    ) -> PublishTransport:
        """``may_publish``: whether the owner may send media at all (see PublishTransport)."""
        def produced(producer: Producer) -> None:
            self.producers[producer.id] = producer
            producer.add_close_listener(self._forget)
            on_producer(producer)

        transport = PublishTransport(self.config, app_data, produced, may_publish=may_publish)
        self.transports.add(transport)
        self._start_loops()
        return transport

    def create_subscribe_transport(
        self, app_data: dict[str, Any],
        on_offer: Callable[[str, dict[str, dict[str, Any]]], None],
        on_data: Callable[[str], None] | None = None,
    ) -> SubscribeTransport:
        transport = SubscribeTransport(self.config, app_data, on_offer, on_data, self.stats)
        self.transports.add(transport)
        self._start_loops()
        return transport

    def _forget(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)

    @property
    def renditions(self) -> Mapping[str, RenditionSet]:
        """Shared renditions running now, by producer id."""
        return self._renditions.sets

    def counts(self) -> RouterCounts:
        """How many producers, consumers and peer connections this router holds now."""
        return RouterCounts(
            producers=len(self.producers),
            consumers=sum(len(p.consumers) for p in self.producers.values()),
            peer_connections=len(self.transports))

    async def close_transport(self, transport: PublishTransport | SubscribeTransport) -> None:
        self.transports.discard(transport)
        await transport.close()
        if not self.transports:
            await self._stop_loops()

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
        """One allocation step (sfu/allocation.py): estimates, layers and pauses, REMB."""
        links = [(transport, self._allocate(transport, now, dt))
                 for transport in list(self.transports)
                 if isinstance(transport, SubscribeTransport) and not transport.closed]
        cfg = self.config.bandwidth
        for producer in list(self.producers.values()):
            if producer.kind == "video" and not producer.closed:
                producer.send_remb(allocate_publisher(producer, cfg, dt))
        if self.on_links is not None:
            self.on_links(links)

    def update_squeezed(self, now: float) -> None:
        """Update at once the subscriber links that show a sudden squeeze (sfu/squeeze.py):
        their layers move down now; publishers' REMBs wait for the next interval."""
        for transport in list(self.transports):
            if isinstance(transport, SubscribeTransport) and not transport.closed \
                    and transport.link.watching \
                    and transport.link.check_remb(transport.remb(), now):
                self._allocate(transport, now, self.config.bandwidth.update_interval)

    def _allocate(self, transport: SubscribeTransport, now: float, dt: float) -> SubscriberLink:
        serve = self._serve if self.config.bandwidth.max_renditions > 0 else None
        return allocate_subscriber(
            transport.link, transport.consumers.values(), self.config.bandwidth, now, dt,
            bytes_sent=transport.bytes_sent(), remb=transport.remb(), serve=serve,
            describe=self._describe)

    def _describe(self, consumer: Consumer) -> Demand | None:
        """A consumer of a simulcast producer, for the layer allocator: the producer's
        layers, the tile's width, and whether it is a screen share (app data ``source``)
        or an active speaker's (app data ``participant``)."""
        producer = self.producers.get(consumer.producer_id)
        if producer is None or not producer.layers:
            return None
        now = time.perf_counter()
        size = consumer.render_size
        return Demand(key=consumer.id, layers=tuple(layer.cost(now) for layer in producer.layers),
                      tile_width=None if size is None else size[0],
                      screen=producer.app_data.get("source") == "screen",
                      speaker=str(producer.app_data.get("participant")) in self._last_speakers)

    def _serve(self, consumer: Consumer, share: float, layer: int | None) -> bool:
        """Let the renditions policy (sfu/rendition.py) take a constrained consumer on."""
        return self._renditions.serve(consumer, self.producers.get(consumer.producer_id),
                                      share, layer, consumer.link)

    async def _bandwidth_loop(self) -> None:
        interval = self.config.bandwidth.update_interval
        last = time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, min(POLL, last + interval - time.monotonic())))
            now = time.monotonic()
            if now - last < interval - 0.01:
                self.update_squeezed(now)
            else:
                self.update_bandwidth(now, now - last)
                last = now

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self._stop_loops()
        for transport in list(self.transports):
            await transport.close()
        self.transports.clear()
        await self._renditions.close()
        self.producers.clear()
