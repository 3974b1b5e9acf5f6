"""A node whose event loop is overloaded keeps its media connections (RFC 7675 consent).

The node's peer connection lives on the test's event loop, set up as the SFU sets
up its own (``keep_consent_fresh``); the client, standing in for a browser, runs on
an event loop of its own in another thread and sends pre-encoded VP8 at about
250 packets/s. For 40 s the node's loop is kept busy (every turn of the loop
costs 8 ms, so it reads at most ~125 datagrams/s from the connection's socket,
and media queues up in the socket ahead of consent answers or is dropped by the
kernel) and is blocked outright three times for 3 s. aioice's own consent loop
(one try, 0.5 s timeout, six misses) closes the node's connection about 30 s
in; with retransmitted checks and the 30 s rule it survives and media flows once
the load ends. The timings are RFC 7675's own (checks every 4-6 s, 30 s).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from client.counting import VideoFrameCounter
from client.hooks import replace_jitter_buffer
from client.media import EncodedTrack, encode_video
from sfu.hooks import restrict_host_addresses
from sfu.hooks_consent import keep_consent_fresh

T = TypeVar("T")

LOAD_SECONDS = 40.0
BUSY_TURN = 0.008
STALLS_AT = (5.0, 17.0, 29.0)
STALL = 3.0


class BrowserStandIn:
    """An aiortc peer on its own event loop and thread (a browser's process)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.pc: RTCPeerConnection | None = None

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_run(fn), self.loop)
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        if self.pc is not None:
            await self.call(self.pc.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 5)
        self.loop.close()


async def _run(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


async def _load(stalls: list[float]) -> None:
    """Keep this event loop busy for LOAD_SECONDS, with three 3 s stalls."""
    start = time.monotonic()
    pending = list(STALLS_AT)
    while (elapsed := time.monotonic() - start) < LOAD_SECONDS:
        if pending and elapsed >= pending[0]:
            pending.pop(0)
            time.sleep(STALL)  # noqa: ASYNC251 - the whole node stops (a long GC, a burst)
            stalls.append(elapsed)
        else:
            time.sleep(BUSY_TURN)  # noqa: ASYNC251 - blocking the loop is the point
        await asyncio.sleep(0)


@pytest.fixture
def loopback() -> Any:
    restrict_host_addresses(("127.0.0.1",))
    yield
    restrict_host_addresses(())


@pytest.mark.timeout(150)
@pytest.mark.usefixtures("loopback")
async def test_a_loaded_node_keeps_its_connection_and_media_flows_after() -> None:
    clip = encode_video(seconds=1.0, bitrate=2_500_000)
    frames: list[float] = []
    node = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    keep_consent_fresh(node)
    states: list[str] = []
    node.on("connectionstatechange", lambda: states.append(node.connectionState))

    @node.on("track")
    def on_track(track: Any) -> None:
        receiver = next(t.receiver for t in node.getTransceivers() if t.receiver.track is track)
        replace_jitter_buffer(receiver, VideoFrameCounter(lambda key: frames.append(
            time.monotonic())))

    browser = BrowserStandIn()
    try:
        async def offer() -> RTCSessionDescription:
            pc = browser.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            keep_consent_fresh(pc)  # browsers retransmit consent checks
            pc.addTrack(EncodedTrack(clip))
            await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription

        await node.setRemoteDescription(await browser.call(offer))
        await node.setLocalDescription(await node.createAnswer())
        answer = node.localDescription
        assert browser.pc is not None
        client_pc = browser.pc
        await browser.call(lambda: client_pc.setRemoteDescription(answer))
        while len(frames) < 30:
            await asyncio.sleep(0.1)
        assert node.connectionState == "connected"

        stalls: list[float] = []
        await _load(stalls)
        assert len(stalls) == 3
        assert "closed" not in states and "failed" not in states, states
        assert node.connectionState == "connected"

        before = len(frames)
        await asyncio.sleep(3.0)
        after = len(frames) - before
        assert after >= 45, f"only {after} frames in the 3 s after the load"
        assert client_pc.connectionState == "connected"
    finally:
        await node.close()
        await browser.close()
