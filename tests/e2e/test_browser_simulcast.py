"""A Chromium publisher sends its camera as simulcast and the SFU receives every encoding.

The meeting page publishes the fake camera as three VP8 encodings (rid q, h, f at a
quarter, half and full size). The SFU answers ``a=simulcast:recv q;h;f``,
demultiplexes the encodings of the one m-line by RID and then SSRC
(sfu/hooks_simulcast.py), assembles each apart and counts its frames; each layer's
resolution is read from its VP8 key frames. An aiortc subscriber decodes what the
SFU forwards it: one layer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from conference.ids import RoomName
from sfu.producer import Producer
from tests.conftest import NodeHarness, StartNode
from tests.e2e.browser import Bot, MeetingPage, launch_chromium, loopback_node, wait_until

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOM = "simulcast"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
async def loopback(start_node: StartNode) -> NodeHarness:
    return await loopback_node(start_node)


def camera_producer(node: NodeHarness) -> Producer | None:
    room = node.node.rooms.get(RoomName(ROOM))
    if room is None or room.media is None:
        return None
    router: Any = room.media.router
    return next((p for p in router.producers.values() if p.kind == "video"), None)


async def test_the_sfu_receives_and_assembles_three_encodings_of_a_chromium_camera(
        browser: Browser, loopback: NodeHarness) -> None:
    page = await MeetingPage.join(browser, loopback, ROOM, "ana")
    try:
        producer = await wait_until(lambda: _async(camera_producer(loopback)),
                                    "the camera's producer")
        assert [layer.rid for layer in producer.layers] == ["q", "h", "f"]

        async def every_layer_sent() -> list[dict[str, object]] | None:
            info = producer.layer_info()
            done = all(i["frames"] >= 30 and i["width"] for i in info)
            return info if done else None

        info = await wait_until(every_layer_sent, "frames and a key frame on every layer",
                                timeout=30)
        widths = [int(str(i["width"])) for i in info]
        heights = [int(str(i["height"])) for i in info]
        assert widths[0] < widths[1] < widths[2], info
        assert heights[0] < heights[1] < heights[2], info
        assert widths[2] >= 2 * widths[1] - 16 and widths[1] >= 2 * widths[0] - 16, info
        for layer in producer.layers:
            assert layer.encoding is not None and layer.encoding.ssrc is not None
        ssrcs = {layer.ssrc for layer in producer.layers}
        assert len(ssrcs) == 3
        # nothing of the m-line was mixed into the receiver's own path
        assert producer.decoder_queue.frames_offered == 0

        bot = await Bot.join(loopback, ROOM, "viewer")
        try:
            sizes = await bot.video_sizes({page.participant_id})
            assert sizes[page.participant_id] == (widths[2], heights[2])  # the top layer
        finally:
            await bot.leave()
        started = time.perf_counter()
        before = [layer.frames for layer in producer.layers]
        await wait_until(lambda: _async(all(
            layer.frames > b + 20 for layer, b in zip(producer.layers, before, strict=True))),
            "every layer to keep coming")
        assert time.perf_counter() - started < 15
        assert page.errors == [] and await page.js_errors() == []
    finally:
        await page.close()


async def _async(value: Any) -> Any:
    return value
