"""Which simulcast layer's frames a consumer receives, and when it changes.

One :class:`LayerSwitch` per consumer of a simulcast producer. The allocator sets
its ``target``; every frame of the producer asks :meth:`LayerSwitch.accept`
whether it goes to this consumer. The switch moves only at a key frame, so the
subscriber's decoder never gets a frame whose references it lacks:

- a key frame of the target layer switches to it;
- while the target has not switched in, a key frame of a layer closer to the
  target than the current one switches there (a target the publisher stopped
  sending still leaves the consumer on the nearest layer that is sent; a new
  consumer starts on the first key frame in the target's direction). Moving down,
  only after :data:`DOWN_PATIENCE`: a publisher asked for a key frame sends one on
  every layer at once, and a layer in between would cost a slow link a second
  key frame;
- only frames of the current layer pass; moving down because the link cannot
  carry the current layer (``congested``), not even those: they would only queue
  and be lost ahead of the target's key frame, and the video is damaged anyway.
  A move down called off after some were held back starts again from a key frame
  (the subscriber could not tell that frames are missing: the SFU numbers packets
  and pictures itself).

The send path applies the verdict: :data:`Verdict.SWITCH` means "this key frame
starts another encoding": the outgoing SSRC, sequence numbers and timestamps must
continue the subscriber's line, not the new encoding's (sfu/consumer.py re-bases
the slot's timestamp; an RTP-level path re-bases its header template). It knows
nothing of consumers or producers: a layer count and a key-frame callback.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

DOWN_PATIENCE = 1.0
"""Seconds a move down waits for the target's own key frame before a key frame of a
layer in between will do."""


class Verdict(enum.Enum):
    DROP = "drop"
    FORWARD = "forward"
    SWITCH = "switch"
    """Forward, and this frame starts a different layer than the previous one."""


class LayerSwitch:
    def __init__(self, *, layers: int, request_keyframe: Callable[[int | None], None],
                 target: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if layers < 1:
            raise ValueError("a layer switch needs at least one layer")
        self.layers = layers
        self._request_keyframe = request_keyframe
        self.target = layers - 1 if target is None else self._clamp(target)
        """The layer the allocator wants this consumer on."""
        self.current: int | None = None
        """The layer being forwarded (None: none yet)."""
        self.switches = 0
        self.dropping = False
        """Moving down for a congested link: the current layer's frames are dropped."""
        self._gap = False
        """Some were: the subscriber's decoder lacks a reference."""
        self._clock = clock
        self._target_at = clock()

    def _clamp(self, layer: int) -> int:
        return max(0, min(layer, self.layers - 1))

    @property
    def pending(self) -> bool:
        """A switch waits for a key frame."""
        return self.current != self.target

    def set_target(self, layer: int, *, congested: bool = False) -> None:
        """Move to ``layer`` at its next key frame (asked for at once). ``congested``:
        the link cannot carry more (module docstring)."""
        layer = self._clamp(layer)
        if layer == self.target:
            return
        self.target = layer
        self._target_at = self._clock()
        dropping = congested and self.current is not None and layer < self.current
        if self._gap and not dropping:  # called off after frames were held back:
            self.current = None  # start again from a key frame, as a new consumer
        self.dropping = dropping
        self._gap = self._gap and dropping
        if self.pending:
            self._request_keyframe(layer)

    def wanted_keyframe(self) -> int:
        """The layer whose key frame this consumer needs next."""
        return self.target if self.pending or self.current is None else self.current

    def request_keyframe(self) -> None:
        """The consumer needs a key frame (loss, a subscriber's PLI): of the layer it is
        moving to, else of the one it is on."""
        self._request_keyframe(self.wanted_keyframe())

    def accept(self, layer: int, keyframe: bool) -> Verdict:
        """Whether a frame of ``layer`` goes to this consumer."""
        if keyframe and layer != self.current and self._closer(layer):
            self.current = layer
            self.switches += 1
            self.dropping = self._gap = False
            return Verdict.SWITCH
        if layer != self.current:
            return Verdict.DROP
        if self.dropping:
            self._gap = True
            return Verdict.DROP
        return Verdict.FORWARD

    def _closer(self, layer: int) -> bool:
        current, target = self.current, self.target
        if current is None or layer == target:
            return True
        if abs(layer - target) >= abs(current - target):
            return False
        return target > current or self._clock() - self._target_at >= DOWN_PATIENCE
