"""Choosing a simulcast layer per video from the capacity and the tiles (sfu/layeralloc.py)."""

from __future__ import annotations

from dataclasses import replace

from sfu.layeralloc import (
    CALM,
    HOLD,
    RAMP,
    SETTLE,
    Demand,
    LayerCost,
    PublisherCap,
    choose_layers,
    needed_layer,
    wanted_layer,
)

CAMERA = (LayerCost(bitrate=150_000, width=240), LayerCost(bitrate=500_000, width=480),
          LayerCost(bitrate=1_500_000, width=960))
"""The meeting page's camera: q, h, f."""


def camera(key: str, tile: int | None = None, **flags: bool) -> Demand:
    return Demand(key=key, layers=CAMERA, tile_width=tile, **flags)


def test_a_small_tile_gets_the_lowest_layer_even_on_a_fast_link() -> None:
    choice = choose_layers(50_000_000, [camera("a", tile=160)])
    assert choice.layers == {"a": 0} and choice.wanted_more == 0


def test_a_large_tile_on_a_fast_link_gets_the_top_layer_and_tiles_pick_the_layer_they_need(
        ) -> None:
    choice = choose_layers(50_000_000, [camera("big", tile=1200), camera("mid", tile=500),
                                        camera("unknown"), camera("hidden", tile=0),
                                        camera("just", tile=260)])
    # (480 pixels are within a tenth of a 500-pixel tile, and 240 of a 260-pixel one)
    assert choice.layers == {"big": 2, "mid": 1, "unknown": 2, "hidden": 0, "just": 0}
    assert choice.bitrate == 2 * 1_500_000 + 500_000 + 2 * 150_000


def test_a_slow_link_fills_up_layer_by_layer_screen_and_speaker_first() -> None:
    demands = [camera("other"), camera("speaker", speaker=True),
               Demand(key="screen", layers=CAMERA, screen=True)]
    # everyone's lowest (450k), then the screen to the top (+1.35M): 1.8M; speaker +350k
    choice = choose_layers(2_200_000, demands)
    assert choice.layers == {"screen": 2, "speaker": 1, "other": 0}
    assert choice.wanted_more == 1_000_000  # the speaker's next step


def test_video_is_paused_only_when_its_lowest_layer_does_not_fit() -> None:
    choice = choose_layers(320_000, [camera("a"), camera("b", speaker=True), camera("c")])
    assert choice.layers == {"b": 0, "a": 0, "c": None}
    assert choice.wanted_more == 150_000
    assert choose_layers(100_000, [camera("a")]).layers == {"a": None}


def test_layers_the_publisher_does_not_send_are_skipped() -> None:
    layers = (CAMERA[0], LayerCost(bitrate=0, width=480, active=False), CAMERA[2])
    demand = Demand(key="a", layers=layers, tile_width=400)
    assert needed_layer(demand) == 2  # the half layer would do, but it is not sent
    assert choose_layers(10_000_000, [demand]).layers == {"a": 2}
    quiet = Demand(key="q", layers=tuple(LayerCost(bitrate=0, width=w, active=False)
                                         for w in (240, 480, 960)), tile_width=300)
    assert choose_layers(1_000, [quiet]).layers == {"q": 1}  # nothing sent yet: by size


# -- the publisher's cap ----------------------------------------------------------------
def test_a_tile_wants_the_layer_wide_enough_for_it_whether_or_not_it_is_sent() -> None:
    stopped = (CAMERA[0], replace(CAMERA[1], active=False), replace(CAMERA[2], active=False))
    assert [wanted_layer(stopped, tile) for tile in (160, 260, 500, 1200, None, 0)] \
        == [0, 0, 1, 2, 2, 0]
    unknown = (CAMERA[0], replace(CAMERA[1], width=None), CAMERA[2])
    assert wanted_layer(unknown, 400) == 2  # (a layer of unknown width might be too small)


CEILING = 2_500_000


def _feed(cap: PublisherCap, start: float, seconds: float, layers: tuple[LayerCost, ...],
          wanted: list[int]) -> list[float]:
    """What the cap says each second over [start, start + seconds)."""
    return [cap.update(start + t, layers, wanted, CEILING) for t in range(int(seconds))]


def _without(layers: tuple[LayerCost, ...], *stopped: int) -> tuple[LayerCost, ...]:
    return tuple(replace(layer, active=False) if i in stopped else layer
                 for i, layer in enumerate(layers))


def test_the_publisher_cap_is_the_ceiling_while_anyone_wants_the_top_layer() -> None:
    cap = PublisherCap()
    assert set(_feed(cap, 0, 30, CAMERA, [0, 2, 1])) == {CEILING}
    assert set(_feed(cap, 30, 30, (), [])) == {CEILING}  # no layers: nothing to cap by
    assert set(_feed(cap, 60, 30, CAMERA, [])) == {CEILING}  # nobody watches


