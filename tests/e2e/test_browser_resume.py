"""The meeting page resumes when its node hands the room over (reconnect, 4010)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.conftest import NodeHarness, StartNode
from tests.e2e.browser import STEP, Bot, MeetingPage, launch_chromium, loopback_node

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOM = "moving"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


async def test_the_page_resumes_after_a_reconnect_and_publishes_again(
        browser: Browser, start_node: StartNode) -> None:
    node: NodeHarness = await loopback_node(start_node)
    page = await MeetingPage.join(browser, node, ROOM, "ana")
    bot = await Bot.join(node, ROOM, "recorder")
    try:
        first = await bot.video_sizes({page.participant_id})
        assert first[page.participant_id][0] > 0
        # The node lets the room go, as a draining node does: reconnect, close 4010.
        await node.node.rooms.hand_over()
        await page.page.wait_for_function("parley.resumed === 1 && parley.ready",
                                          timeout=STEP * 1000)
        assert await page.page.evaluate("parley.participantId") == page.participant_id
        assert await page.page.evaluate("parley.reconnects") == 1
        history = await page.page.evaluate("parley.history.map((h) => h.state)")
        assert history[-2:] == ["reconnecting", "joined"]
        # The bot was moved too; once it is back, it receives the page's video again.
        await bot.client.rejoined.get()
        again = await bot.video_sizes({page.participant_id})
        assert again[page.participant_id][0] > 0
        room = node.node.rooms.get(ROOM)
        assert room is not None and room.get(page.participant_id) is not None
        assert page.errors == [] and await page.js_errors() == []
    finally:
        await bot.leave()
        await page.close()
