"""A Chromium publisher slows down when the SFU's only subscriber is squeezed, and speeds
up again when the squeeze ends.

The meeting page publishes Chromium's fake camera; an aiortc subscriber receives it
through a UDP relay (tests/netimpair.py) that limits its downlink to 300 kbit/s with
5 % loss. The SFU lowers the REMB it sends the publisher to what that link takes (the
video's share at its lowest temporal layer, or the floor once it is paused), and
Chromium's encoder follows: its outbound-rtp bytesSent rate falls. Renditions are off here:
a subscriber served from a rendition does not limit the publisher, and this test is
about the REMB path.

Two test hooks are installed in the page before its scripts run (Playwright init
script): every RTCPeerConnection the page creates is kept in ``window.__pcs`` so its
stats can be read, and the camera is asked for 1280x720 at 30 frames/s so the
unconstrained bitrate is well above what the squeezed path carries. The camera is sent
as one encoding, not simulcast (a simulcast publisher is not capped by a subscriber).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from conference.ids import RoomName
from sfu.bandwidth import BandwidthConfig
from sfu.config import SfuConfig
from tests.conftest import NodeHarness, StartNode, make_config, token
from tests.e2e.browser import MeetingPage, launch_chromium, wait_until
from tests.netimpair import Impairment, RelayedClient

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOM = "squeeze"
BANDWIDTH = BandwidthConfig(max_renditions=0)
SQUEEZE = Impairment(rate_bps=300_000, loss=0.05)
SLOW = 350_000
"""Chromium's video must fall below this (bits per second) while the subscriber is squeezed."""
CLEAN = 500_000
"""…and be above this before the squeeze (unconstrained, Chromium's fake camera sends
~600 kbit/s at 960x540 here), so the fall is Chromium following the REMB."""

HOOKS = """
(() => {
  window.__parleySingleEncoding = true;  // one encoding: this test is about the REMB path
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
  const devices = navigator.mediaDevices;
  if (devices && devices.getUserMedia) {
    const open = devices.getUserMedia.bind(devices);
    devices.getUserMedia = (constraints) => {
      if (constraints && constraints.video) {
        const video = typeof constraints.video === "object" ? constraints.video : {};
        const big = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
        constraints = { ...constraints, video: { ...video, ...big } };
      }
      return open(constraints);
    };
  }
})();
"""

OUTBOUND_VIDEO = """
async () => {
  let bytes = 0, found = false, target = 0, limited = "";
  for (const pc of window.__pcs || []) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((s) => {
      if (s.type !== "outbound-rtp" || s.kind !== "video") return;
      found = true;
      bytes += s.bytesSent || 0;
      target += s.targetBitrate || 0;
      limited = s.qualityLimitationReason || limited;
    });
  }
  return found ? { bytes, target, limited, at: performance.now() } : null;
}
"""


class RelayedSubscriber(RelayedClient):
    """An aiortc subscriber whose media comes through UDP relays (one per SFU port)."""

    def video_frames(self) -> int:
        return self.frames_of("video")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


async def open_publisher(browser: Browser, node: NodeHarness) -> MeetingPage:
    context = await browser.new_context(permissions=["camera", "microphone"])
    await context.add_init_script(HOOKS)
    meeting = MeetingPage(await context.new_page(), "camera")
    await meeting.page.goto(node.url("/?token=" + token(ROOM, "camera")))
    await meeting.page.wait_for_function(
        "window.parley && (parley.publishing || ['failed', 'closed', 'removed', 'ended']"
        ".includes(parley.state))", timeout=20_000)
    assert await meeting.page.evaluate("parley.publishing"), meeting.errors
    return meeting


async def video_bitrate(meeting: MeetingPage, seconds: float = 2.0) -> float:
    """Bits per second of Chromium's outbound video payload over ``seconds``."""
    first = await meeting.page.evaluate(OUTBOUND_VIDEO)
    await asyncio.sleep(seconds)
    second = await meeting.page.evaluate(OUTBOUND_VIDEO)
    assert first is not None and second is not None, "the page sends no video"
    return float((second["bytes"] - first["bytes"]) * 8 / ((second["at"] - first["at"]) / 1000))


def remb_target(node: NodeHarness) -> int | None:
    """The REMB the SFU last sent for the page's video."""
    room = node.node.rooms.get(RoomName(ROOM))
    if room is None or room.media is None:
        return None
    video = [p for p in room.media.router.producers.values() if p.kind == "video"]
    return video[0].link.target if video else None


@pytest.mark.timeout(240)
async def test_chromium_slows_down_for_a_squeezed_subscriber_and_speeds_up_after(
        browser: Browser, start_node: StartNode) -> None:
    node = await start_node(make_config(sfu=SfuConfig(ice_addresses=("127.0.0.1",)),
                                        bandwidth=BANDWIDTH))
    floor = BANDWIDTH.floor_bitrate
    meeting = await open_publisher(browser, node)
    subscriber = RelayedSubscriber(node.url("/"), token(ROOM, "viewer", role="listener"),
                                   decode=False)
    try:
        await subscriber.connect()
        await wait_until(lambda: _true(subscriber.video_frames() > 60),
                         "the subscriber to receive Chromium's video", 20)
        assert subscriber.relays, "the subscriber's media must go through the relay"

        await wait_until(lambda: _above(meeting, CLEAN),
                         f"Chromium to send over {CLEAN} bit/s", 30)
        subscriber.impair(SQUEEZE)
        # The target falls to what the squeezed link can take: the video's share at its
        # lowest layer, or the floor once that video is paused.
        squeezed = SQUEEZE.rate_bps or 0
        await wait_until(lambda: _true(floor <= (remb_target(node) or 0) <= squeezed),
                         "the SFU to lower the publisher's REMB under the squeezed rate", 25)
        (slow,) = await wait_until(lambda: _below(meeting, SLOW),
                                   f"Chromium to slow below {SLOW} bit/s", 25)

        subscriber.impair(Impairment())
        await wait_until(lambda: _true((remb_target(node) or 0) > 2 * floor),
                         "the REMB target to rise after the squeeze", 40)
        await wait_until(lambda: _above(meeting, max(SLOW, 2 * slow)),
                         "Chromium to speed up again", 45)
        assert meeting.errors == [], meeting.errors
    finally:
        await subscriber.close()
        await meeting.page.context.close()


async def _true(value: bool) -> bool:
    return value


async def _above(meeting: MeetingPage, bps: float) -> tuple[float] | None:
    rate = await video_bitrate(meeting)
    return (rate,) if rate > bps else None


async def _below(meeting: MeetingPage, bps: float) -> tuple[float] | None:
    rate = await video_bitrate(meeting)
    return (rate,) if rate < bps else None
