"""The meeting page as people use it: four people, the stage, controls, chat, reconnecting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sfu.bandwidth import BandwidthConfig
from tests.conftest import NodeHarness, StartNode, make_config
from tests.e2e.browser import (
    STEP,
    Bot,
    MeetingPage,
    TcpRelay,
    launch_chromium,
    loopback_node,
    wait_until,
)
from tests.media_helpers import LOOPBACK_SFU

if TYPE_CHECKING:
    from playwright.async_api import Browser, Dialog

ROOM = "standup"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
MS = STEP * 1000


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
async def loopback(start_node: StartNode) -> NodeHarness:
    return await loopback_node(start_node)


async def _tile_keys(page: MeetingPage) -> set[tuple[str, str]]:
    return {(t["participant"], t["source"]) for t in await page.tiles()}


async def _wait_tiles(page: MeetingPage, expected: set[tuple[str, str]]) -> None:
    async def right() -> bool:
        return await _tile_keys(page) == expected
    try:
        await wait_until(right, f"{page.identity}'s tiles")
    except AssertionError:
        raise AssertionError(f"{page.identity} shows {await _tile_keys(page)}, "
                             f"expected {expected}") from None


async def _wait_tile(page: MeetingPage, participant: str, what: str, source: str = "camera",
                     **state: object) -> None:
    async def matches() -> bool:
        tile = await page.tile(participant, source)
        return tile is not None and all(tile[k] == v for k, v in state.items())
    await wait_until(matches, f"{page.identity}: {what}")


async def _decoding(page: MeetingPage, key: str) -> None:
    """Frames of ``participant/source`` are decoded, and more a second later."""
    async def frames() -> int:
        result: dict[str, int] = await page.page.evaluate("parley.decoded()")
        return result.get(key, 0)
    first = await wait_until(frames, f"{page.identity} to decode {key}")
    await asyncio.sleep(1.0)
    assert await frames() > first, f"{page.identity}: {key} stopped at {first} frames"


async def test_four_people_meet_go_on_stage_share_and_chat(browser: Browser,
                                                         loopback: NodeHarness) -> None:
    ana = await MeetingPage.join(browser, loopback, ROOM, "ana", role="moderator")
    ben = await MeetingPage.join(browser, loopback, ROOM, "ben")
    cleo = await MeetingPage.join(browser, loopback, ROOM, "cleo")
    dan = await MeetingPage.join(browser, loopback, ROOM, "dan", role="listener")
    speakers, pages = [ana, ben, cleo], [ana, ben, cleo, dan]
    ids = {p.identity: p.participant_id for p in pages}
    on_stage = {ids[s.identity] for s in speakers}

    # Speakers see themselves and the other speakers; the listener is in the audience list.
    for page in speakers:
        await _wait_tiles(page, {("local", "camera")} | {
            (i, "camera") for i in on_stage - {page.participant_id}})
    await _wait_tiles(dan, {(i, "camera") for i in on_stage})
    await asyncio.gather(*(p.wait_decoding(sorted(on_stage - {p.participant_id})) for p in pages))
    await ana.page.get_by_role("list", name="Audience").get_by_text("dan").wait_for(timeout=MS)

    # The camera is sent as three simulcast encodings, each VP8 with three temporal layers.
    outbound = await ana.page.evaluate("parley.outbound()")
    cameras = [o for o in outbound if o["source"] == "camera"]
    assert sorted(o["rid"] for o in cameras) == ["f", "h", "q"], outbound
    # (an encoding Chromium has not started yet, for bandwidth or CPU, reports no mode)
    started = [o for o in cameras if o["framesEncoded"]]
    assert started and {(o["codec"], o["scalabilityMode"]) for o in started} == {
        ("video/VP8", "L1T3")}, outbound

    # The listener asks to speak; the moderator approves by clicking.
    await dan.page.get_by_role("button", name="Request to speak").click()
    await dan.page.get_by_role("button", name="Cancel request").wait_for(timeout=MS)
    assert await dan.page.evaluate("parley.requestState()") == "pending"
    await ana.page.get_by_role("button", name="Approve dan").click()
    await dan.page.wait_for_function("parley.publishing", timeout=MS)
    assert await dan.page.evaluate("parley.requestState()") == "approved"
    assert await dan.page.get_by_role("button", name="Request to speak").is_hidden()
    await asyncio.gather(*(p.wait_decoding([ids["dan"]]) for p in speakers))

    # Mute, camera off and a shared screen show on the other pages.
    await ben.page.get_by_role("button", name="Mute microphone").click()
    await cleo.page.get_by_role("button", name="Turn camera off").click()
    await ana.page.evaluate("parley.hooks.fakeScreen = true")
    await ana.page.get_by_role("button", name="Share screen").click()
    await ana.page.get_by_role("button", name="Stop sharing").wait_for(timeout=MS)
    for page in (ben, cleo, dan):
        if page is not ben:
            await _wait_tile(page, ids["ben"], "ben muted", micMuted=True, video=True)
        if page is not cleo:
            await _wait_tile(page, ids["cleo"], "cleo's camera off", cameraOff=True, video=False)
        await _wait_tile(page, ids["ana"], "ana's screen", source="screen", video=True)
    await asyncio.gather(*(_decoding(p, f"{ids['ana']}/screen") for p in (ben, cleo, dan)))

    # Chat reaches every page, with the sender's name and a time.
    message = ben.page.get_by_role("textbox", name="Message")
    await message.fill("slides are up")
    await message.press("Enter")
    for page in (ana, cleo, dan):
        async def arrived(page: MeetingPage = page) -> bool:
            return any(m["name"] == "ben" and m["text"] == "slides are up" and m["time"]
                       for m in await page.chat_log())
        await wait_until(arrived, f"ben's message on {page.identity}'s page")

    ARTIFACTS.mkdir(exist_ok=True)
    await ana.page.screenshot(path=str(ARTIFACTS / "meeting-four-people.png"))
    await dan.page.set_viewport_size({"width": 390, "height": 800})
    await dan.page.screenshot(path=str(ARTIFACTS / "meeting-narrow.png"), full_page=True)

    # The moderator's tile menu, with the keyboard: move dan back to the audience.
    options = ana.page.get_by_role("button", name="Options for dan")
    await options.focus()
    await ana.page.keyboard.press("Enter")
    await ana.page.get_by_role("menu").wait_for(timeout=MS)
    await ana.page.keyboard.press("Escape")
    assert await ana.page.get_by_role("menu").count() == 0
    assert await options.evaluate("b => b === document.activeElement")
    await ana.page.keyboard.press("Enter")
    for _ in range(4):
        focused = await ana.page.evaluate("document.activeElement.textContent")
        if focused == "Move to audience":
            break
        await ana.page.keyboard.press("ArrowDown")
    assert focused == "Move to audience"
    await ana.page.keyboard.press("Enter")
    await dan.page.wait_for_function("!parley.publishing && !parley.grants.can_publish",
                                     timeout=MS)
    await dan.page.get_by_role("button", name="Request to speak").wait_for(timeout=MS)
    await wait_until(lambda: _gone(ben, ids["dan"]), "dan to leave the stage on ben's page")
    # Then remove cleo (the page asks to confirm).
    ana.page.once("dialog", _accept)
    await ana.page.get_by_role("button", name="Options for cleo").click()
    await ana.page.get_by_role("menuitem", name="Remove from meeting").click()
    await cleo.page.get_by_role("heading", name="You were removed from the meeting.").wait_for(
        timeout=MS)
    await asyncio.sleep(1.5)  # longer than the first reconnection delay
    assert await cleo.page.evaluate("[parley.state, parley.reconnects]") == ["removed", 0]
    await wait_until(lambda: _gone(ben, ids["cleo"]), "cleo to leave ben's page")

    for page in pages:
        assert page.errors == [] and await page.js_errors() == [], page.identity
        await page.close()


async def _accept(dialog: Dialog) -> None:
    await dialog.accept()


async def _gone(page: MeetingPage, participant: str) -> bool:
    return not await page.showing(participant)


async def test_page_resumes_after_its_socket_is_cut(browser: Browser,
                                                    loopback: NodeHarness) -> None:
    relay = TcpRelay(loopback.server.host, int(loopback.server.port or 0))
    await relay.start()
    try:
        ana = await MeetingPage.join(browser, relay.url, ROOM, "ana")
        ben = await MeetingPage.join(browser, loopback, ROOM, "ben")
        await asyncio.gather(ana.wait_decoding([ben.participant_id]),
                             ben.wait_decoding([ana.participant_id]))
        loop = asyncio.get_running_loop()
        cut_at = loop.time()
        relay.cut()
        await ana.page.wait_for_function("parley.state === 'reconnecting'", timeout=MS)
        assert "Reconnecting" in await ana.page.get_by_role("status").first.inner_text()
        await ana.wait_ready()
        again = await ana.page.evaluate("parley.participantId")
        assert again == ana.participant_id  # resumed: the same participant
        assert await ana.page.evaluate("parley.resumed") == 1
        await asyncio.gather(ben.wait_decoding([again]), ana.wait_decoding([ben.participant_id]))
        assert loop.time() - cut_at < 10.0
        states = [h["state"] for h in await ana.page.evaluate("parley.history")]
        assert states[-2:] == ["connecting", "joined"] or states[-2:] == ["reconnecting", "joined"]
        assert await ben.showing(ana.participant_id)
        for page in (ana, ben):
            assert page.errors == [] and await page.js_errors() == [], page.identity
            await page.close()
    finally:
        await relay.close()


async def test_page_rejoins_on_another_node_when_its_node_shuts_down(
        browser: Browser, start_node: StartNode) -> None:
    first = await loopback_node(start_node)
    second = await loopback_node(start_node)
    relay = TcpRelay(first.server.host, int(first.server.port or 0))
    await relay.start()
    camera = await Bot.join(second, ROOM, "camera", publish=True)
    try:
        page = await MeetingPage.join(browser, relay.url, ROOM, "ana")
        relay.target = (second.server.host, int(second.server.port or 0))
        await first.server.close()  # drains: the page is told server_shutdown (1001)
        await page.page.wait_for_function("parley.state === 'reconnecting'", timeout=MS)
        await page.wait_ready()
        await page.wait_decoding([camera.participant_id])
        sizes = await camera.video_sizes({await page.page.evaluate("parley.participantId")})
        assert all(w > 0 and h > 0 for w, h in sizes.values()), sizes
        assert page.errors == [] and await page.js_errors() == []
        await page.close()
    finally:
        await camera.leave()
        await relay.close()


async def test_development_node_offers_a_join_form_with_a_preview(browser: Browser,
                                                                  start_node: StartNode) -> None:
    dev = await start_node(make_config(development=True, sfu=LOOPBACK_SFU))
    production = await start_node(make_config(sfu=LOOPBACK_SFU))
    async with production.http.get(production.url("/api/dev-token?room=r&name=n")) as r:
        assert r.status == 404
    async with dev.http.get(dev.url("/api/dev-token")) as r:
        assert (r.status, await r.json()) == (200, {"development": True})
    async with dev.http.post(dev.url("/api/dev-token?room=r&name=Zoë Q")) as r:
        assert r.status == 200
        body = await r.json()
    claims = dev.node.verifier.verify(body["token"])
    assert (claims.name, claims.grants.room, claims.grants.room_admin) == ("Zoë Q", "r", True)
    assert claims.identity.startswith("zo-q-")

    closed = await MeetingPage.open(browser, production.url("/"), "nobody")
    await closed.page.get_by_text("open the link you were given").wait_for(timeout=MS)
    assert await closed.page.locator("#join-form").is_hidden()
    await closed.close()

    eve = await MeetingPage.open(browser, dev.url("/"), "eve")
    await eve.page.wait_for_function(
        "document.getElementById('preview').videoWidth > 0", timeout=MS)
    cameras = await eve.page.get_by_label("Camera", exact=True).locator("option").all_inner_texts()
    assert "fake_device_0" in cameras
    assert await eve.page.get_by_label("Microphone", exact=True).locator("option").count() >= 1
    await eve.page.get_by_label("Room").fill(ROOM)
    await eve.page.get_by_label("Your name").fill("Eve")
    await eve.page.get_by_role("button", name="Join").click()
    await eve.wait_ready()
    assert "token=" in eve.page.url
    assert await eve.tile("local") is not None and (await eve.tile("local") or {})["name"] == "Eve"
    # Another microphone, picked during the meeting, is sent instead.
    await eve.page.get_by_text("Camera and microphone", exact=True).click()
    await eve.page.get_by_label("Microphone", exact=True).select_option(label="Fake Audio Input 1")

    async def sending_it() -> bool:
        sent = await eve.page.evaluate("parley.outbound()")
        return any(o["source"] == "microphone" and o["label"] == "Fake Audio Input 1"
                   for o in sent)
    await wait_until(sending_it, "the other microphone to be sent")
    assert eve.errors == [] and await eve.js_errors() == []
    await eve.close()


async def test_refused_camera_and_microphone_are_explained(browser: Browser,
                                                          loopback: NodeHarness) -> None:
    page = await MeetingPage.join(browser, loopback, ROOM, "shy", devices=False)
    alert = page.page.get_by_role("alert").filter(has_text="denied")
    await alert.wait_for(timeout=MS)
    assert "site settings" in await alert.inner_text()
    await _wait_tile(page, "local", "own tile without media", micMuted=True, cameraOff=True)
    other = await MeetingPage.join(browser, loopback, ROOM, "bold")
    await _wait_tile(other, page.participant_id, "shy's tile without video", video=False)
    await page.wait_decoding([other.participant_id])
    # Access granted afterwards: trying again publishes both.
    await page.context.grant_permissions(["camera", "microphone"])
    await page.page.get_by_role("button", name="Try the camera and microphone again").click()
    await _wait_tile(page, "local", "own camera", micMuted=False, cameraOff=False, video=True)
    await other.wait_decoding([page.participant_id])
    await _wait_tile(other, page.participant_id, "shy's microphone", micMuted=False)
    assert await alert.is_hidden()
    for p in (page, other):
        assert p.errors == [], p.identity
        await p.close()


async def test_video_held_back_for_bandwidth_is_shown_on_the_tile(browser: Browser,
                                                                  start_node: StartNode) -> None:
    # No link can carry what this node asks for video, so every video is paused.
    node = await start_node(make_config(sfu=LOOPBACK_SFU, bandwidth=BandwidthConfig(
        pause_below=5_000_000, resume_above=6_000_000, max_renditions=0)))
    camera = await Bot.join(node, ROOM, "camera", publish=True, subscribe=False)
    page = await MeetingPage.join(browser, node, ROOM, "viewer", role="listener")
    try:
        await _wait_tile(page, camera.participant_id, "video paused for bandwidth",
                         paused=True, video=True)
        badge = page.page.locator(f'.tile[data-participant="{camera.participant_id}"] .badge')
        assert await badge.inner_text() == "Video paused to save bandwidth"
        assert page.errors == []
    finally:
        await camera.leave()
        await page.close()


async def test_grid_layout_gives_one_to_sixteen_tiles_the_most_room(browser: Browser,
                                                                    loopback: NodeHarness) -> None:
    page = await MeetingPage.open(browser, loopback.url("/"), "layout")
    columns = await page.page.evaluate(
        "import('/static/grid.js').then(m => [1, 2, 3, 4, 5, 6, 9, 10, 16]"
        ".map(n => m.fit(n, 1200, 675).cols))")
    assert columns == [1, 2, 2, 2, 3, 3, 3, 4, 4]
    tall = await page.page.evaluate("import('/static/grid.js').then(m => m.fit(4, 400, 1000))")
    assert tall["cols"] == 1 and tall["tileWidth"] == 400
    await page.close()
