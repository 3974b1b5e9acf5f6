"""The meeting page's media connections lose their network path for longer than the
node's consent window, then get it back. Publishing: the page publishes again without
reloading (the socket stays), another participant sees its camera again, and a screen
share that could not be sent again in time has ended for everyone, the sharer's button
included. Subscribing: the page takes the node's new subscribe connection and decodes
the others' video again, without rejoining.

The connection under test goes through UDP relays (tests/netimpair.py), one per SFU
port, made by the test when the page applies the node's description (an exposed
function called from a Playwright init script that rewrites the node's candidates).
The same script points the page's own candidates on that connection at the discard
port, so the node reaches the page only through the relay: blocking the relays kills
the path both ways. The node's consent window is 5 s here (``sfu.consent_timeout``;
30 s by default).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from client.client import ParleyClient
from sfu.config import SfuConfig
from tests.conftest import NodeHarness, StartNode, make_config, token
from tests.e2e.browser import STEP, Bot, MeetingPage, launch_chromium, wait_until
from tests.e2e.test_media_recovery import video_from
from tests.netimpair import UdpRelay

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOM = "outage"
WINDOW = 5.0
BLOCKED = 22.0
"""Longer than the consent window plus the page's screen-share give-up (15 s)."""

RELAYED = """
((target) => {
  const Native = window.RTCPeerConnection;
  const HOST = / (\\d+) typ host/;
  const theirs = target === "publisher" ? "answer" : "offer";
  window.RTCPeerConnection = class extends Native {
    async createOffer(...args) {
      this.__relayed = target === "publisher";
      return super.createOffer(...args);
    }
    async setRemoteDescription(description) {
      if (description && description.type === theirs) {
        this.__relayed = true;
        let sdp = description.sdp;
        const lines = /^a=candidate:.* 127\\.0\\.0\\.1 (\\d+) typ host.*$/gm;
        for (const [line, port] of [...sdp.matchAll(lines)]) {
          const relay = await window.__relayFor(Number(port));
          sdp = sdp.replace(line, line.replace(` ${port} typ host`, ` ${relay} typ host`));
        }
        description = { type: theirs, sdp };
      }
      return super.setRemoteDescription(description);
    }
    set onicecandidate(handler) {
      super.onicecandidate = (e) => {
        const c = e.candidate;
        if (!this.__relayed || !c || !c.candidate) return handler(e);
        return handler({ candidate: { candidate: c.candidate.replace(HOST, " 9 typ host"),
                                      sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex } });
      };
    }
    get onicecandidate() { return super.onicecandidate; }
  };
})"""


class Relays:
    """The publish connections' relays, by SFU port; ``blocked`` holds for new ones too."""

    def __init__(self) -> None:
        self.by_port: dict[int, UdpRelay] = {}
        self.blocked = False

    async def relay_for(self, port: int) -> int:
        if port not in self.by_port:
            relay = UdpRelay(("127.0.0.1", port))
            await relay.start()
            self.by_port[port] = relay
        self.by_port[port].blocked = self.blocked
        return self.by_port[port].port

    def block(self, blocked: bool) -> None:
        self.blocked = blocked
        for relay in self.by_port.values():
            relay.blocked = blocked

    def close(self) -> None:
        for relay in self.by_port.values():
            relay.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
async def node(start_node: StartNode) -> NodeHarness:
    return await start_node(make_config(sfu=SfuConfig(ice_addresses=("127.0.0.1",),
                                                      consent_timeout=WINDOW)))


