"""Per-leg statistics, and one interval's update of them, on plain numbers.

Each interval the Router's bandwidth task (sfu/allocation.py) reads what
every leg carried off the SFU's objects into a small sample and calls:

1. :func:`update_subscriber`: the link's estimate from its receiver reports,
   REMB and send rate (sfu/bandwidth.py), then the share of it each video
   stream gets (audio is reserved first: audio always flows) and the
   temporal-layer cap or pause that share allows;
2. :func:`update_publisher`: a REMB target for a video publisher that its
   subscribers (all but outliers, sfu/bandwidth.py) can take, or for a simulcast
   publisher what the layers its subscribers want cost, within [floor, max], and
   never above what its own link carried.

Between updates, a link that carries simulcast video watches its receiver reports and
REMB for a sudden squeeze (sfu/squeeze.py); the Router looks every ``POLL`` and
updates a squeezed link at once instead of at the next interval, the update cutting
its estimate to the squeeze's ``cut``.

Nothing here knows consumers, producers or transports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sfu.bandwidth import (
    BandwidthConfig,
    LinkEstimator,
    Quality,
    VideoGate,
    publisher_target,
    quality_of,
)
from sfu.layeralloc import PublisherCap
from sfu.squeeze import WINDOW, SqueezeWatch

AUDIO_RESERVE = 40_000
"""Bits per second kept for each audio stream before video is shared out."""


@dataclass
class SubscriberLink:
    """What the SFU knows about the path to one subscriber."""

    estimator: LinkEstimator
    gate: VideoGate
    fraction_lost: float | None = None
    """Latest receiver report (0..1), consumed by the next update."""
    jitter: int = 0
    rtt: float | None = None
    remb: int | None = None
    last_report_at: float | None = None
    bytes_seen: int = 0
    send_rate: float = 0.0
    share: float = 0.0
    """Estimated bits per second available to each video stream of this link."""
    quality: Quality = Quality.GOOD
    max_layer: int | None = 2
    consuming_since: float | None = None
    clean_since: float | None = None
    on_rendition: bool = False
    """Some video of this link is served from a shared low-bitrate rendition."""
    probe_target: float = 0.0
    """Estimate a probe lifts the link to (what its held-back video would need)."""
    probed_at: float | None = None
    probe_from: int = -1
    """Video level when the last probe started: -1 held back (paused or on a rendition),
    else the temporal-layer cap."""
    resumed_after_probe: bool = False
    """The last probe lifted the video level (so falling back now means it failed)."""
    probe_wait: float = 2.0
    """Seconds of clean audio-only link before video is tried again (doubles on failure)."""
    layered_level: int = 0
    """Simulcast videos of the link: the sum of (chosen layer + 1) over those not paused,
    as the last allocation left them (it rises when any moves up)."""
    layered_more: float = 0.0
    """Bits per second the next simulcast step the capacity refused would need (0: each
    simulcast video has the layer its tile needs)."""
    layered_only: bool = False
    """Every video of the link is simulcast: no temporal-layer cap holds any back."""

    counters: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per SSRC: cumulative packets lost and extended highest sequence number of its
    latest receiver report."""
    lost: int = 0
    """Packets lost since the last update, from the reports' cumulative counters…"""
    expected: int = 0
    """… out of this many expected."""
    reported_at: dict[int, float] = field(default_factory=dict)
    """Per SSRC: when its latest receiver report came."""
    squeeze: SqueezeWatch = field(default_factory=SqueezeWatch)
    """Sudden squeezes seen between updates (sfu/squeeze.py)."""
    updated_at: float | None = None
    """``now`` of the last :func:`update_subscriber` (links may be updated off the interval) …"""
    rate_at: float | None = None
    """… and of the last that measured ``send_rate`` (from ``bytes_seen``)."""

    @classmethod
    def create(cls, config: BandwidthConfig) -> SubscriberLink:
        return cls(estimator=LinkEstimator(config), gate=VideoGate(config))

    def on_report(self, fraction_lost: float, jitter: int, rtt: float | None,
                  counters: tuple[int, int, int] | None = None, *,
                  now: float | None = None) -> None:
        """One receiver report block; ``counters``: its (SSRC, cumulative packets lost,
        extended highest sequence number); ``now``: ``time.monotonic()`` unless given."""
        now = time.monotonic() if now is None else now
        self.fraction_lost = fraction_lost if self.fraction_lost is None \
            else max(self.fraction_lost, fraction_lost)
        if counters is not None:
            ssrc, lost, highest = counters
            previous = self.counters.get(ssrc)
            if previous is None or highest >= previous[1]:
                self.counters[ssrc] = (lost, highest)
            if previous is not None and highest > previous[1]:
                self.expected += highest - previous[1]
                self.lost += lost - previous[0]  # may fall: duplicates count as received
                if now - self.reported_at.get(ssrc, float("-inf")) <= WINDOW:
                    self._watch(now, lost - previous[0], highest - previous[1])
            self.reported_at[ssrc] = now
        self.jitter = jitter
        if rtt is not None:
            self.rtt = rtt
        self.last_report_at = now

    def _watch(self, now: float, lost: int, expected: int) -> None:
        """Only a link with a simulcast video acts on a squeeze: it has a lower layer to
        move to at once (one encoding would be paused or capped on a guess, where the
        smoothed estimate's patience spares it)."""
        if self.layered_level > 0:
            self.squeeze.report(now, lost, expected, smoothed_loss=self.estimator.loss,
                                send_rate=self.send_rate)

    @property
    def watching(self) -> bool:
        """Squeezes matter to this link: it carries simulcast video, or one is pending."""
        return self.layered_level > 0 or self.squeeze.cut is not None

    def check_remb(self, remb: int | None, now: float) -> bool:
        """The subscriber's REMB as it is now; True when a squeeze waits for an update
        (seen now or by the receiver reports)."""
        if self.layered_level > 0:
            self.squeeze.remb(now, remb, last=self.remb, send_rate=self.send_rate)
        return self.squeeze.cut is not None

    def take_loss(self) -> float | None:
        """Loss since the last call: from the cumulative counters when the reports
        carried any, else the largest ``fraction_lost`` reported (None: no report).

        A browser under NACK traffic sends a report with every NACK, each covering a
        few packets: one reordered or lost packet among three reads as 33 %, so the
        largest per-report fraction says little. The counters over the whole interval
        give the real share."""
        if self.expected > 0:
            loss: float | None = min(1.0, max(0.0, self.lost / self.expected))
        else:
            loss = self.fraction_lost
        self.fraction_lost = None
        self.lost = self.expected = 0
        return loss

    def snapshot(self) -> dict[str, object]:
        return {"estimate": int(self.estimator.estimate), "loss": round(self.estimator.loss, 4),
                "rtt": self.rtt, "jitter": self.jitter, "remb": self.remb,
                "send_rate": int(self.send_rate), "quality": self.quality.value,
                "video_share": int(self.share),
                "video_layer": self.max_layer if self.max_layer is not None else "paused",
                "squeezes": self.squeeze.count}


