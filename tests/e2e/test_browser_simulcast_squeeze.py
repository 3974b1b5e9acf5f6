"""One squeezed subscriber moves down a simulcast layer; the others keep their quality.

The meeting page publishes its camera as three encodings, in Chromium and in Firefox ESR
(tests/e2e/firefox.py). Two aiortc subscribers receive
it through UDP relays (tests/netimpair.py): one clean, one whose downlink is limited to
300 kbit/s by a token bucket (no other loss than the bucket's overflow). The squeezed
one must drop to a lower layer within seconds and come back up once the squeeze ends;
the clean one stays on the top layer and its received bitrate does not fall by more
than 10 % from what it was before the squeeze, because a simulcast publisher is not
capped by its slowest subscriber.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conference.ids import ParticipantId, RoomName
from sfu.bandwidth import BandwidthConfig
from sfu.config import SfuConfig
from sfu.producer import Producer
from tests.conftest import NodeHarness, StartNode, make_config, token
from tests.e2e.browser import MeetingPage, ParleyPage, launch_chromium, wait_until
from tests.e2e.firefox import FirefoxPage
from tests.netimpair import Impairment, RelayedClient, received_bps, steady_bps

ROOM = "squeeze-simulcast"
SQUEEZE = Impairment(rate_bps=300_000)
"""At most: 60 % of what the clean subscriber receives when that is less."""


@pytest.fixture(params=["chromium", "firefox"])
async def publisher(request: pytest.FixtureRequest,
                    start_node: StartNode) -> AsyncIterator[tuple[NodeHarness, ParleyPage]]:
    """A node, and the meeting page publishing its camera in Chromium or in Firefox."""
    node = await start_node(make_config(sfu=SfuConfig(ice_addresses=("127.0.0.1",)),
                                        bandwidth=BandwidthConfig(max_renditions=0)))
    if request.param == "firefox":
        firefox = await FirefoxPage.join(node, ROOM, "camera")
        try:
            yield node, firefox
        finally:
            await firefox.close()
        return
    async with launch_chromium() as chromium:
        page = await MeetingPage.join(chromium, node, ROOM, "camera")
        try:
            yield node, page
            assert page.errors == []
        finally:
            await page.close()


def camera(node: NodeHarness) -> Producer | None:
    room = node.node.rooms.get(RoomName(ROOM))
    if room is None or room.media is None:
        return None
    router: Any = room.media.router
    return next((p for p in router.producers.values() if p.kind == "video"), None)


def consumer_of(node: NodeHarness, client: RelayedClient, producer: Producer) -> Any:
    room = node.node.rooms.get(RoomName(ROOM))
    assert room is not None and room.media is not None
    media: Any = room.media
    member = media.members[ParticipantId(client.participant_id)]
    return next(c for c in member.consumers.values() if c.producer_id == producer.id)


async def longest_gap(client: RelayedClient, seconds: float) -> float:
    """Longest time, in seconds, without a new video frame at ``client`` (sampled every
    20 ms for ``seconds``)."""
    last_count, last_at, longest = client.frames_of("video"), time.monotonic(), 0.0
    end = last_at + seconds
    while time.monotonic() < end:
        await asyncio.sleep(0.02)
        count, now = client.frames_of("video"), time.monotonic()
        if count != last_count:
            longest, last_count, last_at = max(longest, now - last_at), count, now
    return max(longest, time.monotonic() - last_at)


async def _value(value: Any) -> Any:
    return value


@pytest.mark.timeout(240)
async def test_a_squeezed_subscriber_drops_a_layer_and_a_clean_one_keeps_its_bitrate(
        publisher: tuple[NodeHarness, ParleyPage]) -> None:
    node, page = publisher
    # (strict: the node learns no address of theirs but the relay's, so their media
    # cannot take a direct path around the relay)
    clean = RelayedClient(node.url("/"), token(ROOM, "clean", role="listener"), decode=False,
                          strict=True)
    squeezed = RelayedClient(node.url("/"), token(ROOM, "squeezed", role="listener"),
                             decode=False, strict=True)
    try:
        producer = await wait_until(lambda: _value(camera(node)), "the camera's producer")
        await clean.connect()
        await squeezed.connect()
        async def both_on_top() -> bool:
            ready = [c for c in producer.consumers if c.switch is not None]
            return len(ready) == 2 and all(c.switch.current == 2 for c in ready) \
                and all(layer.active(time.perf_counter()) for layer in producer.layers)

        await wait_until(both_on_top, "both subscribers on the top layer", timeout=45)
        clean_consumer = consumer_of(node, clean, producer)
        squeezed_consumer = consumer_of(node, squeezed, producer)
        baseline = await steady_bps(clean)
        # (a busy machine's browser encodes less: the squeeze stays under what the top
        # layer needs, so the squeezed subscriber must move down)
        assert baseline > 250_000, baseline
        squeeze = Impairment(rate_bps=min(SQUEEZE.rate_bps or 0, 0.6 * baseline))
        squeezed.impair(squeeze)
        started = time.monotonic()
        gaps = asyncio.create_task(longest_gap(squeezed, 8.0))
        await wait_until(lambda: _value(squeezed_consumer.switch.current < 2),
                         "the squeezed subscriber to move down a layer", timeout=15)
        moved_after = time.monotonic() - started
        during = await received_bps(clean, 4.0)
        assert clean_consumer.switch.current == 2
        # (no fall; the browser's encoders may still be ramping up, so it may rise)
        assert during >= 0.9 * baseline, (baseline, during)
        # the publisher: not capped by its subscribers (only its own congested uplink may)
        own = producer.publisher_estimate()
        assert producer.link.target == BandwidthConfig().max_bitrate or (
            own is not None and producer.link.target <= max(own, BandwidthConfig().floor_bitrate)
        ), (producer.link.target, own)
        # (it may be paused for a few seconds meanwhile: the loss of the squeeze's first
        # seconds is smoothed, so the estimate overshoots down before it recovers)
        assert squeezed_consumer.switch.current < 2
        longest = await gaps
        assert longest < 2.0, longest  # (the first second of the squeeze loses much)

        squeezed.impair(Impairment())
        await wait_until(lambda: _value(squeezed_consumer.switch.current == 2),
                         "the squeezed subscriber to come back to the top layer", timeout=60)
        print(f"moved down after {moved_after:.1f} s; longest gap between the squeezed "
              f"subscriber's frames {longest:.2f} s; clean {baseline:.0f} -> {during:.0f} bit/s")
        assert await page.js_errors() == []
    finally:
        await clean.close()
        await squeezed.close()
