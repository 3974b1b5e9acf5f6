"""Which simulcast layer a consumer receives, switched only at key frames."""

from __future__ import annotations

from sfu.layerswitch import DOWN_PATIENCE, LayerSwitch, Verdict

D, F, S = Verdict.DROP, Verdict.FORWARD, Verdict.SWITCH


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def make(target: int | None = None,
         clock: Clock | None = None) -> tuple[LayerSwitch, list[int | None]]:
    asked: list[int | None] = []
    return LayerSwitch(layers=3, request_keyframe=asked.append, target=target,
                       clock=clock or Clock()), asked


def test_a_new_consumer_starts_at_the_first_key_frame_and_climbs_to_its_target() -> None:
    switch, _ = make()
    assert switch.target == 2 and switch.pending
    assert switch.accept(0, keyframe=False) is D  # nothing before a key frame
    assert switch.accept(0, keyframe=True) is S
    assert switch.accept(0, keyframe=False) is F
    assert switch.accept(2, keyframe=False) is D  # the target, but not at a key frame
    assert switch.accept(1, keyframe=True) is S  # closer to the target
    assert switch.accept(0, keyframe=True) is D  # further away: stays
    assert switch.accept(2, keyframe=True) is S
    assert not switch.pending and switch.switches == 3
    assert switch.accept(1, keyframe=True) is D and switch.accept(2, keyframe=False) is F


def test_going_down_waits_for_the_lower_layers_key_frame_and_asks_for_it() -> None:
    switch, asked = make(target=2)
    switch.accept(2, keyframe=True)
    switch.set_target(0)
    assert asked == [0]
    assert switch.accept(2, keyframe=False) is F  # until the switch, the old layer flows
    assert switch.accept(0, keyframe=False) is D
    assert switch.accept(0, keyframe=True) is S
    assert switch.accept(2, keyframe=False) is D
    switch.set_target(0)
    assert asked == [0]  # unchanged target: no request


def test_a_key_frame_request_names_the_layer_the_consumer_needs() -> None:
    switch, asked = make(target=1)
    switch.request_keyframe()
    switch.accept(1, keyframe=True)
    switch.request_keyframe()
    switch.set_target(5)  # clamped to the top layer
    switch.request_keyframe()
    assert asked == [1, 1, 2, 2]


def test_going_down_skips_a_key_frame_of_a_layer_in_between_unless_the_target_is_late() -> None:
    clock = Clock()
    switch, _ = make(target=2, clock=clock)
    switch.accept(2, keyframe=True)
    switch.set_target(0)
    # a key-frame request gives a key frame on every layer: one on a slow link is enough
    assert switch.accept(1, keyframe=True) is D
    assert switch.accept(2, keyframe=False) is F
    assert switch.accept(0, keyframe=True) is S
    switch.set_target(2)
    assert switch.accept(1, keyframe=True) is S  # going up, a step on the way is welcome
    assert switch.accept(2, keyframe=True) is S
    switch.set_target(0)
    clock.now += DOWN_PATIENCE  # the target's key frame does not come (not sent?)
    assert switch.accept(1, keyframe=True) is S  # nearer is better than nothing new
    assert switch.current == 1 and switch.pending


def test_going_down_for_a_congested_link_stops_the_current_layer_at_once() -> None:
    switch, asked = make(target=2)
    switch.accept(2, keyframe=True)
    switch.set_target(1, congested=True)
    assert asked == [1] and switch.dropping
    assert switch.accept(2, keyframe=False) is D  # it would only be lost in the queue
    assert switch.accept(2, keyframe=True) is D
    assert switch.accept(1, keyframe=True) is S
    assert not switch.dropping and switch.accept(1, keyframe=False) is F
    switch.set_target(2, congested=True)  # up: the current layer goes on until the switch
    assert not switch.dropping and switch.accept(1, keyframe=False) is F


def test_a_new_consumer_on_a_congested_link_takes_the_first_key_frame() -> None:
    switch, _ = make(target=2)
    switch.set_target(0, congested=True)
    assert not switch.dropping
    assert switch.accept(1, keyframe=True) is S  # nothing shown yet: anything helps


def test_a_congested_move_down_called_off_restarts_from_a_key_frame() -> None:
    switch, asked = make(target=2)
    switch.accept(2, keyframe=True)
    switch.set_target(0, congested=True)
    switch.set_target(2, congested=True)  # called off before anything was held back
    assert switch.current == 2 and switch.accept(2, keyframe=False) is F
    switch.set_target(0, congested=True)
    assert switch.accept(2, keyframe=False) is D  # held back: the subscriber lacks it
    switch.set_target(2)
    assert switch.current is None and switch.pending and asked[-1] == 2
    assert switch.accept(2, keyframe=False) is D  # would reference the missing frame
    assert switch.accept(2, keyframe=True) is S
    assert switch.accept(2, keyframe=False) is F
