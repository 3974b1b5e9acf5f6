"""One bandwidth allocation step, applied to consumers and producers.

Each interval the Router's bandwidth task calls :func:`allocate_subscriber`
for every subscribe transport and :func:`allocate_publisher` for every video
producer. They read what each leg carried into a sample, let
sfu/linkstats.py compute on the numbers, and apply its decisions:

1. every subscriber link's estimate is updated from its receiver reports,
   REMB and send rate (sfu/bandwidth.py);
2. its video consumers get a temporal-layer cap, or are paused, from their
   share of the estimate (audio is reserved first: audio always flows), unless
   ``serve`` (the router's renditions, sfu/rendition.py) takes them on;
3. every video publisher gets a REMB target that its subscribers can take,
   within [floor, max], and never above what its own link carried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sfu.bandwidth import BandwidthConfig
from sfu.consumer import Consumer
from sfu.linkstats import (
    PublisherSample,
    SubscriberLink,
    SubscriberSample,
    update_publisher,
    update_subscriber,
)
from sfu.producer import Producer

Serve = Callable[[Consumer, float, "int | None"], bool]
"""Serve a consumer from a rendition (True) or leave it to layers/pause (False);
called with the consumer, its link's share and layer cap."""


def allocate_subscriber(link: SubscriberLink, consumers: Iterable[Consumer],
                        config: BandwidthConfig, now: float, dt: float, *, bytes_sent: int,
                        remb: int | None, serve: Serve | None = None) -> SubscriberLink:
    """Update one subscriber link and cap, pause or serve each of its video consumers."""
    every = list(consumers)
    active = [c for c in every if not c.paused]
    videos = [c for c in active if c.kind == "video"]
    sample = SubscriberSample(
        bytes_sent=bytes_sent, remb=remb, video_streams=len(videos),
        audio_streams=sum(1 for c in active if c.kind == "audio"), consuming=bool(every))
    update_subscriber(link, sample, config, now, dt)
    for consumer in videos:
        if serve is None or not serve(consumer, link.share, link.max_layer):
            consumer.set_layer(link.max_layer)
    link.on_rendition = any(c.rendition is not None for c in videos)
    return link


def allocate_publisher(producer: Producer, config: BandwidthConfig, dt: float) -> int:
    """The REMB target for one video producer."""
    counter = getattr(producer.assembler, "counter", None)
    # (consumers paused by their subscriber do not count; paused for bandwidth do)
    # (a simulcast publisher is not capped by its subscribers: each takes the layer it can)
    shares = () if producer.layers else tuple(
        c.link.share for c in producer.consumers
        if c.link is not None and not c.paused and c.rendition is None)
    sample = PublisherSample(
        bytes_in=producer.bytes_in, shares=shares, own_estimate=producer.publisher_estimate(),
        loss=counter.interval_loss() if counter is not None else None)
    return update_publisher(producer.link, sample, config, dt)
