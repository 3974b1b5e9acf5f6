"""The meeting page through a node that does not own the room: video still decodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from conference.ids import RoomName
from tests.cluster.conftest import redis_server  # noqa: F401  (the fixture)
from tests.cluster.redisproc import RedisServer
from tests.cluster.test_relay import own, start_cluster
from tests.conftest import StartNode
from tests.e2e.browser import Bot, MeetingPage, launch_chromium
from tests.media_helpers import LOOPBACK_SFU

if TYPE_CHECKING:
    from playwright.async_api import Browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


async def test_a_page_on_a_non_owner_node_decodes_video_from_the_owner(
        browser: Browser, start_node: StartNode, redis_server: RedisServer) -> None:  # noqa: F811
    owner, edge = await start_cluster(start_node, redis_server, n=2, sfu=LOOPBACK_SFU)
    await own(owner, "relayed")
    bot = await Bot.join(owner, "relayed", "camera-bot", publish=True)
    page = await MeetingPage.join(browser, edge, "relayed", "ana")
    try:
        await page.wait_decoding([bot.participant_id])
        assert edge.node.rooms.get(RoomName("relayed")) is None
        room = owner.node.rooms.get(RoomName("relayed"))
        assert room is not None and {p.identity for p in room.participants} == {
            "camera-bot", "ana"}
        assert page.errors == [] and await page.js_errors() == []
    finally:
        await bot.client.close()
        await page.close()
