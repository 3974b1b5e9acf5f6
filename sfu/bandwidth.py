"""Capacity estimation per subscriber link, from RTCP receiver reports and REMB.

A loss-based controller in the spirit of Google Congestion Control, made
RTT-aware, with its inputs smoothed so it does not flap:

- smoothed loss above ``loss_high`` (10 %): decrease, ``estimate *= 1 - 0.5 * loss``;
- between ``loss_low`` (2 %) and ``loss_high``: hold;
- below ``loss_low``: increase slowly, ``increase_per_second`` (8 %/s)
  compounded, but never beyond ``1.5 times`` what is actually being sent (an SFU
  that forwards cannot probe beyond its publishers' rate);
- RTT more than ``rtt_slack`` above the smallest RTT seen: the queue is
  growing, so hold instead of increasing, and decrease gently (5 %) when it
  is also losing;
- the receiver's own REMB, when it sends one, caps the estimate when it falls
  below what is being sent (the receiver saw over-use).

Everything here is pure computation on the numbers it is given: no I/O, no
clock, no aiortc; sfu/linkstats.py feeds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, kw_only=True)
class BandwidthConfig:
    """Controller constants and the bitrate limits; the ``bandwidth`` config section."""

    enabled: bool = True
    floor_bitrate: int = 150_000
    """REMB sent to a publisher never goes below this: one poor link cannot starve a room."""
    max_bitrate: int = 2_500_000
    """Ceiling of the REMB sent to a video publisher (per track)."""
    start_bitrate: int = 1_000_000
    """Initial estimate of a new subscriber link."""
    min_bitrate: int = 30_000
    """The estimate never goes below this (it must be able to recover)."""
    loss_high: float = 0.10
    loss_low: float = 0.02
    increase_per_second: float = 0.08
    rtt_slack: float = 0.1
    """Seconds of RTT above the link's minimum that count as a growing queue."""
    smoothing: float = 0.4
    """Weight of a new loss sample in the smoothed loss (EWMA)."""
    pause_below: int = 120_000
    """A subscriber whose estimate is below this gets video paused (audio keeps flowing)."""
    resume_above: int = 250_000
    """… and resumed, with a key frame, once above this for ``resume_hold`` seconds."""
    resume_hold: float = 2.0
    half_rate_below: int = 600_000
    """Below this estimate a subscriber gets half the frame rate (temporal layers ≤ 1)."""
    quarter_rate_below: int = 300_000
    """Below this, a quarter (temporal layer 0 only)."""
    update_interval: float = 1.0
    """How often estimates are recomputed and REMB is sent to publishers."""
    report_timeout: float = 5.0
    """No receiver report for this long: the link counts as lost."""
    max_renditions: int = 2
    """Node-wide budget of shared low-bitrate renditions (decode once, encode per tier)
    served to subscribers that would otherwise be paused; 0 turns them off."""
    outlier_ratio: float = 0.5
    """A subscriber whose video share is below this fraction of the median share among
    a non-simulcast publisher's subscribers is an outlier: it does not lower the REMB
    sent to that publisher (it is served from a rendition, a lower temporal layer, or
    paused instead)."""
    simulcast_cap: bool = True
    """Cap a simulcast publisher's REMB to the layers its viewers' tiles want (with
    headroom), so it stops encoding layers nobody watches (sfu/layeralloc.py's
    ``PublisherCap``): never while anyone wants its top layer; set once the wanted
    layers have been sent for a few seconds, from what they cost then, and not
    remeasured while it holds; a wanted layer that stops under it lifts it for a hold
    that doubles on repeats. On a lossy uplink (2 % loss, 0-100 ms jitter) it held
    steady with no key-frame waits, where a cap remeasured each second had viewers
    wait for key frames 6 to 9 times in 20 s. False: a simulcast publisher's REMB is
    the maximum, whatever its subscribers' links."""


class Quality(StrEnum):
    EXCELLENT = "excellent"
    GOOD = "good"
    POOR = "poor"
    LOST = "lost"


