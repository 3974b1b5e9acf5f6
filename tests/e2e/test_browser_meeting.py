"""The meeting page in Chromium against a real node: publish, receive, renegotiate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.conftest import NodeHarness, StartNode
from tests.e2e.browser import (
    STEP,
    Bot,
    MeetingPage,
    launch_chromium,
    loopback_node,
    wait_until,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOM = "meeting"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
async def loopback(start_node: StartNode) -> NodeHarness:
    return await loopback_node(start_node)


async def test_three_browsers_and_a_bot_see_each_other(browser: Browser,
                                                       loopback: NodeHarness) -> None:
    pages = [await MeetingPage.join(browser, loopback, ROOM, name)
             for name in ("ana", "ben", "cleo")]
    ids = [p.participant_id for p in pages]
    bot = await Bot.join(loopback, ROOM, "recorder")
    try:
        for page in pages:
            await page.wait_decoding([i for i in ids if i != page.participant_id])
        sizes = await bot.video_sizes(set(ids))
        assert all(w > 0 and h > 0 for w, h in sizes.values()), sizes
        message = pages[0].page.get_by_role("textbox", name="Message")
        await message.fill("hello from ana")
        await message.press("Enter")
        for page in pages[1:]:
            await page.page.locator(".msg", has_text="hello from ana").filter(
                has_text="ana").wait_for(timeout=STEP * 1000)
        data = await asyncio.wait_for(bot.client.data.get(), STEP)
        assert (data["identity"], data["payload"]) == ("ana", {"text": "hello from ana"})
        for page in pages:
            assert await page.showing(bot.participant_id)  # a tile, even without video
            assert not await page.showing(page.participant_id)
            assert page.errors == [] and await page.js_errors() == []
    finally:
        await bot.leave()
    await pages[0].leave()
    for page in pages[1:]:
        await wait_until(lambda p=page: _gone(p, ids[0]), f"{ids[0]} to leave {page.identity}")
        await page.leave()


async def _gone(page: MeetingPage, participant: str) -> bool:
    return not await page.showing(participant)


async def test_page_keeps_receiving_after_ten_joins_and_leaves(browser: Browser,
                                                               loopback: NodeHarness) -> None:
    stay = await MeetingPage.join(browser, loopback, ROOM, "host")
    for i in range(10):
        guest: MeetingPage | Bot
        if i % 2:
            guest = await MeetingPage.join(browser, loopback, ROOM, f"guest-page-{i}")
        else:
            guest = await Bot.join(loopback, ROOM, f"guest-bot-{i}", publish=True,
                                   subscribe=False)
        pid = guest.participant_id
        try:
            await wait_until(lambda pid=pid: _decoded(stay, pid), f"video of guest {i}")
        finally:
            await guest.leave()
        await wait_until(lambda pid=pid: _gone(stay, pid), f"guest {i} to leave")
        assert await stay.page.locator("video[data-mid]").count() == 0
    final = await Bot.join(loopback, ROOM, "final", publish=True, subscribe=False)
    try:
        await stay.wait_decoding([final.participant_id])
        transceivers = await stay.page.evaluate("parley.transceivers()")
        assert transceivers <= 4, f"m-lines were not reused: {transceivers}"
    finally:
        await final.leave()
    assert stay.errors == []
    assert await stay.page.evaluate("parley.errors") == []
    await stay.leave()


async def _decoded(page: MeetingPage, participant: str) -> bool:
    return (await page.frames()).get(participant, 0) > 0
