"""Choosing a simulcast layer per video from the capacity and the tiles (sfu/layeralloc.py)."""

from __future__ import annotations

from sfu.layeralloc import Demand, LayerCost, choose_layers, needed_layer

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