def test_the_publisher_cap_covers_the_layers_up_to_the_highest_wanted_once_settled() -> None:
    cap = PublisherCap()
    # (the wanted layers must be seen sent for a while: their costs are measured then)
    assert set(_feed(cap, 0, SETTLE, CAMERA, [0, 1, 0])) == {CEILING}
    assert cap.update(SETTLE, CAMERA, [0, 1], CEILING) == 150_000 + RAMP * 500_000
    small = PublisherCap()
    assert _feed(small, 0, SETTLE + 1, CAMERA, [0])[-1] == RAMP * 150_000
    assert small.update(SETTLE + 1, CAMERA, [1], 400_000) == 400_000  # never above the ceiling


def test_the_cap_counts_each_layer_at_the_most_it_cost_while_settling() -> None:
    cap = PublisherCap()
    dips = [(CAMERA[0], replace(CAMERA[1], bitrate=b), CAMERA[2])
            for b in (40_000, 520_000, 300_000, 480_000, 90_000)]  # a restart, a key frame
    for t, layers in enumerate(dips):
        assert cap.update(t, layers, [1], CEILING) == CEILING
    assert cap.update(SETTLE, CAMERA, [1], CEILING) == 150_000 + RAMP * 520_000


def test_a_cap_is_not_remeasured_while_it_holds_so_a_squeezed_layer_cannot_drag_it_down(
        ) -> None:
    cap = PublisherCap()
    settled = _feed(cap, 0, SETTLE + 1, CAMERA, [1])[-1]
    # Under the cap the sender gives the wanted layer less, for a while (its loss-based
    # estimate backs off): measured again, the cap would shrink until the layer stopped.
    squeezed = (replace(CAMERA[0], bitrate=100_000), replace(CAMERA[1], bitrate=60_000),
                _without(CAMERA, 2)[2])
    assert set(_feed(cap, SETTLE + 1, 60, squeezed, [1])) == {settled}


def test_a_wanted_layer_stopped_under_the_cap_lifts_it_for_a_hold_that_doubles() -> None:
    cap = PublisherCap()
    t = SETTLE + 1
    _feed(cap, 0, t, CAMERA, [1])
    assert cap.cap is not None
    assert cap.update(t, _without(CAMERA, 1, 2), [1], CEILING) == CEILING  # it stopped
    # It comes back at once, but the publisher stays uncapped for the hold …
    lifted = _feed(cap, t + 1, HOLD - 1, CAMERA, [1])
    assert set(lifted) == {CEILING}
    # … then is capped again (its layers were sent throughout), and the next stop
    # lifts the cap for twice as long.
    t += HOLD
    assert cap.update(t, CAMERA, [1], CEILING) == 150_000 + RAMP * 500_000
    assert cap.update(t + 1, _without(CAMERA, 1), [1], CEILING) == CEILING
    assert set(_feed(cap, t + 2, 2 * HOLD - 1, CAMERA, [1])) == {CEILING}
    assert cap.update(t + 1 + 2 * HOLD, CAMERA, [1], CEILING) < CEILING
    # A cap that holds for a while resets the hold.
    _feed(cap, t + 2 + 2 * HOLD, CALM + 1, CAMERA, [1])
    assert cap.hold == HOLD


def test_a_layer_stopped_while_something_else_held_the_remb_below_the_cap_is_not_held_off(
        ) -> None:
    cap = PublisherCap()
    capped = _feed(cap, 0, SETTLE + 1, CAMERA, [1])[-1]
    # (a congested uplink had the publisher told less than the cap)
    t = SETTLE + 1
    assert cap.update(t, _without(CAMERA, 1, 2), [1], CEILING, sent=capped / 3) == CEILING
    assert cap.hold == HOLD and cap.lifted_until < t
    assert _feed(cap, t + 1, SETTLE + 1, CAMERA, [1])[-1] == capped  # once settled again


def test_a_larger_tile_lifts_the_cap_at_once_and_a_smaller_one_lowers_it_after_settling(
        ) -> None:
    cap = PublisherCap()
    _feed(cap, 0, SETTLE + 1, CAMERA, [0])
    assert cap.update(SETTLE + 1, _without(CAMERA, 1, 2), [1], CEILING) == CEILING
    # (the layer it wants was stopped by the cap: that is no reason to hold it off)
    assert cap.hold == HOLD
    assert _feed(cap, SETTLE + 2, SETTLE + 1, CAMERA, [1])[-1] == 150_000 + RAMP * 500_000
    middle = 150_000 + RAMP * 500_000
    shrunk = _feed(cap, 2 * SETTLE + 3, SETTLE + 1, CAMERA, [0])
    assert shrunk[:-1] == [middle] * int(SETTLE) and shrunk[-1] == RAMP * 150_000


def test_a_wanted_layer_that_is_not_sent_lifts_the_cap_to_the_ceiling() -> None:
    stopped = _without(CAMERA, 1, 2)
    assert set(_feed(PublisherCap(), 0, 30, stopped, [1])) == {CEILING}  # it must return
    assert _feed(PublisherCap(), 0, SETTLE + 1, stopped, [0])[-1] == RAMP * 150_000