@dataclass
class PublisherLink:
    """Incoming side of one video producer."""

    bytes_seen: int = 0
    bitrate: float = 0.0
    target: int | None = None
    """Last REMB sent to the publisher."""
    loss: float = 0.0
    """Smoothed loss on the publisher's leg, after retransmissions."""
    quality: Quality = Quality.EXCELLENT
    history: list[tuple[float, int]] = field(default_factory=list)
    layers_cap: PublisherCap = field(default_factory=PublisherCap)
    """A simulcast publisher's cap, from its viewers' tiles (sfu/layeralloc.py)."""
    own: int | None = None
    """The publisher's own estimate (``PublisherSample.own_estimate``) last seen …"""
    own_rising: bool = False
    """… and whether its last change was upwards (the estimator ramping up)."""


@dataclass(frozen=True, kw_only=True)
class SubscriberSample:
    """What one subscriber link carried, read off its transport for one update."""

    bytes_sent: int
    """Media bytes sent on the link so far (cumulative)."""
    remb: int | None
    """The subscriber's own estimate (REMB), when it sends one."""
    audio_streams: int
    """Audio consumers the subscriber has not paused."""
    video_streams: int
    """Video consumers the subscriber has not paused."""
    consuming: bool
    """The link carries any consumer at all (paused ones included)."""


def update_subscriber(link: SubscriberLink, sample: SubscriberSample, config: BandwidthConfig,
                      now: float, dt: float) -> SubscriberLink:
    """Update the estimate, each video stream's ``share``, the layer cap and the quality.

    ``dt``: seconds since the last update, used for the first one; later ones measure the
    send rate from ``now`` (a squeezed link is updated between intervals)."""
    link.check_remb(sample.remb, now)  # a squeeze the router has not looked for yet
    link.updated_at = now
    if link.rate_at is not None:
        dt = now - link.rate_at
    # (an update just after another, off the interval, is too short to tell a rate)
    if link.rate_at is None or dt >= min(WINDOW / 2, 0.9 * config.update_interval):
        link.send_rate = max(0, sample.bytes_sent - link.bytes_seen) * 8 / max(dt, 1e-3)
        link.bytes_seen, link.rate_at = sample.bytes_sent, now
    link.remb = sample.remb
    link.estimator.update(now, fraction_lost=link.take_loss(), rtt=link.rtt, remb=link.remb,
                          send_rate=link.send_rate)
    cut = link.squeeze.take()
    if cut is not None:
        link.estimator.estimate = max(float(config.min_bitrate),
                                      min(link.estimator.estimate, cut))
    _probe(link, config, now)
    audio = sample.audio_streams * AUDIO_RESERVE
    link.share = max(0.0, link.estimator.estimate - audio) / max(1, sample.video_streams)
    link.max_layer = link.gate.update(now, link.share)
    # A probe lifts every video's share to the next step up, audio reserved.
    step = {None: config.resume_above, 0: config.quarter_rate_below,
            1: config.half_rate_below}.get(link.max_layer, 0)
    link.probe_target = float(step * sample.video_streams + audio)
    if link.layered_more > 0:  # a simulcast video could step up: aim the probe there
        link.probe_target = max(link.probe_target, link.estimator.estimate + link.layered_more)
    if link.consuming_since is None and sample.consuming:
        link.consuming_since = time.monotonic()
    elif not sample.consuming:
        link.consuming_since = None
    if sample.consuming:
        reported = link.last_report_at
        if reported is None and link.consuming_since is not None:
            reported = link.consuming_since  # the first report is not due yet
        link.quality = link.estimator.quality(time.monotonic(), reported)
    else:  # nothing is sent on this link: nothing to judge it by
        link.quality = Quality.EXCELLENT
    return link


