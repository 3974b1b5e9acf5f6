"""A sudden squeeze of a subscriber's link moves its simulcast video down at once
(sfu/squeeze.py's ``SqueezeWatch`` fed by sfu/linkstats.py, sfu/router.py's update
between intervals).

The consumer is real (a real SlotTrack and LayerSwitch); the subscribe transport and the
simulcast producer are the stand-ins of tests/sfu/test_linkstats.py, and the receiver
reports are fed as the fast path hands them over: (fraction lost, jitter, RTT, (SSRC,
cumulative lost, extended highest sequence number)). The router test uses a real Router
and SubscribeTransport.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

import pytest

from sfu.allocation import allocate_subscriber
from sfu.bandwidth import BandwidthConfig
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.layeralloc import Demand, LayerCost
from sfu.layerswitch import LayerSwitch
from sfu.linkstats import SubscriberLink, SubscriberSample, update_subscriber
from sfu.router import Router
from sfu.squeeze import HOLD, MARGIN, POLL
from tests.sfu.test_linkstats import CFG, Leg, Source

LAYERS = (LayerCost(bitrate=150_000, width=240), LayerCost(bitrate=300_000, width=480),
          LayerCost(bitrate=600_000, width=960))
SSRC = 1234
PACKETS = 60
"""Packets a second the top layer takes."""


class Viewer:
    """One simulcast video on a subscriber link, with its receiver reports; ``now`` on the
    same clock as the reports and the updates."""

    def __init__(self) -> None:
        self.now = 100.0
        self.leg = Leg()
        self.source = Source()
        self.consumer: Consumer = self.leg.add(self.source)
        self.requested: list[int | None] = []
        self.consumer.switch = LayerSwitch(layers=3, request_keyframe=self.requested.append,
                                           clock=lambda: self.now)
        self.consumer.switch.accept(2, True)  # on the top layer
        self.lost = 0
        self.highest = 1000

    @property
    def squeezes(self) -> int:
        """Seen so far (what the link's snapshot reports)."""
        count = self.link.snapshot()["squeezes"]
        assert isinstance(count, int)
        return count

    @property
    def link(self) -> SubscriberLink:
        return self.leg.link

    def describe(self, consumer: Consumer) -> Demand:
        return Demand(key=consumer.id, layers=LAYERS)

    def update(self) -> SubscriberLink:
        return allocate_subscriber(self.link, self.leg.consumers.values(), CFG, self.now, 1.0,
                                   bytes_sent=self.leg.sent, remb=self.leg.remb_value,
                                   describe=self.describe)

    def poll(self) -> bool:
        """What the router does every ``POLL``: a squeeze waiting for an update?"""
        return self.link.check_remb(self.leg.remb_value, self.now)

    def report(self, expected: int, lost: int) -> None:
        self.highest += expected
        self.lost += lost
        self.link.on_report(lost / max(1, expected), 0, 0.02, (SSRC, self.lost, self.highest),
                            now=self.now)

    def run(self, seconds: float, *, loss: float = 0.0, every: float = 0.1,
            rate: float = 650_000, rng: random.Random | None = None) -> None:
        """Send ``rate`` bits per second, the receiver reporting every ``every`` seconds
        the packets of that time, ``loss`` of them lost (at random with ``rng``), the
        link updated every second as the router's interval does."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += every
            self.leg.sent += int(rate * every / 8)
            expected = round(PACKETS * every)
            lost = sum(rng.random() < loss for _ in range(expected)) if rng \
                else round(loss * expected)
            self.report(expected, lost)
            if self.link.updated_at is None or self.now - self.link.updated_at >= 1.0 - 1e-9:
                self.update()

    def clean(self) -> None:
        """Ten clean seconds on the top layer."""
        self.run(10.0)
        assert self.consumer.switch is not None and self.consumer.switch.target == 2


def test_a_sudden_loss_moves_a_simulcast_viewer_down_at_once() -> None:
    viewer = Viewer()
    viewer.clean()
    before = viewer.link.estimator.estimate
    viewer.run(0.4, loss=0.5)  # within one interval: the reports count half the packets lost
    assert viewer.squeezes == 1 and viewer.poll()  # the router updates the link now:
    viewer.update()
    assert viewer.link.estimator.estimate <= MARGIN * 0.5 * 650_000 * 1.05 < before
    switch = viewer.consumer.switch
    assert switch is not None
    assert switch.target == 0 and switch.dropping  # the old layer stops at once …
    assert viewer.requested[-1] == 0  # … and the target's key frame is asked for now
    assert not viewer.poll()  # the cut is taken once


def test_a_remb_falling_far_below_the_rate_sent_moves_the_viewer_down_at_once() -> None:
    viewer = Viewer()
    viewer.leg.remb_value = 700_000
    viewer.clean()
    viewer.now += 0.3
    viewer.leg.remb_value = 300_000  # the subscriber's estimator saw its queue grow
    assert viewer.poll()
    viewer.update()
    # below the REMB, room to drain the queue: the 300 kbit/s layer would fill it again
    assert viewer.link.estimator.estimate == MARGIN * 300_000
    assert viewer.consumer.switch is not None and viewer.consumer.switch.target == 0


def test_a_remb_a_little_below_the_rate_sent_or_rising_is_not_a_squeeze() -> None:
    viewer = Viewer()
    viewer.leg.remb_value = 300_000  # a receiver's estimate climbing from its start
    viewer.clean()
    viewer.leg.remb_value = 500_000
    assert not viewer.poll()
    viewer.update()
    viewer.leg.remb_value = 480_000  # 74 % of the 650 kbit/s sent
    assert not viewer.poll() and viewer.squeezes == 0


def test_without_the_cut_one_update_leaves_the_viewer_on_its_layer() -> None:
    """The same reports and update with the squeeze cut taken away: the smoothed loss
    alone does not move the video in one update (what the cut saves)."""
    viewer = Viewer()
    viewer.clean()
    viewer.run(0.4, loss=0.5)
    assert viewer.link.squeeze.take() is not None
    viewer.update()
    assert viewer.consumer.switch is not None and viewer.consumer.switch.target == 2


def test_steady_random_loss_and_reordering_are_not_a_squeeze() -> None:
    viewer = Viewer()
    viewer.clean()
    rng = random.Random(15)
    viewer.run(30.0, loss=0.05, every=0.03, rng=rng)
    # reordering: a report counts packets still on their way as lost, the next one less
    for _ in range(200):
        viewer.now += 0.03
        viewer.report(2, 3)
        viewer.now += 0.03
        viewer.report(2, -3)
    assert viewer.squeezes == 0


def test_an_audio_report_every_five_seconds_does_not_dilute_the_window() -> None:
    viewer = Viewer()
    viewer.clean()
    audio = (99, 0, 5000)
    viewer.link.on_report(0.0, 0, 0.02, audio, now=viewer.now - 4.9)
    for n in range(4):
        viewer.now += 0.05
        if n == 2:  # 250 clean audio packets over five seconds
            viewer.link.on_report(0.0, 0, 0.02, (99, 0, 5250), now=viewer.now)
        viewer.report(6, 3)
    assert viewer.squeezes == 1


def test_a_link_already_losing_needs_three_times_its_smoothed_loss() -> None:
    viewer = Viewer()
    viewer.clean()
    viewer.link.estimator.loss = 0.15
    for lost in (2, 3, 2, 3, 2, 3, 2, 3):  # 42 % of 6 packets every 50 ms
        viewer.now += 0.05
        viewer.report(6, lost)
    assert viewer.squeezes == 0
    for _ in range(4):  # 67 %
        viewer.now += 0.05
        viewer.report(6, 4)
    assert viewer.squeezes == 1


def test_a_squeeze_is_seen_once_per_hold_and_only_on_a_simulcast_link() -> None:
    viewer = Viewer()
    viewer.clean()
    viewer.run(HOLD - 0.5, loss=0.6, every=0.05)
    assert viewer.squeezes == 1
    viewer.run(20.0)  # the squeeze ends; the smoothed loss decays
    viewer.run(1.0, loss=0.6, every=0.05)
    assert viewer.squeezes == 2
    plain = Viewer()
    plain.consumer.switch = None  # one encoding: nothing to move down to at once
    plain.run(10.0)
    plain.run(1.0, loss=0.6)
    assert plain.squeezes == 0


async def test_a_router_updates_a_squeezed_link_before_its_next_interval(
        loopback_ice: None) -> None:
    config = SfuConfig(ice_addresses=("127.0.0.1",),
                       bandwidth=replace(BandwidthConfig(), update_interval=30.0))
    router = Router(config)
    try:
        transport = router.create_subscribe_transport({"participant": "a"},
                                                      on_offer=lambda sdp, tracks: None)
        link = transport.link
        link.layered_level = 3  # as if its last allocation left a simulcast video on top
        link.send_rate = 600_000
        now = time.monotonic()
        link.on_report(0.0, 0, 0.02, (SSRC, 0, 1000), now=now)
        link.on_report(0.5, 0, 0.02, (SSRC, 20, 1040), now=now + 0.2)
        assert link.squeeze.cut is not None
        for _ in range(10):
            await asyncio.sleep(POLL)
            if link.updated_at is not None:
                break
        assert link.updated_at is not None  # updated at once, not 30 s later
        assert link.squeeze.cut is None  # … and the cut taken
    finally:
        await router.close()


def test_an_update_just_after_another_keeps_the_send_rate_of_the_interval() -> None:
    link = SubscriberLink.create(CFG)
    sent = 0
    for second in range(1, 4):
        sent += 80_000  # 640 kbit/s
        update_subscriber(link, sample(sent), CFG, float(second), 1.0)
    sent += 2_000  # 50 ms later, a squeeze's update: 320 kbit/s over too short a time
    update_subscriber(link, sample(sent), CFG, 3.05, 1.0)
    assert link.send_rate == 640_000
    sent += 78_000  # the next interval measures from the last one that measured
    update_subscriber(link, sample(sent), CFG, 4.0, 1.0)
    assert link.send_rate == 640_000


def test_a_short_configured_interval_still_measures_the_send_rate() -> None:
    config = replace(CFG, update_interval=0.2)
    link = SubscriberLink.create(config)
    sent = 0
    for tick in range(1, 6):
        sent += 8_000 * tick  # 320, 640, … kbit/s
        update_subscriber(link, sample(sent), config, 0.2 * tick, 0.2)
        assert link.send_rate == pytest.approx(320_000 * tick)


def sample(sent: int) -> SubscriberSample:
    return SubscriberSample(bytes_sent=sent, remb=None, audio_streams=0, video_streams=1,
                            consuming=True)
