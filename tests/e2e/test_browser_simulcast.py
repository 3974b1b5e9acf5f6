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

from conference.ids import ParticipantId, RoomName
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


async def test_the_page_reports_each_received_videos_tile_size_to_the_node(
        browser: Browser, loopback: NodeHarness) -> None:
    ana = await MeetingPage.join(browser, loopback, ROOM, "ana")
    ben = await MeetingPage.join(browser, loopback, ROOM, "ben")
    try:
        await ben.wait_decoding([ana.participant_id])
        producer = camera_producer_of(loopback, ana.participant_id)
        track = producer.app_data["track"]

        async def reported() -> Any:
            sizes = await ben.page.evaluate("parley.tileSizes()")
            return sizes.get(track)

        size = await wait_until(reported, "ben's page to report ana's tile")
        shown = await ben.page.evaluate(
            "(t) => { const v = document.querySelector(`video[data-track='${t}']`);"
            " const r = v.getBoundingClientRect();"
            " return [r.width * devicePixelRatio, r.height * devicePixelRatio]; }", track)
        assert abs(size["width"] - shown[0]) <= 0.1 * shown[0] + 1, (size, shown)
        assert size["width"] > 100 and size["height"] > 50
        consumer = next(c for c in producer.consumers)
        await wait_until(lambda: _async(consumer.render_size == (size["width"], size["height"])),
                         "the size on the SFU's consumer")
        # a smaller window: smaller tiles, reported again
        await ben.page.set_viewport_size({"width": 640, "height": 360})

        async def smaller() -> Any:
            now = await reported()
            return now if now["width"] < 0.8 * size["width"] else None

        await wait_until(smaller, "a smaller tile to be reported")
        assert ana.errors == [] and ben.errors == [] and await ben.js_errors() == []
    finally:
        await ben.close()
        await ana.close()


def camera_producer_of(node: NodeHarness, participant: str) -> Producer:
    room = node.node.rooms.get(RoomName(ROOM))
    assert room is not None and room.media is not None
    router: Any = room.media.router
    return next(p for p in router.producers.values()
                if p.kind == "video" and p.app_data.get("participant") == participant)


async def test_a_small_tile_receives_the_lowest_layer_on_a_fast_link_and_a_large_one_the_top(
        browser: Browser, loopback: NodeHarness) -> None:
    ana = await MeetingPage.join(browser, loopback, ROOM, "ana")
    ben = await MeetingPage.join(browser, loopback, ROOM, "ben")
    try:
        producer = camera_producer_of(loopback, ana.participant_id)
        track = producer.app_data["track"]
        await wait_until(lambda: _async(all(layer.width for layer in producer.layers)),
                         "a key frame on every layer", timeout=30)
        widths = [layer.width for layer in producer.layers]

        async def receiving(width: int | None) -> Any:
            got = (await ben.page.evaluate("parley.received()")).get(track)
            return got if got and got["width"] == width else None

        # two tiles side by side in a 400-pixel window: ana's is under 200 pixels wide
        await ben.page.set_viewport_size({"width": 400, "height": 600})
        consumer = next(iter(producer.consumers))

        async def small_tile_on_lowest_layer() -> Any:
            # (the lowest layer alone may come first, while the estimate ramps up)
            size = consumer.render_size
            return await receiving(widths[0]) if size is not None and size[0] < 240 else None

        small = await wait_until(small_tile_on_lowest_layer, "the lowest layer for the small "
                                 "tile", timeout=20)
        assert consumer.switch is not None and consumer.switch.current == 0

        async def told(encoding: str) -> Any:
            state = (await ben.page.evaluate("parley.streams()")).get(track)
            return state if state and state["encoding"] == encoding else None

        await wait_until(lambda: told("q"), "a stream-state naming the lowest encoding")

        # The only tile needs the lowest layer: once the layers have settled the
        # publisher's REMB covers that one alone (sfu/layeralloc.py) and the browser
        # stops encoding the two above it.
        async def only_lowest_sent() -> Any:
            info = producer.layer_info()
            return info if info[0]["active"] and not any(i["active"] for i in info[1:]) \
                else None

        capped_at = time.monotonic()
        await wait_until(only_lowest_sent, "the publisher to stop h and f", timeout=20)
        stopped_after = time.monotonic() - capped_at
        await ben.page.set_viewport_size({"width": 1600, "height": 900})
        grown_at = time.monotonic()
        await wait_until(lambda: receiving(widths[2]), "the top layer", timeout=30)
        print(f"upper layers stopped after {stopped_after:.1f} s; "
              f"top layer back {time.monotonic() - grown_at:.1f} s after the tile grew")
        assert consumer.switch.current == 2
        top = await wait_until(lambda: told("f"), "a stream-state naming the top encoding")
        assert top["state"] == "active"
        room = loopback.node.rooms.get(RoomName(ROOM))
        assert room is not None
        stats = room.media.stats(ParticipantId(ben.participant_id))
        assert stats["received"][track]["layer"] == 2
        ana_stats = room.media.stats(ParticipantId(ana.participant_id))
        assert [layer["width"] for layer in ana_stats["published"][track]["layers"]] == widths
        after = (await ben.page.evaluate("parley.received()"))[track]
        assert after["frames"] > small["frames"]  # one video, decoded throughout
        assert ben.errors == [] and await ben.js_errors() == []
    finally:
        await ben.close()
        await ana.close()
