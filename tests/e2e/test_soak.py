"""The soak's short version (``make bench BENCH_ARGS=soak`` runs the hour): three minutes of a
churning meeting on a ``parley serve`` process leave nothing behind on the node."""

from __future__ import annotations

import pytest

from bench.soak_bench import BACK_TO_BASELINE, SoakPlan, fit_slope, soak

PLAN = SoakPlan(minutes=3.0, publishers=2, subscribers=6, steady=3, interval=2.0,
                sample_every=5.0, warmup=60.0, window=45.0, settle=60.0)
"""Light enough for two shared cores: 2 publishers, 6 subscribers (3 never churn), the
moderator and the guest; every kind of action runs about five times."""
RSS_SLOPE_BOUND = 100.0
"""MiB per 10 minutes over the last two minutes: loose, because the node is still growing
into its working set (runs on a loaded machine measured 45 and 65; the hour's bar is 1). It
catches a leak per packet or per frame, not a small one per join: that is the hour's job."""
FPS_MARGIN = 0.6
"""The last 45 s's received frame rate against the first 45 s after the warm-up: wide,
because other work on the machine slows the clients' process as much as the node."""
DELIVERED_MARGIN = 0.15
"""The last minute's share of sent frames received may be this much below the first's."""


def test_a_least_squares_slope_is_exact_on_a_line() -> None:
    assert fit_slope([(0.0, 1.0), (10.0, 6.0), (20.0, 11.0)]) == pytest.approx(0.5)
    assert fit_slope([(5.0, 3.0)]) == 0.0


@pytest.mark.timeout(480)
async def test_three_minutes_of_churn_leave_the_node_as_it_was() -> None:
    f = await soak(PLAN)
    base, after = f["baseline"], f["after"]
    assert f["settled_seconds"] is not None, (base, after, f["tasks_left"])
    for count in BACK_TO_BASELINE:
        assert after[count] <= base[count], (count, base, after, f["tasks_left"])
    assert after["rooms"] == after["participants"] == after["connections"] == 0
    kinds = {"subscriber", "mute", "stage", "renegotiate", "publisher", "signalling"}
    assert set(f["actions"]) == kinds and min(f["actions"].values()) >= 3, f["actions"]
    # Clients whose connection was given up (``media_lost``) are replaced and not held
    # against the node: on a machine this busy aiortc's own consent checks time out.
    assert sum(f["failures"].values()) <= 2, (f["failures"], f["media_lost"])
    assert f["rss_slope_mib_per_10min"] < RSS_SLOPE_BOUND, f["rss_mib"]
    assert f["fps_first_window"] > 5.0, f["fps_first_window"]
    assert f["fps_last_window"] >= FPS_MARGIN * f["fps_first_window"], (
        f["fps_first_window"], f["fps_last_window"])
    assert f["delivered_last_window"] >= f["delivered_first_window"] - DELIVERED_MARGIN, (
        f["delivered_first_window"], f["delivered_last_window"])
