"""A squeezed Chromium viewer changes simulcast layer without a visible freeze.

The meeting page publishes its camera as three encodings. A Chromium viewer receives
it through a UDP relay (tests/netimpair.py; the node listens on one UDP port and an
init script points the viewer at the relay, as in tests/e2e/test_browser_loss.py);
an aiortc subscriber receives it on a clean relay. The viewer's downlink is then
limited by a token bucket for a while and released.

What the viewer's ``<video>`` presents is recorded in the page
(``requestVideoFrameCallback``: time and width of every frame, tests/e2e/playback.py),
so a layer switch shows as a change of width. Asserted:

- the viewer moves down a layer within seconds of the squeeze, and back to the top
  layer once it ends;
- at the move down and at each move back up, from the moment the SFU chose the new
  layer to a second after the page showed its first frame, no pause between frames
  reaches :data:`MAX_SWITCH_FREEZE` (a timestamp line that jumps or stalls shows in
  that second, as the receiver's playout catches up), and the new layer shows within
  :data:`MAX_SWITCH_LATENCY`. The loss before the SFU's choice is the link estimate's
  reaction time, reported, not judged here;
- the clean subscriber's received bitrate stays within 10 % of what it was before.

Set ``PARLEY_SWITCH_REPORT`` to a file name to get the numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conference.ids import RoomName
from sfu.bandwidth import BandwidthConfig
from sfu.config import SfuConfig
from tests.conftest import StartNode, make_config, token
from tests.e2e.browser import MeetingPage, launch_chromium, wait_until
from tests.e2e.playback import (
    KEYFRAME_LOG,
    inbound,
    open_watched,
    outbound,
    sized_frames,
    steady_from,
)
from tests.e2e.test_browser_loss import REDIRECT
from tests.e2e.test_browser_simulcast_squeeze import (
    ROOM,
    SQUEEZE,
    _value,
    camera,
    consumer_of,
    received_bps,
    steady_bps,
)
from tests.e2e.test_udp_port import free_udp_port
from tests.netimpair import Impairment, RelayedClient, UdpRelay

if TYPE_CHECKING:
    from playwright.async_api import Browser

MAX_SWITCH_FREEZE = 0.5
"""Seconds the viewer's video may stand still at a layer switch."""
MAX_SWITCH_LATENCY = 1.0
"""Seconds from the SFU's choice of a layer to the viewer showing it."""
AFTER = 1.0
"""Seconds after a switch's first frame in which a stall still counts as the switch's."""
SQUEEZED_FOR = 10.0


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


@dataclass(frozen=True, kw_only=True)
class SwitchSeen:
    """A change of the presented frames' width, as the viewer's page saw it."""

    at: float
    """Wall-clock time of the first frame of the new width."""
    widths: tuple[int, int]
    stalled: float
    """Seconds from the last frame of the old width to the first of the new one."""
    chosen: float
    """When the SFU chose the layer (the first frame's time if unknown)."""
    latency: float
    """Seconds from then to the first frame of the new width."""
    freeze: float
    """Longest pause between frames from then to :data:`AFTER` seconds after the first
    new frame (a pause that began before counts from then: until the link's estimate
    follows the squeeze, the old layer's frames are lost on it, and the old layer's
    stragglers, repaired one by one, show only as stutter)."""


def switches_seen(frames: list[tuple[float, int]], decided: list[float]) -> list[SwitchSeen]:
    """Every change of width in (time, width) of presented frames; ``decided``: when the
    SFU's target layer changed."""
    seen = []
    for (before, old), (at, new) in pairwise(frames):
        if old == new or not old or not new:
            continue
        chosen = max((t for t in decided if t <= at), default=before)
        window = [t for t, _ in frames if chosen <= t <= at + AFTER]
        freeze = max((b - a for a, b in pairwise([chosen, *window])), default=0.0)
        seen.append(SwitchSeen(at=at, widths=(old, new), stalled=at - before, chosen=chosen,
                               latency=at - chosen, freeze=freeze))
    return seen