@pytest.mark.timeout(150)
async def test_the_page_publishes_again_after_its_path_died_and_an_old_screen_share_ends(
        browser: Browser, node: NodeHarness) -> None:
    relays = Relays()
    context = await browser.new_context(permissions=["camera", "microphone"],
                                        viewport={"width": 1280, "height": 720})
    watcher = ParleyClient(node.url("/"), token(ROOM, "watcher", role="listener"))
    try:
        await context.expose_function("__relayFor", relays.relay_for)
        await context.add_init_script(RELAYED + '("publisher");')
        page = MeetingPage(await context.new_page(), "sharer")
        await page.page.goto(node.url("/") + "?token=" + token(ROOM, "sharer"))
        await page.wait_ready()
        sharer = await page.page.evaluate("parley.participantId")
        await page.page.evaluate("parley.hooks.fakeScreen = true")
        await page.page.get_by_role("button", name="Share screen").click()
        await page.page.get_by_role("button", name="Stop sharing").wait_for(timeout=STEP * 1000)
        assert relays.by_port, "the publish connection does not go through the relay"

        await wait_until(lambda: page.page.evaluate(
            "parley.outbound().then((o) => o.some((s) => s.source === 'screen'"
            " && s.framesEncoded > 0))"), "the screen share to be sent")
        await watcher.connect()
        first = await video_from(watcher, sharer, timeout=STEP)
        screen = _tracks_of(watcher.joined, sharer)["screen"]

        relays.block(True)
        blocked_at = time.monotonic()
        await wait_until(lambda: page.page.evaluate("parley.publishFailures > 0"),
                         "the node to report the publish connection failed", WINDOW + 8.0)
        # The window runs from the last answered check, up to one interval before.
        assert time.monotonic() - blocked_at >= WINDOW - 1.5
        gone = await _unpublished(watcher, {first.track_id, screen}, WINDOW + 8.0)
        assert gone == {first.track_id, screen}  # the others see both end

        # The sharer gives up the screen share while the path is still dead.
        await page.page.get_by_role("button", name="Share screen").wait_for(timeout=20_000)
        await asyncio.sleep(max(0.0, BLOCKED - (time.monotonic() - blocked_at)))
        relays.block(False)

        again = await video_from(watcher, sharer, not_track=first.track_id, timeout=30.0)
        assert again.track_id != first.track_id
        await wait_until(lambda: page.page.evaluate("parley.publishRecoveries > 0"),
                         "the page to see its new publish connection connected")
        state = await page.page.evaluate(
            "({state: parley.state, reconnects: parley.reconnects})")
        assert state == {"state": "joined", "reconnects": 0}  # no reload, no new socket
        late = ParleyClient(node.url("/"), token(ROOM, "late", role="listener"), media=False)
        try:
            tracks = _tracks_of(await late.connect(), sharer)
        finally:
            await late.close()
        assert set(tracks) == {"camera", "microphone"}, tracks  # the screen share stayed ended
        notices = await page.page.locator("#messages li.notice").all_text_contents()
        assert any("screen share stopped" in n for n in notices), notices
        assert any("not reaching the meeting" in n for n in notices), notices
        for text in notices:  # sentences, never protocol codes
            assert "_" not in text, text
        assert await page.page.evaluate("parley.state") == "joined"
    finally:
        await watcher.close()
        await context.close()
        relays.close()


@pytest.mark.timeout(120)
async def test_the_page_takes_the_node_s_new_subscribe_connection_after_its_path_died(
        browser: Browser, node: NodeHarness) -> None:
    relays = Relays()
    context = await browser.new_context(permissions=["camera", "microphone"],
                                        viewport={"width": 1280, "height": 720})
    bot = await Bot.join(node, ROOM, "camera-bot", publish=True, subscribe=False)
    try:
        await context.expose_function("__relayFor", relays.relay_for)
        await context.add_init_script(RELAYED + '("subscriber");')
        page = MeetingPage(await context.new_page(), "viewer")
        await page.page.goto(node.url("/") + "?token=" + token(ROOM, "viewer", role="listener"))
        await page.wait_ready()
        await page.wait_decoding([bot.participant_id])
        assert relays.by_port, "the subscribe connection does not go through the relay"

        relays.block(True)
        blocked_at = time.monotonic()
        await wait_until(lambda: page.page.evaluate("parley.subscribeFailures > 0"),
                         "the node to replace the subscribe connection", WINDOW + 8.0)
        await asyncio.sleep(max(0.0, WINDOW + 3.0 - (time.monotonic() - blocked_at)))
        relays.block(False)
        await page.wait_decoding([bot.participant_id])
        state = await page.page.evaluate(
            "({state: parley.state, reconnects: parley.reconnects, resumed: parley.resumed})")
        assert state == {"state": "joined", "reconnects": 0, "resumed": 0}
    finally:
        await bot.leave()
        await context.close()
        relays.close()


def _tracks_of(joined: dict[str, Any], participant: str) -> dict[str, str]:
    """source -> track id of ``participant``'s tracks in a ``joined`` reply."""
    return {t["source"]: t["id"] for p in joined["participants"] if p["id"] == participant
            for t in p.get("tracks", [])}


async def _unpublished(watcher: ParleyClient, tracks: set[str], timeout: float) -> set[str]:
    gone: set[str] = set()
    async with asyncio.timeout(timeout):
        while not tracks <= gone:
            event = await watcher.next_event("track-unpublished", timeout=timeout)
            gone.add(str(event["track"]["id"]))
    return gone & tracks
