"""Choosing one simulcast layer for each of a subscriber's video tracks. Pure: numbers in,
numbers out; sfu/allocation.py feeds it from consumers and producers.

Each video the subscriber receives from a simulcast publisher is a :class:`Demand`:
its layers (lowest first: what each costs, how wide it is, whether the publisher
sends it now), the width of the tile it is shown in, and whether it is a screen
share or an active speaker. :func:`choose_layers` shares the subscriber's capacity
for these videos out:

1. every video gets its lowest layer the publisher sends, screen shares first,
   then active speakers, then the others; a video whose lowest layer no longer
   fits is paused (only then);
2. then, class by class in the same order, each video moves up one layer at a
   time (round robin within the class) while the step fits, never beyond the
   layer its tile needs: the smallest layer at least as wide as the tile (within
   :data:`FIT`), the top one when the tile's size is unknown, the lowest when the
   tile is not shown.

A tile 160 pixels wide gets the lowest layer even on a fast link; a fast link with a
large tile gets the top layer; a slow link gets what fits, screen shares and speakers
first.

:class:`PublisherCap` turns what the subscribers' tiles want of one simulcast publisher
into the REMB sent to it, with hysteresis so that its layers do not flap (module
docstring of sfu/allocation.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

FIT = 0.9
"""A layer at least this share of the tile's width is sharp enough for it."""


@dataclass(frozen=True, kw_only=True)
class LayerCost:
    """One layer of a simulcast track, as the allocator sees it."""

    bitrate: float
    """Bits per second it costs (measured, with some headroom)."""
    width: int | None = None
    """Frame width, when a key frame told (None: unknown)."""
    active: bool = True
    """The publisher sends it now."""


@dataclass(frozen=True, kw_only=True)
class Demand:
    """One video track a subscriber receives from a simulcast publisher."""

    key: str
    layers: tuple[LayerCost, ...]
    """Lowest first."""
    tile_width: int | None = None
    """Width it is shown at, device pixels (None: unknown; 0: not shown)."""
    screen: bool = False
    speaker: bool = False

    @property
    def priority(self) -> int:
        return 0 if self.screen else 1 if self.speaker else 2


@dataclass(frozen=True, kw_only=True)
class LayerChoice:
    """What :func:`choose_layers` decided."""

    layers: dict[str, int | None]
    """Layer of each demand by key; None: paused (not even its lowest layer fits)."""
    bitrate: float
    """What the chosen layers cost together."""
    wanted_more: float
    """Extra bits per second the first step refused for lack of capacity would have
    needed (a paused video: its lowest layer); 0 when every video has what its tile
    needs. A probe of the link can aim at this."""


def _sent(demand: Demand) -> list[int]:
    """Indexes of the layers the publisher sends (every layer when it seems to send
    none: just started, or stalled)."""
    sent = [i for i, layer in enumerate(demand.layers) if layer.active]
    return sent or list(range(len(demand.layers)))


def needed_layer(demand: Demand) -> int:
    """The lowest sent layer wide enough for the tile (module docstring)."""
    sent = _sent(demand)
    if demand.tile_width is None:
        return sent[-1]
    if demand.tile_width == 0:
        return sent[0]
    for i in sent:
        width = demand.layers[i].width
        if width is None or width >= FIT * demand.tile_width:
            return i
    return sent[-1]


def choose_layers(capacity: float, demands: Sequence[Demand]) -> LayerChoice:
    """One layer (or a pause) per demand within ``capacity`` bits per second."""
    order = sorted(demands, key=lambda d: d.priority)
    chosen: dict[str, int | None] = {}
    used = 0.0
    wanted_more = 0.0
    for demand in order:
        low = _sent(demand)[0]
        cost = demand.layers[low].bitrate
        if used + cost <= capacity:
            chosen[demand.key] = low
            used += cost
        else:
            chosen[demand.key] = None
            wanted_more = wanted_more or cost
    for priority in sorted({d.priority for d in order}):
        group = [d for d in order if d.priority == priority]
        moved = True
        while moved:
            moved = False
            for demand in group:
                step = _step_up(demand, chosen[demand.key])
                if step is None:
                    continue
                current = chosen[demand.key]
                assert current is not None
                extra = demand.layers[step].bitrate - demand.layers[current].bitrate
                if used + extra <= capacity:
                    chosen[demand.key] = step
                    used += extra
                    moved = True
                else:
                    wanted_more = wanted_more or extra
    return LayerChoice(layers=chosen, bitrate=used, wanted_more=wanted_more)


def _step_up(demand: Demand, current: int | None) -> int | None:
    """The next sent layer above ``current``, up to the one the tile needs."""
    if current is None:
        return None
    limit = needed_layer(demand)
    return next((i for i in _sent(demand) if current < i <= limit), None)


RAMP = 1.3
"""The highest wanted layer is counted at this much more than it cost at most while
uncapped: room for it to ramp up, and for the sender's own loss-based backoff."""


