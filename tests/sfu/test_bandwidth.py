"""The link controller (sfu/bandwidth.py) on recorded statistics sequences.

Each sequence is what the Router's bandwidth task feeds one subscriber link,
one interval at a time: (time s, fraction lost 0..1 or None, RTT s or None,
the subscriber's REMB or None, bits per second sent on the link).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable

import pytest

from sfu.bandwidth import (
    BandwidthConfig,
    LinkEstimator,
    Quality,
    VideoGate,
    publisher_target,
    quality_of,
    worst,
)
from sfu.linkstats import AUDIO_RESERVE

Sample = tuple[float, float | None, float | None, int | None, float]

CFG = BandwidthConfig()


def run(samples: Iterable[Sample], *, start: float | None = None,
        config: BandwidthConfig = CFG) -> tuple[LinkEstimator, list[float], list[float]]:
    """Feed ``samples``; returns the estimator, the estimate and the smoothed loss after each."""
    estimator = LinkEstimator(config)
    if start is not None:
        estimator.estimate = start
    estimates, losses = [], []
    for t, lost, rtt, remb, rate in samples:
        estimates.append(estimator.update(t, fraction_lost=lost, rtt=rtt, remb=remb,
                                          send_rate=rate))
        losses.append(estimator.loss)
    return estimator, estimates, losses


def direction_changes(values: list[float], tolerance: float = 0.005) -> int:
    """How often the series turns from rising to falling or back (moves under 0.5 % ignored)."""
    changes, last = 0, 0
    for a, b in itertools.pairwise(values):
        step = 0 if abs(b - a) <= tolerance * a else (1 if b > a else -1)
        if step and last and step != last:
            changes += 1
        last = step or last
    return changes


# -- recorded sequences -------------------------------------------------------------
# A clean loopback link forwarding one 800 kbit/s publisher (video + audio).
CLEAN_RAMP: list[Sample] = [(float(t), 0.0, 0.004, None, 800_000.0) for t in range(30)]

# Recorded on loopback through tests/netimpair.py (bench/bandwidth_bench.py): one
# subscriber of a ~900 kbit/s VP8 + Opus publisher, its downlink squeezed to
# 300 kbit/s with 5 % loss at t = 10 s and lifted at t = 30 s. Its REMB falls with the
# squeeze; once video is paused only audio (~120 kbit/s) is sent; and aiortc pairs
# receiver reports with stale sender reports of the paused video stream, so some
# RTT samples are negative.
SQUEEZED: list[Sample] = [
    (8.273, 0.0, 0.0021, 1_086_088, 820_871.0),
    (9.273, 0.0, 0.0024, 1_175_504, 946_555.0),
    (10.278, 0.0, 0.0027, 1_175_504, 837_202.0),
    (11.347, 0.7461, 0.0027, 214_662, 711_439.0),
    (12.369, 0.7422, 0.0022, 171_278, 166_420.0),
    (13.373, 0.6406, 0.0027, 171_278, 148_402.0),
    (14.382, 0.4336, 0.0322, 149_518, 157_886.0),
    (15.385, 0.2109, 0.0281, 145_615, 118_578.0),
    (16.394, 0.0391, 0.0064, 145_615, 120_478.0),
    (17.395, 0.0, 0.0215, 145_615, 118_864.0),
    (18.396, 0.082, 0.0061, 145_615, 118_843.0),
    (19.399, 0.0273, -0.1839, 145_615, 118_658.0),
    (20.449, 0.1914, 0.0138, 145_615, 102_875.0),
    (21.561, 0.043, -0.1838, 145_615, 133_643.0),
    (22.562, 0.0391, 0.0137, 145_615, 118_847.0),
    (23.564, 0.0, -0.1554, 145_615, 118_751.0),
    (24.566, 0.0703, 0.0116, 145_615, 118_784.0),
    (25.570, 0.0, 0.011, 145_615, 120_825.0),
    (26.575, 0.0625, 0.0108, 145_615, 118_316.0),
    (27.644, 0.1133, -0.0785, 145_615, 102_551.0),
    (28.646, 0.0273, -0.065, 145_615, 135_099.0),
    (29.648, 0.0273, 0.0106, 145_615, 121_140.0),
    (30.649, 0.0508, 0.0092, 145_615, 118_838.0),
    (31.650, 0.0, 0.008, 145_615, 118_865.0),
    (32.652, 0.0, -0.0388, 145_615, 118_754.0),
    (33.653, 0.0, -0.0328, 145_615, 118_846.0),
    (34.656, 0.0, 0.0055, 145_615, 118_718.0),
    (35.657, 0.0, 0.0045, 145_615, 158_328.0),
]
SQUEEZE_AT, LIFT_AT = 10.0, 30.0

# Clean, then a burst of two bad intervals (30 % loss), then clean again.
BURST: list[Sample] = (
    [(float(t), 0.0, 0.02, None, 800_000.0) for t in range(10)]
    + [(10.0, 0.30, 0.05, None, 800_000.0), (11.0, 0.30, 0.05, None, 790_000.0)]
    + [(float(t), 0.0, 0.02, None, 800_000.0) for t in range(12, 30)]
)

# No loss, but the RTT climbs from 50 ms to 400 ms: a queue is building up.
RISING_RTT: list[Sample] = [(float(t), 0.0, 0.05 + 0.035 * t, None, 800_000.0)
                            for t in range(11)]


def test_a_clean_link_grows_about_8_percent_a_second_up_to_1_5_times_the_send_rate() -> None:
    _, estimates, _ = run(CLEAN_RAMP, start=500_000)
    ratios = [b / a for a, b in itertools.pairwise(estimates)]
    assert all(1.0 <= r <= 1.0 + CFG.increase_per_second + 1e-9 for r in ratios)
    assert estimates[1] == pytest.approx(500_000 * 1.08 ** 2)
    assert max(estimates) == pytest.approx(1.5 * 800_000)
    assert estimates[-1] == pytest.approx(1.5 * 800_000)  # capped, not beyond


def test_an_idle_link_does_not_climb_past_the_resume_probe_ceiling() -> None:
    quiet = [(float(t), 0.0, 0.004, None, 0.0) for t in range(60)]
    _, estimates, _ = run(quiet, start=100_000)
    assert estimates[-1] == pytest.approx(1.2 * CFG.resume_above)


def test_loss_above_10_percent_backs_off_in_proportion_to_the_loss() -> None:
    lossy = [(float(t), 0.30, 0.004, None, 800_000.0) for t in range(8)]
    estimator = LinkEstimator(CFG)
    previous = estimator.estimate
    for t, lost, rtt, remb, rate in lossy:
        now = estimator.update(t, fraction_lost=lost, rtt=rtt, remb=remb, send_rate=rate)
        assert estimator.loss > CFG.loss_high  # smoothed: 12 % after the first sample
        assert now == pytest.approx(previous * (1 - 0.5 * estimator.loss))
        previous = now
    assert previous < 0.4 * CFG.start_bitrate


def test_loss_between_2_and_10_percent_holds_the_estimate() -> None:
    rng = random.Random(3)
    held = [(float(t), rng.uniform(0.03, 0.08), 0.004, None, 800_000.0) for t in range(40)]
    _, estimates, losses = run(held, start=700_000)
    inside = next(i for i, loss in enumerate(losses) if loss > CFG.loss_low)
    assert inside <= 2  # the smoothed loss enters the band within two samples…
    assert all(CFG.loss_low < loss < CFG.loss_high for loss in losses[inside:])
    assert estimates[inside:] == [estimates[inside]] * (len(held) - inside)  # …and holds


def test_a_300_kbit_squeeze_with_5_percent_loss_pauses_video_within_4_seconds() -> None:
    _, estimates, _ = run(SQUEEZED)
    times = [t for t, *_ in SQUEEZED]
    first = next(i for i, e in enumerate(estimates) if e - AUDIO_RESERVE < CFG.pause_below)
    assert times[first] - SQUEEZE_AT <= 4.0  # a video share under the pause threshold
    squeezed = [e for i, (t, e) in enumerate(zip(times, estimates, strict=True))
                if i >= first and t < LIFT_AT]
    assert all(b <= a for a, b in itertools.pairwise(squeezed))  # no creeping back up
    assert min(estimates) >= CFG.min_bitrate


def test_a_lifted_squeeze_grows_again_despite_negative_rtt_samples() -> None:
    estimator, estimates, losses = run(SQUEEZED)
    clean = [i for i, (t, *_) in enumerate(SQUEEZED) if t > LIFT_AT and losses[i] < CFG.loss_low]
    assert len(clean) >= 3
    assert all(estimates[i] > estimates[i - 1] for i in clean)
    assert estimator.min_rtt is not None and estimator.min_rtt > 0


def test_a_negative_rtt_sample_does_not_become_the_links_minimum() -> None:
    samples: list[Sample] = [(float(t), 0.0, 0.02, None, 800_000.0) for t in range(3)]
    samples += [(3.0, 0.0, -0.19, None, 800_000.0)]
    samples += [(float(t), 0.0, 0.03, None, 800_000.0) for t in range(4, 8)]
    estimator, estimates, _ = run(samples, start=400_000)
    assert estimator.min_rtt == 0.02
    assert all(b > a for a, b in itertools.pairwise(estimates))  # no queue: keeps growing


def test_a_short_loss_burst_costs_little_and_recovers() -> None:
    _, estimates, losses = run(BURST)
    before = estimates[9]
    assert before == pytest.approx(1.5 * 800_000)
    assert min(estimates) > 0.75 * before  # two bad seconds do not collapse the estimate
    assert max(losses) > CFG.loss_high  # …although the smoothed loss did cross 10 %
    assert estimates[-1] == pytest.approx(before)  # back at the ceiling
    assert direction_changes(estimates[9:]) == 1  # down once, then up: no oscillation


def test_rising_rtt_without_loss_stops_growth_but_does_not_back_off() -> None:
    _, estimates, _ = run(RISING_RTT, start=600_000)
    rtts = [rtt for _, _, rtt, _, _ in RISING_RTT if rtt is not None]
    queueing = [i for i, rtt in enumerate(rtts) if rtt - min(rtts) > CFG.rtt_slack]
    assert queueing, "the sequence must reach a growing queue"
    assert estimates[queueing[0] - 1] > 600_000  # grew while the queue was short
    held = estimates[queueing[0] - 1:]
    assert held == [held[0]] * len(held)  # then neither grows nor falls


def test_moderate_loss_with_a_growing_queue_backs_off_gently() -> None:
    base = [(0.0, 0.05, 0.05, None, 800_000.0)]
    queued = base + [(float(t), 0.05, 0.30, None, 800_000.0) for t in range(1, 6)]
    flat = base + [(float(t), 0.05, 0.05, None, 800_000.0) for t in range(1, 6)]
    _, with_queue, losses = run(queued, start=800_000)
    _, without, _ = run(flat, start=800_000)
    steps = [b / a for a, b, loss in zip(with_queue, with_queue[1:], losses[1:], strict=False)
             if loss > CFG.loss_low]
    assert steps and all(s == pytest.approx(0.95) for s in steps)
    assert without[-1] == without[1]  # the same loss without a queue only holds


def test_a_remb_that_falls_below_the_send_rate_caps_the_estimate() -> None:
    falling: list[Sample] = [(0.0, 0.0, 0.01, 1_300_000, 900_000.0),
                             (1.0, 0.0, 0.01, 1_250_000, 900_000.0),
                             (2.0, 0.0, 0.01, 600_000, 900_000.0)]
    estimator, estimates, _ = run(falling, start=1_000_000)
    assert estimates[1] > 1_000_000
    assert estimates[2] == 600_000
    assert estimator.remb == 600_000


def test_a_remb_that_lags_a_quiet_link_does_not_cap_it() -> None:
    # Video paused: ~50 kbit/s of audio. The receiver's REMB tracks that low rate and
    # climbs slowly; the probe has just lifted the estimate to the resume threshold.
    quiet: list[Sample] = [(float(t), 0.0, 0.01, 80_000 + 2_000 * t, 50_000.0)
                           for t in range(6)]
    _, estimates, _ = run(quiet, start=CFG.resume_above)
    assert min(estimates) >= CFG.resume_above
    # a REMB that falls, but stays above what is sent, is no sign of congestion either
    dip: list[Sample] = [(0.0, 0.0, 0.01, 1_200_000, 900_000.0),
                         (1.0, 0.0, 0.01, 1_000_000, 900_000.0)]
    _, estimates, _ = run(dip, start=1_000_000)
    assert estimates[-1] > 1_000_000


def test_the_estimate_is_clamped_between_min_and_max_bitrate() -> None:
    hopeless = [(float(t), 0.5, 0.01, None, 100_000.0) for t in range(60)]
    _, estimates, _ = run(hopeless)
    assert min(estimates) == CFG.min_bitrate
    generous = [(float(t), 0.0, 0.01, None, 5_000_000.0) for t in range(60)]
    _, estimates, _ = run(generous)
    assert max(estimates) == CFG.max_bitrate


def test_a_noisy_but_stationary_link_does_not_flap() -> None:
    rng = random.Random(11)
    noisy: list[Sample] = [
        (float(t), min(1.0, max(0.0, rng.gauss(0.05, 0.022))), max(0.001, rng.gauss(0.06, 0.01)),
         None, rng.gauss(800_000, 60_000)) for t in range(180)]
    _, estimates, _ = run(noisy, start=800_000)
    raw = [lost for _, lost, _, _, _ in noisy if lost is not None]
    assert max(raw) - min(raw) > 0.08  # the raw samples are noisy…
    assert direction_changes(estimates) <= 1  # …the estimate does not see-saw
    assert min(estimates) > 0.9 * 800_000
    clean = [(float(t), rng.choice((0.0, 0.0, 0.0, 0.01)), max(0.001, rng.gauss(0.06, 0.01)),
              None, rng.gauss(800_000, 60_000)) for t in range(180)]
    _, estimates, _ = run(clean, start=800_000)
    assert all(b >= a for a, b in itertools.pairwise(estimates))  # only grows


# -- video gate -----------------------------------------------------------------------
def test_the_gate_steps_down_through_temporal_layers_then_pauses() -> None:
    gate = VideoGate(CFG)
    assert [gate.update(float(t), e) for t, e in enumerate(
        (900_000, 599_999, 300_000, 299_999, 120_000, 119_999))] == [2, 1, 1, 0, 0, None]


def test_a_paused_gate_resumes_only_after_holding_above_the_resume_threshold() -> None:
    gate = VideoGate(CFG)
    assert gate.update(0.0, 100_000) is None
    assert gate.update(1.0, 200_000) is None  # above pause, below resume: stays paused
    assert gate.update(2.0, 260_000) is None  # above resume, hold starts
    assert gate.update(3.0, 240_000) is None  # dipped: the hold starts over
    assert gate.update(4.0, 260_000) is None
    assert gate.update(5.0, 260_000) is None
    assert gate.update(4.0 + CFG.resume_hold, 260_000) == 0  # held long enough: quarter rate
    assert gate.update(7.0, 200_000) == 0  # active and above the pause threshold: stays on


def test_a_gate_resumes_at_the_layer_the_estimate_allows() -> None:
    gate = VideoGate(CFG)
    gate.update(0.0, 50_000)
    gate.update(1.0, 900_000)
    assert gate.update(1.0 + CFG.resume_hold, 900_000) == 2


# -- publisher target, quality ----------------------------------------------------------
def test_the_publisher_target_is_the_smallest_share_within_floor_and_ceiling() -> None:
    assert publisher_target([900_000, 500_000, 1_200_000], CFG) == 500_000
    assert publisher_target([100_000, 20_000, 60_000], CFG) == CFG.floor_bitrate
    assert publisher_target([9_000_000], CFG) == CFG.max_bitrate
    assert publisher_target([20_000], CFG) == CFG.floor_bitrate  # alone: not an outlier
    assert publisher_target([], CFG) == CFG.max_bitrate  # nobody to limit it


@pytest.mark.parametrize(("shares", "target"), [
    ([900_000, 20_000], 900_000),  # two: the better one is the reference
    ([1_000_000, 1_100_000, 950_000, 200_000], 950_000),  # one far below: left out
    ([1_000_000, 1_100_000, 150_000, 200_000], 1_000_000),  # two of four far below
    ([1_000_000, 150_000, 200_000], 150_000),  # most are slow: the target follows them
    ([1_000_000, 600_000, 450_000], 450_000),  # not far below (≥ half the median): kept
    ([1_000_000, 600_000, 290_000], 600_000),  # under half the median: an outlier
])
def test_an_outlier_far_below_the_median_does_not_set_the_publisher_target(
        shares: list[int], target: int) -> None:
    assert publisher_target(shares, CFG) == target
    assert publisher_target(list(reversed(shares)), CFG) == target  # order does not matter


def test_a_tentative_share_marks_outliers_but_sets_the_target_only_alone() -> None:
    assert publisher_target([1_600_000], CFG, [1_270_000]) == 1_600_000
    assert publisher_target([200_000], CFG, [650_000]) == 650_000  # 200k is an outlier
    assert publisher_target([], CFG, [700_000, 900_000]) == 700_000


def test_the_outlier_ratio_is_configurable() -> None:
    strict = BandwidthConfig(outlier_ratio=0.0)  # nobody is an outlier: the smallest share
    assert publisher_target([1_000_000, 600_000, 290_000], strict) == 290_000


@pytest.mark.parametrize(("loss", "rtt", "estimate", "quality"), [
    (0.0, 0.05, 1_000_000, Quality.EXCELLENT),
    (0.0, None, None, Quality.EXCELLENT),
    (0.05, 0.05, 1_000_000, Quality.GOOD),
    (0.0, 0.45, 1_000_000, Quality.GOOD),
    (0.15, 0.05, 1_000_000, Quality.POOR),
    (0.0, 0.05, 100_000, Quality.POOR),
])
def test_quality_follows_loss_rtt_and_capacity(loss: float, rtt: float | None,
                                               estimate: float | None,
                                               quality: Quality) -> None:
    assert quality_of(loss, rtt, estimate, CFG) is quality


def test_a_link_without_recent_receiver_reports_is_lost() -> None:
    estimator = LinkEstimator(CFG)
    estimator.update(0.0, fraction_lost=0.0, rtt=0.01, remb=None, send_rate=800_000)
    assert estimator.quality(10.0, None) is Quality.LOST
    assert estimator.quality(10.0, 10.0 - CFG.report_timeout - 0.1) is Quality.LOST
    assert estimator.quality(10.0, 9.0) is Quality.EXCELLENT


def test_worst_quality_wins() -> None:
    assert worst([Quality.GOOD, Quality.LOST, Quality.EXCELLENT]) is Quality.LOST
    assert worst([Quality.GOOD, Quality.POOR]) is Quality.POOR
    assert worst([]) is Quality.EXCELLENT