class LayerLog:
    """The viewer's consumer's simulcast layer, target and pause, polled every 20 ms:
    (wall-clock time, current, target, paused) at each change."""

    def __init__(self, consumer: Any, remb: Callable[[], int | None] = lambda: None) -> None:
        self.consumer = consumer
        self.remb = remb
        """The viewer's REMB as it arrives (the link's ``remb`` is read once an update)."""
        self.rows: list[tuple[float, int | None, int, bool]] = []
        self.link: list[tuple[Any, ...]] = []
        """(time, estimate, smoothed loss, lost/expected so far this interval, RTT, jitter,
        REMB, send rate, REMB now) of the viewer's link at each change, polled with the
        layers."""
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            switch = self.consumer.switch
            row = (switch.current, switch.target, self.consumer.bandwidth_paused)
            if not self.rows or self.rows[-1][1:] != row:
                self.rows.append((time.time(), *row))
            link = self.consumer.link
            if link is not None:
                seen = (int(link.estimator.estimate), round(link.estimator.loss, 3),
                        f"{link.lost}/{link.expected}",
                        None if link.rtt is None else round(link.rtt, 3), link.jitter,
                        link.remb, int(link.send_rate), self.remb())
                if not self.link or self.link[-1][1:] != seen:
                    self.link.append((time.time(), *seen))
            await asyncio.sleep(0.02)

    def decided(self) -> list[float]:
        """When the target layer changed."""
        return [b[0] for a, b in pairwise(self.rows) if a[2] != b[2]]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@dataclass(kw_only=True)
class Run:
    """What one squeeze did, for the report and the assertions (wall-clock times)."""

    squeezed_at: float
    released_at: float = 0.0
    baseline: float = 0.0
    during: float = 0.0
    clean_layer: int | None = None
    moved_down: float = 0.0
    moved_up: float = 0.0
    frames: list[tuple[float, int]] = field(default_factory=list)
    """(time, width) of each frame the viewer presented, on this process's clock."""
    decided: list[float] = field(default_factory=list)
    publisher: list[dict[str, Any]] = field(default_factory=list)
    """What the publisher's encodings were like before and after the squeeze (a loaded
    machine makes Chromium encode less, and the clean subscriber receives less)."""

    def seen(self) -> list[SwitchSeen]:
        return switches_seen([f for f in self.frames if f[0] >= self.squeezed_at],
                             self.decided)

    def moves(self) -> tuple[SwitchSeen | None, list[SwitchSeen]]:
        """The first move down in the squeeze, and the moves up after it that reach
        the top layer's width again (the moves the allocator tries in between, up into
        the squeezed link and down again, are its own: they are reported only)."""
        seen = self.seen()
        top = max((w for t, w in self.frames if t < self.squeezed_at), default=0)
        down = next((s for s in seen if s.widths[1] < s.widths[0]), None)
        back: list[SwitchSeen] = []
        for s in seen:
            if s.at > self.released_at and s.widths[1] > s.widths[0]:
                back.append(s)
                if s.widths[1] >= top:
                    return down, back
        return down, []

    def report(self, log: LayerLog, inbound: list[dict[str, Any]]) -> dict[str, Any]:
        t0 = self.squeezed_at
        pairs = list(pairwise(self.frames))
        return {
            "baseline_bps": round(self.baseline), "clean_during_bps": round(self.during),
            "moved_down_s": round(self.moved_down, 2), "moved_up_s": round(self.moved_up, 2),
            "switches": [{**{k: round(v, 3) for k, v in asdict(s).items() if k != "widths"},
                          "at": round(s.at - t0, 3), "chosen": round(s.chosen - t0, 3),
                          "widths": s.widths} for s in self.seen()],
            "sfu_layers": [(round(t - t0, 3), *rest) for t, *rest in log.rows],
            "sfu_link": [(round(t - t0, 3), *rest) for t, *rest in log.link
                         if t0 - 3 <= t <= self.released_at],
            "longest_pause_while_squeezed": round(max(
                (b[0] - a[0] for a, b in pairs if t0 <= a[0] <= self.released_at),
                default=0.0), 3),
            "pauses": [(round(a[0] - t0, 3), round(b[0] - a[0], 3), a[1], b[1])
                       for a, b in pairs if b[0] - a[0] > 0.15 and a[0] >= t0 - 2],
            "publisher": self.publisher,
            "inbound": inbound,
        }


async def _encodings(publisher: MeetingPage, producer: Any) -> dict[str, Any]:
    """Per encoding: width and quality limitation (the publisher's), bitrate received
    (the SFU's)."""
    sent = {s["rid"]: s for s in await outbound(publisher) if s["rid"]}
    return {info["rid"]: (info["width"], info["bitrate"],
                          sent.get(str(info["rid"]), {}).get("qualityLimitationReason"))
            for info in producer.layer_info()}


def _write_report(report: dict[str, Any]) -> None:
    name = os.environ.get("PARLEY_SWITCH_REPORT")
    if name:
        Path(name).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "inbound"}))


class PageClock:
    """The page's ``performance`` clock drifts from the wall clock (by up to a second
    within a minute): its offset, sampled, and interpolated between samples."""

    def __init__(self, page: MeetingPage) -> None:
        self.page = page
        self.samples: list[tuple[float, float]] = []

    async def sample(self) -> None:
        skew: float = await self.page.page.evaluate(
            "performance.timeOrigin + performance.now() - Date.now()")
        self.samples.append((time.time(), skew / 1000.0))

    def wall(self, t: float) -> float:
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        share = min(1.0, max(0.0, (t - t0) / (t1 - t0))) if t1 > t0 else 0.0
        return t - (s0 + share * (s1 - s0))

    async def frames(self, who: str) -> list[tuple[float, int]]:
        """The page's presented frames of ``who``, on this process's wall clock."""
        await self.sample()
        return [(self.wall(t), w) for t, w in await sized_frames(self.page, who)]