def wanted_layer(layers: Sequence[LayerCost], tile_width: int | None) -> int:
    """The layer a tile asks for, whether or not the publisher sends it now: the lowest
    layer known to be at least :data:`FIT` of the tile's width (a layer of unknown width
    might not be), the top one when the tile's size is unknown, the lowest when the tile
    is not shown. Capacity plays no part: a subscriber on a poor link still wants the
    layer its tile needs, and takes it again once its link recovers."""
    top = len(layers) - 1
    if tile_width is None:
        return top
    if tile_width == 0:
        return 0
    return next((i for i, layer in enumerate(layers)
                 if layer.width is not None and layer.width >= FIT * tile_width), top)


SETTLE = 5.0
"""Seconds the wanted layers must have been sent, with the same highest wanted layer,
before a cap is set (or lowered): the costs it is made of are measured over them."""
HOLD = 20.0
"""Seconds a publisher stays uncapped after a wanted layer stopped under its cap …"""
MAX_HOLD = 160.0
"""… doubled each time that happens again, up to this."""
CALM = 60.0
"""A cap that held this long without a wanted layer stopping resets the hold."""


class PublisherCap:
    """The REMB for one simulcast publisher from the layers its subscribers' tiles want
    (one layer each, :func:`wanted_layer`), with hysteresis so that it does not flap.

    A publisher spends its bitrate on its layers lowest first, so a target covering the
    layers up to the highest one anyone wants, and no more, lets it stop sending the
    layers above (Chromium's simulcast allocator switches off the encodings the target
    leaves no room for). So:

    - ``ceiling`` while anyone wants the top layer (it is never capped while someone may
      consume it, however poor that subscriber's own link: that subscriber moves down a
      layer instead), while nobody watches (a subscriber who comes gets the layer it needs
      at once) and while a wanted layer is not sent (it must be able to come back);
    - a cap only once the layers up to the highest wanted one have been sent, with that
      same highest wanted layer, for :data:`SETTLE` seconds: what the layers below it
      cost at most over those seconds, plus the highest one at :data:`RAMP` times its
      most (room to ramp up, and for the sender's own loss-based backoff). The cap is
      then fixed until the wanted layers change: it is not remeasured while it holds, so
      the layers it squeezes cannot drag it down (a cap made of what a squeezed layer
      costs shrinks until the publisher stops that layer);
    - a higher wanted layer lifts the cap at once; a lower one lowers it after
      :data:`SETTLE` seconds;
    - a wanted layer that stops while capped (the cap was too tight for the sender)
      lifts the cap for :data:`HOLD` seconds, doubled on each repeat up to
      :data:`MAX_HOLD` and reset once a cap has held for :data:`CALM` seconds; each such
      stop costs the layer's viewers a key frame, so at most one every hold. A stop
      while the REMB ``sent`` was below the cap (something else, a congested uplink,
      lowered it) is not the cap's doing: the cap is lifted but not held off.
    """

    def __init__(self) -> None:
        self.cap: float | None = None
        """The cap in force (None: the ceiling)."""
        self.capped_at = 0.0
        self._for: int | None = None
        """The highest wanted layer the cap (or the settling) is for."""
        self._settled_from: float | None = None
        self._seen: list[tuple[float, tuple[float, ...]]] = []
        """(time, each layer's cost) while settling, the last :data:`SETTLE` seconds."""
        self.lifted_until = float("-inf")
        self.hold = HOLD

    def update(self, now: float, layers: Sequence[LayerCost], wanted: Iterable[int],
               ceiling: float, *, sent: float | None = None) -> float:
        """The cap now (``ceiling``: none); ``sent`` is the REMB last sent."""
        highest = max(wanted, default=None)
        if not layers or highest is None or highest >= len(layers) - 1:
            self._forget()
            return ceiling
        if highest != self._for:
            if self._for is None or highest > self._for:
                self.cap = None  # lift at once: the newly wanted layer may be stopped
            self._for, self._settled_from = highest, None
        if not all(layer.active for layer in layers[:highest + 1]):
            if self.cap is not None and (sent is None or sent >= min(self.cap, ceiling) - 1):
                # it stopped under the cap: too tight for the sender
                self.lifted_until = now + self.hold
                self.hold = min(MAX_HOLD, 2 * self.hold)
            self.cap = None
            self._settled_from = None
            return ceiling
        if self._settled_from is None:
            self._settled_from, self._seen = now, []
        self._seen = [(t, c) for t, c in self._seen if now - t < SETTLE]
        self._seen.append((now, tuple(layer.bitrate for layer in layers[:highest + 1])))
        if self.cap is not None and self.capped_at >= self._settled_from:
            if now - self.capped_at >= CALM:
                self.hold = HOLD
            return min(self.cap, ceiling)
        if now < self.lifted_until or now - self._settled_from < SETTLE:
            return ceiling if self.cap is None else min(self.cap, ceiling)
        most = [max(costs) for costs in zip(*(c for _, c in self._seen), strict=True)]
        self.cap, self.capped_at = sum(most[:-1]) + RAMP * most[-1], now
        return min(self.cap, ceiling)

    def _forget(self) -> None:
        self.cap, self._for, self._settled_from, self._seen = None, None, None, []
