"""Choosing a simulcast layer per video from the capacity and the tiles (sfu/layeralloc.py)."""

from __future__ import annotations

from dataclasses import replace

from sfu.layeralloc import (
    RAMP,
    Demand,
    LayerCost,
    choose_layers,
    needed_layer,
    publisher_cap,
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


def test_the_publisher_cap_is_the_ceiling_while_anyone_wants_the_top_layer() -> None:
    assert publisher_cap(CAMERA, [0, 2, 1], 2_500_000) == 2_500_000
    assert publisher_cap((), [], 2_500_000) == 2_500_000  # no layers: nothing to cap by


def test_the_publisher_cap_covers_the_layers_up_to_the_highest_wanted() -> None:
    assert publisher_cap(CAMERA, [0, 1, 0], 2_500_000) == 150_000 + RAMP * 500_000
    assert publisher_cap(CAMERA, [0], 2_500_000) == RAMP * 150_000
    assert publisher_cap(CAMERA, [], 2_500_000) == 2_500_000  # nobody watches: no cap
    assert publisher_cap(CAMERA, [1], 400_000) == 400_000  # never above the ceiling


def test_a_wanted_layer_that_is_not_sent_lifts_the_cap_to_the_ceiling() -> None:
    stopped = (CAMERA[0], replace(CAMERA[1], active=False), replace(CAMERA[2], active=False))
    assert publisher_cap(stopped, [1], 2_500_000) == 2_500_000  # it must be able to return
    assert publisher_cap(stopped, [0], 2_500_000) == RAMP * 150_000
