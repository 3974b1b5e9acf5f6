"""Firefox ESR on the meeting page: it publishes its camera as simulcast, and it plays
what the SFU forwards it.

The page offers the camera as three VP8 encodings (rid q, h, f at a quarter, half and
full size); the SFU demultiplexes them by RID and SSRC (sfu/hooks_simulcast.py) and
reads each layer's resolution from its key frames. An aiortc subscriber decodes the
layer forwarded to it. The other way round, Firefox subscribes to a Chromium camera
(itself simulcast) and decodes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

from conference.ids import RoomName
from sfu.producer import Producer
from tests.conftest import NodeHarness, StartNode
from tests.e2e.browser import Bot, MeetingPage, launch_chromium, loopback_node, wait_until
from tests.e2e.firefox import FirefoxPage

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOM = "firefox"


@pytest.fixture
async def loopback(start_node: StartNode) -> NodeHarness:
    return await loopback_node(start_node)


@pytest.fixture
async def firefox(loopback: NodeHarness) -> AsyncIterator[FirefoxPage]:
    page = await FirefoxPage.join(loopback, ROOM, "fox")
    try:
        yield page
    finally:
        await page.close()


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with launch_chromium() as browser:
        yield browser


def camera_of(node: NodeHarness, participant: str, *, screen: bool = False) -> Producer | None:
    """The participant's camera producer (``screen``: its screen share's)."""
    room = node.node.rooms.get(RoomName(ROOM))
    if room is None or room.media is None:
        return None
    router: Any = room.media.router
    return next((p for p in router.producers.values()
                 if p.kind == "video" and p.app_data.get("participant") == participant
                 and (p.app_data.get("source") == "screen") == screen), None)


async def _value(value: Any) -> Any:
    return value


async def test_the_sfu_receives_and_assembles_three_encodings_of_a_firefox_camera(
        firefox: FirefoxPage, loopback: NodeHarness) -> None:
    producer: Producer = await wait_until(
        lambda: _value(camera_of(loopback, firefox.participant_id)), "the camera's producer")
    assert [layer.rid for layer in producer.layers] == ["q", "h", "f"]

    async def every_layer_sent() -> list[dict[str, object]] | None:
        info = producer.layer_info()
        return info if all(i["frames"] >= 30 and i["width"] for i in info) else None

    info = await wait_until(every_layer_sent, "frames and a key frame on every layer",
                            timeout=30)
    widths = [int(str(i["width"])) for i in info]
    heights = [int(str(i["height"])) for i in info]
    assert widths[0] < widths[1] < widths[2], info
    assert heights[0] < heights[1] < heights[2], info
    assert widths[2] >= 2 * widths[1] - 16 and widths[1] >= 2 * widths[0] - 16, info
    assert len({layer.ssrc for layer in producer.layers}) == 3
    assert producer.decoder_queue.frames_offered == 0  # nothing mixed into one stream
    # Firefox ignores scalabilityMode (L1T3) but still numbers temporal layers (two) in
    # its VP8 descriptors: the SFU can lower a subscriber's frame rate within a layer
    assert producer.has_layers

    sent = {e["rid"]: e for e in await firefox.outbound() if e["source"] == "camera"}
    assert set(sent) == {"q", "h", "f"}, sent
    assert all(e["codec"] == "video/VP8" and e["framesEncoded"] > 0 for e in sent.values())

    bot = await Bot.join(loopback, ROOM, "viewer")
    try:
        sizes = await bot.video_sizes({firefox.participant_id})
        assert sizes[firefox.participant_id] in set(zip(widths, heights, strict=True)), (
            sizes, info)
    finally:
        await bot.leave()
    before = [layer.frames for layer in producer.layers]
    await wait_until(lambda: _value(all(
        layer.frames > b + 20 for layer, b in zip(producer.layers, before, strict=True))),
        "every layer to keep coming")
    assert await firefox.js_errors() == []


async def test_firefox_plays_a_chromium_camera_sent_as_simulcast(
        firefox: FirefoxPage, chromium: Browser, loopback: NodeHarness) -> None:
    ana = await MeetingPage.join(chromium, loopback, ROOM, "ana")
    try:
        producer: Producer = await wait_until(
            lambda: _value(camera_of(loopback, ana.participant_id)), "ana's camera")
        assert len(producer.layers) == 3
        await firefox.wait_decoding([ana.participant_id])
        track = producer.app_data["track"]
        got = (await firefox.received())[track]
        assert got["participant"] == ana.participant_id
        assert got["width"] in {layer.width for layer in producer.layers}, (
            got, producer.layer_info())
        # the page reports the tile's size, and the SFU's consumer has it
        size = await wait_until(
            lambda: firefox.evaluate(f"parley.tileSizes()[{track!r}]"), "ana's tile size")
        assert size["width"] > 100 and size["height"] > 50, size
        consumer = next(iter(producer.consumers))
        await wait_until(lambda: _value(consumer.render_size == (size["width"], size["height"])),
                         "the tile's size on the SFU's consumer")
        # Chromium decodes Firefox's camera too: both directions in one room
        await ana.wait_decoding([firefox.participant_id])
        assert ana.errors == [] and await ana.js_errors() == []
        assert await firefox.js_errors() == []
    finally:
        await ana.close()


async def test_a_firefox_screen_share_is_one_encoding_a_chromium_page_plays(
        firefox: FirefoxPage, chromium: Browser, loopback: NodeHarness) -> None:
    # the page's test source stands in for getDisplayMedia: an animated 640 by 360 canvas
    await firefox.evaluate("(parley.hooks.fakeScreen = true, true)")
    await firefox.evaluate("(document.getElementById('screen').click(), true)")
    screen: Producer = await wait_until(
        lambda: _value(camera_of(loopback, firefox.participant_id, screen=True)),
        "the screen's producer")
    assert screen.layers == ()  # not simulcast: one encoding, forwarded as it comes

    async def encoding() -> list[dict[str, Any]] | None:
        sent = [e for e in await firefox.outbound() if e["source"] == "screen"]
        return sent if sent and all(e["framesEncoded"] > 10 for e in sent) else None

    sent = await wait_until(encoding, "the screen share to be encoded")
    assert len(sent) == 1 and sent[0]["rid"] is None and sent[0]["codec"] == "video/VP8", sent
    ana = await MeetingPage.join(chromium, loopback, ROOM, "ana")
    try:
        track = screen.app_data["track"]

        async def playing() -> dict[str, Any] | None:
            got = (await ana.received()).get(track)
            return got if got and got["frames"] > 30 and got["width"] else None

        got = await wait_until(playing, "ana to decode fox's screen", timeout=30)
        assert got["participant"] == firefox.participant_id
        # Firefox's encoder may lower the resolution for its CPU or a starting bitrate;
        # what reaches ana is that one encoding: the source's shape, not a quarter layer
        assert got["width"] * 9 == got["height"] * 16 and got["width"] >= 320, got
        assert ana.errors == [] and await ana.js_errors() == []
        assert await firefox.js_errors() == []
    finally:
        await ana.close()