def _probe(link: SubscriberLink, config: BandwidthConfig, now: float) -> None:
    """Video held back (paused, on a rendition, capped to fewer temporal layers, or on a
    simulcast layer below what its tile needs for lack of capacity) makes
    the link carry less than it may be able to, and its estimate, capped near what is
    sent, cannot grow past that. Once the link has been free of congestion (smoothed loss
    under ``loss_high``: steady random loss of a few percent is not congestion) for the
    probe interval, lift the estimate to what the next step up needs (``probe_target``).
    If the link cannot take it, loss brings the video back down and the next probe waits
    twice as long (up to 30 s); a step that holds for 10 s resets the wait."""
    clean = link.estimator.loss < config.loss_high
    temporal = 2 if link.layered_only else \
        -1 if link.max_layer is None or link.on_rendition else link.max_layer
    held = temporal < 2 or link.layered_more > 0
    level = temporal + 3 * link.layered_level
    if link.probed_at is not None:
        if level > link.probe_from:
            link.resumed_after_probe = True
        elif link.resumed_after_probe:  # back down after the probe lifted it
            if now - link.probed_at < 10.0:
                link.probe_wait = min(30.0, link.probe_wait * 2)
            link.probed_at = None
        if link.probed_at is not None and now - link.probed_at > 10.0:
            if link.resumed_after_probe:
                link.probe_wait = config.resume_hold  # the last probe held: reset the back-off
            link.probed_at = None
    if not held or not clean:
        link.clean_since = None
        return
    if link.probed_at is not None and not link.resumed_after_probe:
        return  # the last probe has not lifted the video yet (a resume waits resume_hold)
    if link.clean_since is None:
        link.clean_since = now
    elif now - link.clean_since >= link.probe_wait:
        target = max(float(config.resume_above), link.probe_target)
        link.estimator.estimate = max(link.estimator.estimate,
                                      min(target, float(config.max_bitrate)))
        link.probed_at = now
        link.probe_from = level
        link.resumed_after_probe = False
        link.clean_since = None


@dataclass(frozen=True, kw_only=True)
class PublisherSample:
    """What one video producer received, read off it for one update."""

    bytes_in: int
    """Media bytes received so far (cumulative)."""
    loss: float | None
    """Loss on the publisher's leg since the last update (None: not measured)."""
    shares: tuple[float, ...]
    """The ``share`` of each subscriber link that limits this publisher."""
    tentative: tuple[float, ...] = ()
    """… and of each link whose estimate a probe lifted and has not settled yet."""
    own_estimate: int | None
    """The receiver's delay-based estimate of the publisher's own link, if any."""
    layers_cap: float | None = None
    """A simulcast publisher: the target its layers' consumers call for (sfu/layeralloc.py's
    ``PublisherCap``), used instead of ``shares``. None: one encoding."""


def update_publisher(link: PublisherLink, sample: PublisherSample, config: BandwidthConfig,
                     dt: float) -> int:
    """Returns the REMB target for a video producer."""
    link.bitrate = max(0, sample.bytes_in - link.bytes_seen) * 8 / max(dt, 1e-3)
    link.bytes_seen = sample.bytes_in
    if sample.loss is not None:
        link.loss += config.smoothing * (sample.loss - link.loss)
    link.quality = quality_of(link.loss, None, None, config)
    if sample.layers_cap is None:
        target = publisher_target(sample.shares, config, sample.tentative)
    else:
        target = int(max(config.floor_bitrate, min(sample.layers_cap, config.max_bitrate)))
    own = sample.own_estimate
    if own is not None and own != link.own:
        link.own_rising = link.own is not None and own > link.own
        link.own = own
    if own is not None and own < 0.85 * link.bitrate and not link.own_rising:
        # The publisher's own link is congested (its delay-based estimate is below
        # what arrives); otherwise that estimate only tracks the incoming rate. While it
        # climbs it is catching up with a sender that ramped faster (the estimator grows
        # by 8 % a second), not congestion: heeded then, the REMB would swing between
        # it and the target every other second, and a simulcast sender restart layers.
        target = max(config.floor_bitrate, min(target, own))
    link.target = target
    return target