async def _squeeze(relay: UdpRelay, viewed: Any, clean: RelayedClient, run: Run,
                   during: Callable[[], Awaitable[None]]) -> None:
    """Squeeze the viewer's link for :data:`SQUEEZED_FOR` seconds; back on the top layer."""
    relay.impairment = Impairment(rate_bps=min(SQUEEZE.rate_bps or 0, 0.6 * run.baseline))
    await wait_until(lambda: _value(viewed.switch.current is not None
                                    and viewed.switch.current < 2),
                     "the viewer to move down a layer", timeout=15)
    run.moved_down = time.time() - run.squeezed_at
    run.during = await received_bps(clean, 4.0)
    await during()
    await asyncio.sleep(max(0.0, run.squeezed_at + SQUEEZED_FOR - time.time()))
    run.released_at = time.time()
    relay.impairment = Impairment()
    await wait_until(lambda: _value(viewed.switch.current == 2),
                     "the viewer to come back to the top layer", timeout=60)
    run.moved_up = time.time() - run.released_at


def node_router(node: Any) -> Any:
    """The room's Router on ``node``."""
    return node.node.rooms.get(RoomName(ROOM)).media.router


@pytest.mark.timeout(240)
async def test_a_squeezed_chromium_viewer_switches_layers_without_a_freeze(
        browser: Browser, start_node: StartNode) -> None:
    udp_port = free_udp_port()
    node = await start_node(make_config(
        sfu=SfuConfig(ice_addresses=("127.0.0.1",), udp_port=udp_port),
        bandwidth=BandwidthConfig(max_renditions=0)))
    relay = UdpRelay(("127.0.0.1", udp_port))
    await relay.start()
    publisher = await open_watched(browser, node.url("/"), ROOM, "camera")
    init = KEYFRAME_LOG + REDIRECT % {"node": udp_port, "relay": relay.port, "type": "offer"}
    viewer = await open_watched(browser, node.url("/"), ROOM, "viewer", role="listener",
                                init=init, viewport=(1280, 720))
    clean = RelayedClient(node.url("/"), token(ROOM, "clean", role="listener"), decode=False,
                          strict=True)
    log: LayerLog | None = None
    try:
        producer = await wait_until(lambda: _value(camera(node)), "the camera's producer")
        await clean.connect()

        async def both_on_top() -> bool:
            ready = [c for c in producer.consumers if c.switch is not None]
            return len(ready) == 2 and all(c.switch.current == 2 for c in ready) \
                and all(layer.active(time.perf_counter()) for layer in producer.layers)

        await wait_until(both_on_top, "both subscribers on the top layer", timeout=45)
        assert relay.client_addr is not None  # the viewer's media takes the relay
        clean_consumer = consumer_of(node, clean, producer)
        viewed = next(c for c in producer.consumers if c is not clean_consumer)
        baseline = await steady_bps(clean)
        assert baseline > 250_000, baseline
        transport = next(t for t in node_router(node).transports
                         if getattr(t, "link", None) is viewed.link)
        log = LayerLog(viewed, transport.remb)
        clock = PageClock(viewer)
        await clock.sample()
        run = Run(squeezed_at=time.time(), baseline=baseline)
        run.publisher.append(await _encodings(publisher, producer))

        async def during() -> None:
            run.clean_layer = clean_consumer.switch.current
            run.publisher.append(await _encodings(publisher, producer))

        await _squeeze(relay, viewed, clean, run, during)
        await asyncio.sleep(AFTER + 1.0)
        run.frames = await clock.frames(publisher.participant_id)
        run.decided = log.decided()
        report = run.report(log, await inbound(viewer))
        _write_report(report)
        assert run.clean_layer == 2, report
        assert run.during >= 0.9 * baseline, report  # the publisher is not held back
        down, back = run.moves()
        assert down is not None and back, report  # down, and back up to the top
        assert steady_from([t for t, _ in run.frames], back[-1].at) is not None, report
        assert all(s.freeze < MAX_SWITCH_FREEZE for s in (down, *back)), report
        assert all(s.latency < MAX_SWITCH_LATENCY for s in (down, *back)), report
        for page in (publisher, viewer):
            assert page.errors == [], page.errors
    finally:
        if log is not None:
            await log.stop()
        await clean.close()
        await viewer.close()
        await publisher.close()
        relay.close()
