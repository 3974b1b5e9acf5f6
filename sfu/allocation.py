"""One bandwidth allocation step, applied to consumers and producers.

Each interval the Router's bandwidth task calls :func:`allocate_subscriber`
for every subscribe transport and :func:`allocate_publisher` for every video
producer. They read what each leg carried into a sample, let
sfu/linkstats.py compute on the numbers, and apply its decisions:

1. every subscriber link's estimate is updated from its receiver reports,
   REMB and send rate (sfu/bandwidth.py);
2. its video consumers get a temporal-layer cap, or are paused, from their
   share of the estimate (audio is reserved first: audio always flows), unless
   ``serve`` (the router's renditions, sfu/rendition.py) takes them on; consumers
   of simulcast producers instead share their part of the estimate through
   sfu/layeralloc.py: one layer each (``describe``, from the router, says what
   each costs, how wide each is and what the tile needs), paused only when even
   the lowest layer does not fit;
3. every video publisher gets a REMB target within [floor, max], lowered further
   when its own uplink is congested:

   - one encoding: the smallest share among its subscribers that are not outliers
     (sfu/bandwidth.py's ``publisher_target``): a subscriber far below the others is
     served from a rendition, a lower temporal layer or a pause, and does not drag
     the publisher (and so everyone else) down to its rate; subscribers served from a
     rendition, or who paused the track, do not count at all; a link whose estimate a
     probe lifted in the last 10 s counts towards the median but does not set the
     target (unless no other link is left);
   - simulcast: what the layers its subscribers' tiles want cost (sfu/layeralloc.py's
     ``PublisherCap``, kept on the producer's link; ``simulcast_cap`` turns it off):
     the ceiling while anyone wants the top layer, so a poor link moves its subscriber
     down a layer and never caps the publisher, and while nobody watches; otherwise,
     once the wanted layers have settled, the layers up to the highest wanted one,
     which lets the publisher stop sending the layers above (a page whose tiles are
     all small costs its publishers less uplink).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from sfu.bandwidth import BandwidthConfig
from sfu.consumer import Consumer
from sfu.layeralloc import Demand, choose_layers, needed_layer, wanted_layer
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

Describe = Callable[[Consumer], "Demand | None"]
"""A consumer of a simulcast producer as the layer allocator sees it (None: not one)."""


def allocate_subscriber(link: SubscriberLink, consumers: Iterable[Consumer],
                        config: BandwidthConfig, now: float, dt: float, *, bytes_sent: int,
                        remb: int | None, serve: Serve | None = None,
                        describe: Describe | None = None) -> SubscriberLink:
    """Update one subscriber link and cap, pause, serve or choose a layer for each of its
    video consumers."""
    every = list(consumers)
    active = [c for c in every if not c.paused]
    videos = [c for c in active if c.kind == "video"]
    layered = [(c, d) for c in videos if c.switch is not None and describe is not None
               and (d := describe(c)) is not None]
    link.layered_only = bool(videos) and len(layered) == len(videos)
    sample = SubscriberSample(
        bytes_sent=bytes_sent, remb=remb, video_streams=len(videos),
        audio_streams=sum(1 for c in active if c.kind == "audio"), consuming=bool(every))
    update_subscriber(link, sample, config, now, dt)
    simulcast = {c for c, _ in layered}
    for consumer in videos:
        if consumer in simulcast:
            continue
        if serve is None or not serve(consumer, link.share, link.max_layer):
            consumer.set_layer(link.max_layer)
    link.on_rendition = any(c.rendition is not None for c in videos)
    _choose_layers(link, layered)
    return link


TEMPORAL_SHARE = ((1, 0.6), (0, 0.35))
"""Part of a layer's bitrate left with VP8 temporal layers up to 1 and 0 (L1T3)."""


def _choose_layers(link: SubscriberLink, layered: list[tuple[Consumer, Demand]]) -> None:
    """Simulcast consumers share their part of the link (``share`` each) layer by layer.

    A video whose lowest layer does not fit stays on it at a lower frame rate (temporal
    layers 0-1, or 0) when that fits, and is paused only when even that does not fit; a
    paused one comes back when the lowest layer fits at half its frame rate (hysteresis).
    """
    capacity = link.share * len(layered)
    choice = choose_layers(capacity, [d for _, d in layered])
    spare = capacity - choice.bitrate
    level = 0
    for consumer, demand in layered:
        layer = choice.layers[demand.key]
        temporal: int | None = 2
        if layer is None:
            layer = next((i for i, c in enumerate(demand.layers) if c.active), 0)
            lowest = demand.layers[layer].bitrate
            fits = [t for t, part in TEMPORAL_SHARE if lowest * part <= spare
                    and (t == 1 or not consumer.bandwidth_paused)]
            temporal = fits[0] if fits else None
            spare -= lowest * dict(TEMPORAL_SHARE).get(temporal if temporal is not None else -1, 0)
        if consumer.rendition is not None:
            consumer.leave_rendition()
        consumer.set_layer(temporal)
        if temporal is not None and consumer.switch is not None:
            consumer.switch.set_target(layer, congested=layer < needed_layer(demand))
            level += layer + 1
    link.layered_level = level
    link.layered_more = choice.wanted_more


def allocate_publisher(producer: Producer, config: BandwidthConfig, dt: float, *,
                       now: float | None = None) -> int:
    """The REMB target for one video producer (module docstring, step 3); ``now`` is
    ``time.perf_counter()`` (the clock of the layers' last frames) unless given."""
    counter = getattr(producer.assembler, "counter", None)
    # (consumers paused by their subscriber do not count; paused for bandwidth do)
    watching = [c for c in producer.consumers if not c.paused]
    layers_cap = None
    shares: tuple[float, ...] = ()
    tentative: tuple[float, ...] = ()
    if producer.layers:  # no subscriber's link caps it; its viewers' tiles may
        if config.simulcast_cap:
            now = time.perf_counter() if now is None else now
            costs = [layer.cost(now) for layer in producer.layers]
            wanted = [wanted_layer(costs, None if c.render_size is None else c.render_size[0])
                      for c in watching]
            layers_cap = producer.link.layers_cap.update(
                now, costs, wanted, float(config.max_bitrate), sent=producer.link.target)
    else:
        links = [c.link for c in watching if c.link is not None and c.rendition is None]
        # A probe lifts a held-back link's estimate before the link has shown it can
        # carry it: until the probe settles, such a link helps find the outliers but does
        # not set the target itself, unless it is the only one.
        shares = tuple(link.share for link in links if link.probed_at is None)
        tentative = tuple(link.share for link in links if link.probed_at is not None)
    sample = PublisherSample(
        bytes_in=producer.bytes_in, shares=shares, own_estimate=producer.publisher_estimate(),
        loss=counter.interval_loss() if counter is not None else None, layers_cap=layers_cap,
        tentative=tentative)
    return update_publisher(producer.link, sample, config, dt)
