"""Roles in the browser: a Chromium listener goes on stage among aiortc speakers.

The speakers are aiortc participants (client/client.py) publishing
VideoStreamTrack and decoding what they receive (tests/media_helpers.py Peer);
the moderator is a signalling-only client. The listener is the meeting page with
a fake camera; the test clicks what a person would click.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiortc.mediastreams import VideoStreamTrack

from client.client import ParleyClient
from tests.conftest import NodeHarness, StartNode, token
from tests.e2e.browser import STEP, MeetingPage, launch_chromium, wait_until
from tests.media_helpers import Peer, media_node

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOM = "town-hall"
MS = STEP * 1000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


async def _speaker(node: NodeHarness, identity: str) -> Peer:
    peer = Peer(ParleyClient(node.url("/"), token(ROOM, identity)))
    await peer.client.connect()
    await peer.client.publish(VideoStreamTrack(), sources=["camera"])
    return peer


async def _on_stage(page: MeetingPage, on: bool) -> None:
    condition = "parley.publishing && parley.grants.can_publish" if on else (
        "!parley.publishing && !parley.grants.can_publish")
    await page.page.wait_for_function(condition, timeout=MS)


async def test_browser_listener_goes_on_stage_and_is_seen_by_aiortc(
        browser: Browser, start_node: StartNode) -> None:
    node = await media_node(start_node)
    alice = await _speaker(node, "alice")
    bob = await _speaker(node, "bob")
    moderator = ParleyClient(node.url("/"), token(ROOM, "mod", role="moderator"), media=False)
    await moderator.connect()
    page = await MeetingPage.join(browser, node, ROOM, "lena", role="listener")
    me = page.participant_id
    try:
        # The listener sees and decodes the speakers, and has nothing to publish.
        await page.wait_decoding([alice.client.participant_id, bob.client.participant_id])
        # Everyone who may publish has a tile; the signalling-only moderator shows no video.
        tiles = {t["participant"]: t["video"] for t in await page.tiles()}
        assert tiles == {alice.client.participant_id: True, bob.client.participant_id: True,
                         moderator.participant_id: False}
        for name in ("Mute microphone", "Turn camera off", "Share screen"):
            assert await page.page.get_by_role("button", name=name).is_hidden()
        assert await page.page.evaluate("parley.outbound()") == []

        # Asking to speak; the moderator approves.
        await page.page.get_by_role("button", name="Request to speak").click()
        request = await moderator.next_event("speaker-request", timeout=STEP)
        assert request["participant"]["id"] == me
        await page.page.get_by_text("waiting for a moderator").wait_for(timeout=MS)
        await moderator.request({"type": "approve-speaker", "participant": me})
        await _on_stage(page, True)
        await alice.wait_frames(me, 10, timeout=STEP)
        await bob.wait_frames(me, 10, timeout=STEP)
        assert all(w > 0 and h > 0 for w, h in alice.received.sizes[me]), alice.received.sizes
        await page.page.get_by_role("button", name="Mute microphone").wait_for(timeout=MS)

        # Back to the audience: the page stops publishing; a second request is denied.
        await moderator.request({"type": "move-to-audience", "participant": me})
        await _on_stage(page, False)
        assert await page.tile("local") is None
        assert await page.page.evaluate("parley.outbound()") == []
        await page.page.get_by_role("button", name="Request to speak").click()
        await moderator.next_event("speaker-request", timeout=STEP)
        await moderator.request({"type": "deny-speaker", "participant": me})
        await page.page.get_by_text("Your request to speak was declined.").wait_for(timeout=MS)
        assert await page.page.evaluate("parley.requestState()") == "denied"

        # An invitation: the page asks, the listener accepts, and is seen again.
        await moderator.request({"type": "invite-to-stage", "participant": me,
                                 "message": "come back up"})
        dialog = page.page.get_by_role("alertdialog")
        await dialog.wait_for(timeout=MS)
        assert "come back up" in await dialog.inner_text()
        await dialog.get_by_role("button", name="Accept").click()
        await _on_stage(page, True)
        before = alice.received.count(me)

        async def more() -> bool:
            return alice.received.count(me) > before + 10
        await wait_until(more, "alice to decode the page's video again")
        assert page.errors == [] and await page.js_errors() == []
    finally:
        await page.close()
        await moderator.close()
        await alice.close()
        await bob.close()


async def test_moderator_page_lists_waiting_requests_and_answers_them_by_clicking(
        browser: Browser, start_node: StartNode) -> None:
    node = await media_node(start_node)
    carl, dora = listeners = [
        ParleyClient(node.url("/"), token(ROOM, name, role="listener"), media=False)
        for name in ("carl", "dora")]
    for client, name in zip(listeners, ("carl", "dora"), strict=True):
        await client.connect()
        await client.request({"type": "request-to-speak", "message": f"{name} here"})
    page = await MeetingPage.join(browser, node, ROOM, "mia", role="moderator")
    try:
        # Requests made before the page joined come with its joined reply.
        requests = page.page.get_by_role("list", name="Requests to speak")
        await requests.get_by_text("carl: “carl here”").wait_for(timeout=MS)
        await requests.get_by_text("dora: “dora here”").wait_for(timeout=MS)
        await page.page.get_by_role("button", name="Approve carl").click()
        changed = await carl.next_event("permission-changed", timeout=STEP)
        assert changed["grants"]["can_publish"] is True
        assert changed["by"] == page.participant_id
        await page.page.get_by_role("button", name="Deny dora").click()
        result = await dora.next_event("speaker-request-result", timeout=STEP)
        assert result["outcome"] == "denied"

        async def empty() -> bool:
            return await requests.locator("li").count() == 0
        await wait_until(empty, "the answered requests to leave the list")
        # carl is on stage now (a tile without video), dora still in the audience list.
        await page.page.locator(f'.tile[data-participant="{carl.participant_id}"]').wait_for(
            timeout=MS)
        await page.page.get_by_role("list", name="Audience").get_by_text("dora").wait_for(
            timeout=MS)
        assert page.errors == [] and await page.js_errors() == []
    finally:
        await page.close()
        for client in listeners:
            await client.close()
