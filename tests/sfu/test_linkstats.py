"""Allocation (sfu/allocation.py on sfu/linkstats.py) and the consumer side of it
(sfu/consumer.py layers).

The consumers are real (a real SlotTrack each, read back with ``recv``); the
producer behind them is a stand-in that counts key-frame requests (except in the
key-frame test, which uses a real Producer on an unconnected receiver), and the
subscribe transport is a stand-in holding what ``allocate_subscriber`` is given:
bytes sent, the subscriber's REMB, the consumers and the link.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiortc import RTCPeerConnection

from sfu.allocation import allocate_publisher, allocate_subscriber
from sfu.bandwidth import BandwidthConfig
from sfu.config import SfuConfig
from sfu.consumer import Consumer, SlotTrack
from sfu.encoded import EncodedFrame
from sfu.layeralloc import RAMP, SETTLE, LayerCost
from sfu.linkstats import (
    AUDIO_RESERVE,
    PublisherLink,
    PublisherSample,
    SubscriberLink,
    SubscriberSample,
    update_publisher,
    update_subscriber,
)
from sfu.producer import Producer
from sfu.rendition import RenditionBudget, RenditionPool, RenditionSet

CFG = BandwidthConfig()
TICKS = 3000
"""RTP ticks per frame at 30 frames/s."""
LAYERS = (0, 2, 1, 2)
"""VP8 temporal layer ids of consecutive frames with three layers."""


class Source:
    """Stands in for the Producer a consumer reads from."""

    def __init__(self, kind: str = "video") -> None:
        self.id = "p"
        self.kind = kind
        self.consumers: set[Consumer] = set()
        self.keyframe_requests = 0
        self.link = PublisherLink()
        self.bytes_in = 0
        self.assembler = None
        self.own_estimate: int | None = None
        self.closed = False
        self.has_layers = False
        self.layers: tuple[object, ...] = ()
        """Simulcast layers (none: one encoding)."""
        self.renditions: RenditionSet | None = None

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.add(consumer)

    def remove_consumer(self, consumer: Consumer) -> None:
        self.consumers.discard(consumer)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def publisher_estimate(self) -> int | None:
        return self.own_estimate


class Leg:
    """Stands in for a SubscribeTransport: what allocate_subscriber is given from it."""

    def __init__(self, config: BandwidthConfig = CFG) -> None:
        self.link = SubscriberLink.create(config)
        self.consumers: dict[str, Consumer] = {}
        self.sent = 0
        self.remb_value: int | None = None

    def add(self, source: Source) -> Consumer:
        consumer = consumer_of(source, f"c{len(self.consumers)}", SlotTrack(source.kind, 256))
        consumer.link = self.link
        self.consumers[consumer.id] = consumer
        return consumer

    def bytes_sent(self) -> int:
        return self.sent

    def remb(self) -> int | None:
        return self.remb_value


def consumer_of(producer: Source | Producer, consumer_id: str, slot: SlotTrack) -> Consumer:
    """Wire a consumer to its producer as a SubscribeTransport does."""
    consumer = Consumer(consumer_id=consumer_id, producer_id=producer.id, kind=producer.kind,
                        slot=slot, app_data={}, request_keyframe=producer.request_keyframe,
                        release=producer.remove_consumer)
    producer.add_consumer(consumer)
    return consumer


def frame(n: int, *, key: bool = False, tid: int | None = None) -> EncodedFrame:
    return EncodedFrame(data=bytes([n % 256]) * 20, timestamp=1000 + n * TICKS, keyframe=key,
                        discontinuity=False, tid=tid)


async def forwarded(consumer: Consumer) -> list[int]:
    """Frame numbers queued on the consumer's slot, in order (drains the queue)."""
    out: list[int] = []
    slot = consumer.slot
    while not slot._queue.empty():
        packet = await slot.recv()
        out.append(packet.pts)
    return [(pts - out[0]) // TICKS for pts in out] if out else []


def video_consumer() -> tuple[Consumer, Source]:
    source = Source()
    leg = Leg()
    consumer = leg.add(source)
    consumer.deliver(frame(0, key=True, tid=0))
    return consumer, source


# -- consumer layers ------------------------------------------------------------------
async def test_a_video_consumer_forwards_nothing_before_a_key_frame() -> None:
    consumer = Leg().add(Source())
    for n in range(4):
        consumer.deliver(frame(n, tid=LAYERS[n % 4]))
    consumer.deliver(frame(4, key=True, tid=0))
    consumer.deliver(frame(5, tid=2))
    assert await forwarded(consumer) == [0, 1]
    assert consumer.frames_dropped == 4


async def test_frames_above_the_layer_cap_are_dropped_at_once() -> None:
    consumer, _ = video_consumer()
    consumer.deliver(frame(1, tid=2))
    consumer.set_layer(1)  # half rate: layer 2 frames go
    for n in range(2, 10):
        consumer.deliver(frame(n, tid=LAYERS[n % 4]))
    consumer.set_layer(0)  # quarter rate
    for n in range(10, 18):
        consumer.deliver(frame(n, tid=LAYERS[n % 4]))
    numbers = await forwarded(consumer)
    assert numbers == [0, 1, 2, 4, 6, 8, 12, 16]  # 2, 6 are layer 1: kept at half rate
    assert consumer.frames_skipped_layer == 10


async def test_going_up_a_layer_waits_for_a_layer_0_frame() -> None:
    consumer, _ = video_consumer()
    consumer.set_layer(0)
    consumer.deliver(frame(1, tid=2))
    consumer.set_layer(2)
    consumer.deliver(frame(2, tid=1))  # depends on frame 0 and layer-1 history it never got
    consumer.deliver(frame(3, tid=2))
    assert consumer.layer == 0 and consumer.target_layer == 2
    consumer.deliver(frame(4, tid=0))
    consumer.deliver(frame(5, tid=2))
    consumer.deliver(frame(6, tid=1))
    assert consumer.layer == 2
    assert await forwarded(consumer) == [0, 4, 5, 6]


async def test_a_stream_without_temporal_layers_is_not_thinned() -> None:
    consumer = Leg().add(Source())
    consumer.set_layer(0)
    consumer.deliver(frame(0, key=True))
    for n in range(1, 6):
        consumer.deliver(frame(n))
    assert await forwarded(consumer) == [0, 1, 2, 3, 4, 5]


async def test_a_bandwidth_pause_drops_video_and_resumes_from_a_requested_key_frame() -> None:
    consumer, source = video_consumer()
    requests = source.keyframe_requests
    consumer.set_layer(None)
    assert consumer.bandwidth_paused
    for n in range(1, 5):
        consumer.deliver(frame(n, tid=LAYERS[n % 4]))
    consumer.set_layer(0)
    assert source.keyframe_requests == requests + 1 and not consumer.bandwidth_paused
    consumer.deliver(frame(5, tid=2))
    consumer.deliver(frame(6, tid=0))  # a delta frame: its references were never sent
    consumer.deliver(frame(7, key=True, tid=0))
    consumer.deliver(frame(8, tid=0))
    assert await forwarded(consumer) == [0, 7, 8]


async def test_an_audio_consumer_is_never_thinned_or_held_for_a_key_frame() -> None:
    consumer = Leg().add(Source("audio"))
    for n in range(5):
        consumer.deliver(EncodedFrame(data=b"\xfc" * 10, timestamp=n * 960, keyframe=False,
                                      discontinuity=False))
    assert consumer.frames_forwarded == 5


async def test_a_consumer_held_back_for_bandwidth_stops_the_key_frame_requests() -> None:
    # A real producer on a real (unconnected) receiver; only the PLI's network send is
    # replaced, by a recorder.
    pc = RTCPeerConnection()
    producer = Producer(producer_id="p", kind="video", receiver=pc.addTransceiver("video").receiver,
                        config=SfuConfig(keyframe_interval=0.1), app_data={})
    sent: list[float] = []

    def record(key: int | None, now: float) -> None:
        sent.append(now)
        producer._last_pli[key] = now
        producer._pli_wanted.discard(key)

    producer._send_pli = record  # type: ignore[method-assign]
    try:
        consumer = consumer_of(producer, "c", SlotTrack("video", 8))
        await asyncio.sleep(0.6)
        assert consumer.waiting_keyframe and len(sent) >= 3  # asks until a key frame comes
        consumer.set_layer(None)
        await asyncio.sleep(0.2)
        held = len(sent)
        await asyncio.sleep(0.8)
        assert len(sent) == held  # paused for bandwidth: a key frame is of no use yet
        consumer.set_layer(0)
        await asyncio.sleep(0.3)
        assert len(sent) > held  # resumed: asks again
    finally:
        await producer.close()
        await pc.close()


# -- allocation and the probe -----------------------------------------------------------
LAYER_SHARE = {2: 1.0, 1: 0.6, 0: 0.35}
"""Part of an L1T3 stream's bitrate left at each temporal-layer cap."""


class Room:
    """One subscriber link with ``videos`` video and as many audio consumers, driven one
    interval at a time as the Router's bandwidth task does.

    Each publisher sends what the link's share allows (it follows the REMB), up to
    600 kbit/s; ``layered``: it sends temporal layers, so a layer cap sends less.
    """

    def __init__(self, videos: int = 1, *, layered: bool = False) -> None:
        self.leg = Leg()
        self.sources = [Source() for _ in range(videos)]
        self.videos = [self.leg.add(s) for s in self.sources]
        self.audio = [self.leg.add(Source("audio")) for _ in range(videos)]
        self.layered = layered
        self.now = 0.0

    def step(self, *, lost: float = 0.0, seconds: float = 1.0) -> SubscriberLink:
        link = self.leg.link
        paused = link.max_layer is None
        per_video = 0 if paused else min(600_000, link.share)
        if self.layered and link.max_layer is not None:
            per_video *= LAYER_SHARE[link.max_layer]
        self.leg.sent += int((len(self.videos) * per_video + len(self.audio) * 50_000)
                             * seconds / 8)
        link.on_report(lost, 0, 0.02)
        self.now += seconds
        return allocate_subscriber(self.leg.link, self.leg.consumers.values(), CFG, self.now,
                                   seconds, bytes_sent=self.leg.sent, remb=self.leg.remb_value)

    def pause(self) -> None:
        """Drive the link into a pause with heavy loss, then let the loss clear."""
        while self.leg.link.max_layer is not None:
            self.step(lost=0.6)
        while self.leg.link.estimator.loss >= CFG.loss_low:
            self.step()

    def until_video(self, limit: float) -> float | None:
        """Seconds until video is sent again (None: not within ``limit``)."""
        start = self.now
        while self.now - start < limit:
            if self.step().max_layer is not None:
                return self.now - start
        return None


def test_heavy_loss_pauses_every_video_consumer_and_keeps_audio() -> None:
    room = Room(videos=2)
    room.pause()
    assert all(c.bandwidth_paused for c in room.videos)
    assert not any(c.bandwidth_paused for c in room.audio)
    assert room.leg.link.share == pytest.approx(
        max(0.0, room.leg.link.estimator.estimate - 2 * AUDIO_RESERVE) / 2)


@pytest.mark.parametrize("videos", [1, 2, 3])
def test_a_paused_link_probes_once_clean_and_its_video_comes_back(videos: int) -> None:
    room = Room(videos)
    room.pause()
    back = room.until_video(limit=15.0)
    assert back is not None, "a clean link must get its video back"
    assert back <= room.leg.link.probe_wait + CFG.resume_hold + 3.0
    assert not any(c.bandwidth_paused for c in room.videos)
    assert all(s.keyframe_requests >= 1 for s in room.sources)  # resumed from a key frame


def test_a_layered_stream_held_at_a_low_layer_probes_its_way_back_to_full_rate() -> None:
    # At layer 0 a layered stream sends about a third of its rate, so 1.5 times what is
    # sent stays under the estimate: without probing, the link would stay there.
    room = Room(layered=True)
    room.pause()
    assert room.until_video(limit=15.0) is not None
    layers = [room.step().max_layer for _ in range(40)]
    assert layers[-1] == 2, layers
    assert layers == sorted(layers, key=lambda layer: -1 if layer is None else layer)  # no flaps
    assert room.leg.link.estimator.estimate >= CFG.half_rate_below


def test_probe_back_off_doubles_when_video_is_paused_again_soon_after_a_probe() -> None:
    room = Room(videos=2)  # two videos: only a probe brings them back, not slow growth
    room.pause()
    wait = room.leg.link.probe_wait
    assert room.until_video(limit=15.0) is not None
    assert room.leg.link.probe_wait == wait  # a probe that has not failed costs nothing
    room.pause()  # the link could not carry it after all: well within 10 s of the probe
    assert room.leg.link.probe_wait == 2 * wait
    assert room.until_video(limit=20.0) is not None
    room.pause()
    assert room.leg.link.probe_wait == 4 * wait


def test_probe_back_off_is_capped_at_30_seconds_and_resets_once_video_holds() -> None:
    room = Room(videos=2)
    for _ in range(6):
        room.pause()
        assert room.until_video(limit=40.0) is not None
    assert room.leg.link.probe_wait == 30.0
    for _ in range(12):  # video stays on for over 10 s after the last probe
        assert room.step().max_layer is not None
    assert room.leg.link.probe_wait == CFG.resume_hold


def test_a_link_update_takes_plain_numbers_and_reserves_audio_before_sharing_video() -> None:
    link = SubscriberLink.create(CFG)
    link.on_report(0.0, 0, 0.02)
    sample = SubscriberSample(bytes_sent=125_000, remb=None, audio_streams=1, video_streams=2,
                              consuming=True)
    assert update_subscriber(link, sample, CFG, 1.0, 1.0) is link
    assert link.send_rate == 1_000_000
    assert link.share == pytest.approx((link.estimator.estimate - AUDIO_RESERVE) / 2)
    assert link.max_layer == 1  # under 600 kbit/s a stream: half rate
    assert link.probe_target == 2 * CFG.half_rate_below + AUDIO_RESERVE  # the next step up
    idle = SubscriberLink.create(CFG)
    update_subscriber(idle, SubscriberSample(bytes_sent=0, remb=None, audio_streams=0,
                                             video_streams=0, consuming=False), CFG, 1.0, 1.0)
    assert idle.quality.value == "excellent" and idle.consuming_since is None


async def test_a_link_too_poor_for_the_original_is_served_a_tier_until_it_recovers() -> None:
    pool = RenditionPool(RenditionBudget(2))
    source = Source()
    source.link.bitrate = 1_000_000  # no temporal layers: the original needs all of it
    leg = Leg()
    consumer = leg.add(source)
    try:
        assert pool.serve(consumer, source, 300_000, 1, leg.link)
        renditions = pool.sets[source.id]
        assert consumer.rendition is renditions and source.renditions is renditions
        assert consumer.rendition_tier is not None and consumer.rendition_tier.bitrate == 250_000
        assert leg.link.probe_target == pytest.approx(1_300_000)  # probe for the original
        assert pool.serve(consumer, source, 1_200_000, 2, leg.link)  # hysteresis: stays
        requests = source.keyframe_requests
        assert not pool.serve(consumer, source, 1_400_000, 2, leg.link)  # room enough: back
        assert consumer.rendition is None and source.keyframe_requests == requests + 1
        assert pool.sets == {} and source.renditions is None  # the unused set stops
        assert not pool.serve(consumer, None, 100_000, None, leg.link)  # producer gone
    finally:
        await pool.close()
        await pool.close()
    assert renditions.closed and pool.budget.active == 0


# -- publisher target -------------------------------------------------------------------
def test_a_publisher_update_takes_plain_numbers() -> None:
    link = PublisherLink()
    sample = PublisherSample(bytes_in=100_000, loss=0.2, shares=(900_000, 450_000),
                             own_estimate=None)
    assert update_publisher(link, sample, CFG, 1.0) == 450_000
    assert link.bitrate == 800_000 and link.target == 450_000
    assert link.loss == pytest.approx(CFG.smoothing * 0.2)


def _publisher_with(shares: list[float]) -> Source:
    source = Source()
    for share in shares:
        leg = Leg()
        leg.add(source)
        leg.link.share = share
    return source


def test_a_publisher_is_told_its_smallest_subscriber_share_within_the_floor() -> None:
    source = _publisher_with([900_000, 450_000, 1_400_000])
    assert allocate_publisher(source, CFG, 1.0) == 450_000  # type: ignore[arg-type]
    assert source.link.target == 450_000
    poor = _publisher_with([120_000, 140_000, 20_000])  # everyone is slow: the floor
    assert allocate_publisher(poor, CFG, 1.0) == CFG.floor_bitrate  # type: ignore[arg-type]


def test_one_subscriber_far_below_the_others_does_not_drag_the_publisher_down() -> None:
    source = _publisher_with([900_000, 1_100_000, 20_000])
    assert allocate_publisher(source, CFG, 1.0) == 900_000  # type: ignore[arg-type]
    pair = _publisher_with([1_200_000, 250_000])  # two: the better one is the reference
    assert allocate_publisher(pair, CFG, 1.0) == 1_200_000  # type: ignore[arg-type]


def test_a_link_lifted_by_a_probe_does_not_pull_the_publisher_down_until_it_settles() -> None:
    source = _publisher_with([1_600_000, 1_270_000])
    probing = min(source.consumers, key=lambda c: c.link.share if c.link else 0)
    assert probing.link is not None
    probing.link.probed_at = 20.0  # its estimate was just lifted to what it has not carried
    assert allocate_publisher(source, CFG, 1.0) == 1_600_000  # type: ignore[arg-type]
    probing.link.probed_at = None  # the probe settled: it counts again
    assert allocate_publisher(source, CFG, 1.0) == 1_270_000  # type: ignore[arg-type]
    outlier = _publisher_with([650_000, 200_000])  # the probed link still marks the outlier
    lifted = max(outlier.consumers, key=lambda c: c.link.share if c.link else 0).link
    assert lifted is not None
    lifted.probed_at = 20.0
    assert allocate_publisher(outlier, CFG, 1.0) == 650_000  # type: ignore[arg-type]
    alone = _publisher_with([700_000])
    next(iter(alone.consumers)).link.probed_at = 20.0  # type: ignore[union-attr]
    assert allocate_publisher(alone, CFG, 1.0) == 700_000  # type: ignore[arg-type]


class _Layer:
    """Stands in for a ProducerLayer: what it costs and whether it is sent."""

    def __init__(self, bitrate: float, width: int, active: bool = True) -> None:
        self.value = LayerCost(bitrate=bitrate, width=width, active=active)

    def cost(self, now: float) -> LayerCost:
        return self.value


def _simulcast_with(tiles: list[int | None], active: bool = True) -> Source:
    source = _publisher_with([100_000] * len(tiles))  # every link poor: it must not matter
    source.layers = (_Layer(150_000, 320), _Layer(500_000, 640, active),
                     _Layer(1_200_000, 1280))
    for consumer, tile in zip(source.consumers, tiles, strict=True):
        consumer.render_size = None if tile is None else (tile, tile * 9 // 16)
    return source


def test_a_simulcast_publisher_is_not_capped_while_anyone_wants_its_top_layer() -> None:
    source = _simulcast_with([160, None])  # a small tile, and one of unknown size
    assert allocate_publisher(source, CFG, 1.0) == CFG.max_bitrate  # type: ignore[arg-type]
    big = _simulcast_with([1280, 320])
    assert allocate_publisher(big, CFG, 1.0) == CFG.max_bitrate  # type: ignore[arg-type]


def _settled(source: Source, config: BandwidthConfig = CFG) -> int:
    """The REMB once the wanted layers have been sent for a while (sfu/layeralloc.py)."""
    targets = [allocate_publisher(source, config, 1.0, now=float(t))  # type: ignore[arg-type]
               for t in range(int(SETTLE) + 1)]
    return targets[-1]


def test_a_simulcast_publisher_is_told_what_the_wanted_layers_cost() -> None:
    assert CFG.simulcast_cap  # the default
    middle = _simulcast_with([160, 640])  # layer 1 at most: the top one may stop
    first = allocate_publisher(middle, CFG, 1.0, now=0.0)  # type: ignore[arg-type]
    assert first == CFG.max_bitrate  # (not before the layers have settled)
    assert _settled(middle) == 150_000 + RAMP * 500_000
    small = _simulcast_with([200, 300])
    assert _settled(small) == RAMP * 150_000
    nobody = _simulcast_with([])  # nobody watches: every layer stays, for who comes
    assert _settled(nobody) == CFG.max_bitrate
    hidden = _simulcast_with([0, 0])  # tiles not shown
    assert _settled(hidden) == RAMP * 150_000


def test_without_the_cap_a_simulcast_publisher_is_never_capped_by_its_viewers() -> None:
    uncapped = replace(CFG, simulcast_cap=False)
    small = _simulcast_with([200, 300])  # would be capped to its lowest layer
    assert _settled(small, uncapped) == CFG.max_bitrate


def test_a_wanted_simulcast_layer_the_publisher_stopped_is_asked_back() -> None:
    source = _simulcast_with([640], active=False)  # layer 1 wanted, not sent now
    assert _settled(source) == CFG.max_bitrate


def test_a_subscriber_who_paused_the_track_does_not_limit_the_publisher() -> None:
    source = _publisher_with([900_000, 20_000])
    slowest = min(source.consumers, key=lambda c: c.link.share if c.link else 0)
    slowest.pause()
    assert allocate_publisher(source, CFG, 1.0) == 900_000  # type: ignore[arg-type]


def test_a_congested_publisher_uplink_lowers_the_target_below_its_subscribers() -> None:
    source = _publisher_with([900_000])
    source.bytes_in = 100_000  # 800 kbit/s arriving over the last second
    source.own_estimate = 400_000  # …and the uplink's delay-based estimate is half that
    assert allocate_publisher(source, CFG, 1.0) == 400_000  # type: ignore[arg-type]
    source.bytes_in += 40_000  # 320 kbit/s arrives: the estimate only tracks the input
    assert allocate_publisher(source, CFG, 1.0) == 900_000  # type: ignore[arg-type]


def test_a_publisher_estimate_that_is_still_climbing_is_not_taken_for_congestion() -> None:
    source = _publisher_with([900_000])
    source.bytes_in = 100_000  # 800 kbit/s arrive
    source.own_estimate = 300_000  # the estimator has just started …
    assert allocate_publisher(source, CFG, 1.0) == 300_000  # type: ignore[arg-type]
    for own in (330_000, 330_000, 360_000):  # … and climbs towards the incoming rate
        source.bytes_in += 100_000
        source.own_estimate = own
        assert allocate_publisher(source, CFG, 1.0) == 900_000  # type: ignore[arg-type]
    source.bytes_in += 100_000
    source.own_estimate = 250_000  # it falls: congestion
    assert allocate_publisher(source, CFG, 1.0) == 250_000  # type: ignore[arg-type]
    source.bytes_in += 100_000  # (it holds there)
    assert allocate_publisher(source, CFG, 1.0) == 250_000  # type: ignore[arg-type]


def test_loss_comes_from_the_reports_counters_not_the_worst_short_report() -> None:
    """A browser sends a receiver report with every NACK, each covering a few packets:
    with 2 % loss some say 33 % or 50 %. The cumulative counters over the interval give
    2 %, which holds the estimate instead of cutting it."""
    link = SubscriberLink.create(CFG)
    lost, highest = 0, 1000
    link.on_report(0.0, 0, 0.02, (7, lost, highest))
    for n in range(50):  # 50 reports of 4 packets each: 200 packets, 4 lost
        highest += 4
        if n % 12 == 5:
            lost += 1
        link.on_report(1 / 4 if n % 12 == 5 else 0.0, 0, 0.02, (7, lost, highest))
    assert link.take_loss() == pytest.approx(4 / 200)
    assert link.take_loss() is None  # nothing reported since
    for step in range(1, 11):
        for _ in range(10):
            highest += 10
            lost += 1 if highest % 50 == 0 else 0
            link.on_report(0.5 if highest % 50 == 0 else 0.0, 0, 0.02, (7, lost, highest))
        estimate = link.estimator.estimate
        update_subscriber(link, SubscriberSample(
            bytes_sent=step * 100_000, remb=None, audio_streams=0, video_streams=1,
            consuming=True), CFG, float(step), 1.0)
        assert link.estimator.estimate >= estimate, "2 % random loss is not congestion"
    assert link.max_layer == 2


def test_counters_of_each_ssrc_are_followed_apart_and_duplicates_lower_the_loss() -> None:
    link = SubscriberLink.create(CFG)
    link.on_report(0.0, 0, None, (1, 10, 500))
    link.on_report(0.0, 0, None, (2, 0, 9000))
    link.on_report(0.1, 0, None, (1, 15, 600))  # 5 of 100
    link.on_report(0.0, 0, None, (2, 0, 9100))  # 0 of 100
    link.on_report(0.0, 0, None, (1, 14, 650))  # 0 of 50, and a duplicate: one fewer
    link.on_report(0.9, 0, None, (1, 99, 550))  # an old report, out of order: ignored
    assert link.take_loss() == pytest.approx(4 / 250)
    link.on_report(0.02, 0, None)  # a report without counters: the fraction is used
    assert link.take_loss() == pytest.approx(0.02)