class LinkEstimator:
    """Estimate of what one subscriber link can carry, in bits per second."""

    def __init__(self, config: BandwidthConfig) -> None:
        self._config = config
        self.estimate = float(config.start_bitrate)
        self.loss = 0.0
        self.rtt: float | None = None
        self.min_rtt: float | None = None
        self.remb: int | None = None
        self._updated_at: float | None = None

    def update(self, now: float, *, fraction_lost: float | None, rtt: float | None,
               remb: int | None, send_rate: float) -> float:
        """Feed one interval's observations; returns the new estimate."""
        cfg = self._config
        dt = 1.0 if self._updated_at is None else max(0.0, min(5.0, now - self._updated_at))
        self._updated_at = now
        if fraction_lost is not None:
            self.loss += cfg.smoothing * (fraction_lost - self.loss)
        if rtt is not None and rtt > 0:  # aiortc reports stale-SR pairings as negative
            self.rtt = rtt
            self.min_rtt = rtt if self.min_rtt is None else min(self.min_rtt, rtt)
        queueing = (self.rtt is not None and self.min_rtt is not None
                    and self.rtt - self.min_rtt > cfg.rtt_slack)
        if self.loss > cfg.loss_high:
            self.estimate *= 1.0 - 0.5 * self.loss
        elif queueing and self.loss > cfg.loss_low:
            self.estimate *= 0.95
        elif self.loss < cfg.loss_low and not queueing:
            grown = self.estimate * (1.0 + cfg.increase_per_second) ** dt
            # Forwarding cannot probe beyond what publishers send, so growth is
            # capped near the send rate; a link whose video is paused may still
            # climb to the resume threshold by time, which is how it probes.
            ceiling = max(self.estimate, 1.5 * send_rate, 1.2 * cfg.resume_above)
            self.estimate = min(grown, ceiling)
        if remb is not None:
            # A receiver's REMB tracks what it is sent (its estimator is bounded by
            # 1.5 times the incoming rate and climbs slowly after a quiet spell), so
            # it only means congestion when it falls, and below what is being sent.
            # Capping by it otherwise would lock a link that was quiet at a low rate.
            falling = self.remb is not None and remb < 0.97 * self.remb
            if falling and remb < 0.85 * send_rate:
                self.estimate = min(self.estimate, float(remb))
            self.remb = remb
        self.estimate = max(float(cfg.min_bitrate), min(self.estimate, float(cfg.max_bitrate)))
        return self.estimate

    def quality(self, now: float, last_report: float | None) -> Quality:
        cfg = self._config
        if last_report is None or now - last_report > cfg.report_timeout:
            return Quality.LOST
        return quality_of(self.loss, self.rtt, self.estimate, cfg)


def quality_of(loss: float, rtt: float | None, estimate: float | None,
               cfg: BandwidthConfig) -> Quality:
    """excellent: under 2 % loss and RTT under 0.3 s; good: under 10 % loss;
    poor: more loss, or too little capacity for video."""
    if loss > cfg.loss_high or (estimate is not None and estimate < cfg.pause_below):
        return Quality.POOR
    if loss > cfg.loss_low or (rtt is not None and rtt > 0.3):
        return Quality.GOOD
    return Quality.EXCELLENT


class VideoGate:
    """Decides, with hysteresis, how much video a subscriber gets: a temporal layer cap
    (2 full, 1 half, 0 quarter frame rate) or paused (None)."""

    def __init__(self, config: BandwidthConfig) -> None:
        self._config = config
        self.max_layer: int | None = 2
        self._above_since: float | None = None

    def update(self, now: float, estimate: float) -> int | None:
        cfg = self._config
        if self.max_layer is None:
            if estimate >= cfg.resume_above:
                if self._above_since is None:
                    self._above_since = now
                if now - self._above_since >= cfg.resume_hold:
                    self._above_since = None
                    self.max_layer = self._layer_for(estimate)
            else:
                self._above_since = None
            return self.max_layer
        if estimate < cfg.pause_below:
            self.max_layer = None
            self._above_since = None
            return None
        self.max_layer = self._layer_for(estimate)
        return self.max_layer

    def _layer_for(self, estimate: float) -> int:
        cfg = self._config
        if estimate < cfg.quarter_rate_below:
            return 0
        if estimate < cfg.half_rate_below:
            return 1
        return 2


def publisher_target(shares: Sequence[float], config: BandwidthConfig,
                     tentative: Sequence[float] = ()) -> int:
    """The REMB for one video publisher that does not simulcast, from the video share of
    each subscriber link that limits it.

    The target is the smallest share among the subscribers that are not outliers: an
    outlier's share is below ``outlier_ratio`` times the median share (the upper median,
    so with two subscribers the better one is the reference). One subscriber on a bad
    link therefore cannot drag the publisher, and so everyone else, down to its rate: it
    takes a rendition, a lower temporal layer or a pause, while the publisher keeps
    sending what the rest can all carry. When most subscribers are slow, the median is
    slow too and the target follows the majority.

    ``tentative`` shares (links whose estimate a probe has just lifted, untried) count
    towards the median but set the target only when no other share is left.
    Never below the floor, never above the ceiling."""
    every = sorted([*shares, *tentative])
    if not every:
        return config.max_bitrate
    least = config.outlier_ratio * every[len(every) // 2]
    target = min([s for s in shares if s >= least] or [s for s in tentative if s >= least])
    return int(max(config.floor_bitrate, min(target, config.max_bitrate)))


_ORDER = (Quality.EXCELLENT, Quality.GOOD, Quality.POOR, Quality.LOST)


def worst(qualities: list[Quality]) -> Quality:
    return max(qualities, key=_ORDER.index) if qualities else Quality.EXCELLENT
