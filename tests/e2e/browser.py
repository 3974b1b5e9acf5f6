"""Browser tests: Debian's Chromium driven by Playwright, on the meeting page of a real node.

Chromium runs with a fake camera and microphone and keeps ICE on loopback
(the node's SFU gathers on 127.0.0.1 only). Each page has its own browser
context, which is granted camera and microphone access (or not, to test a
refusal). Without Chromium or Playwright
the tests are skipped locally and fail in CI (``PARLEY_CI=1``): CI never skips.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack

from client.client import ParleyClient
from sfu.config import SfuConfig
from tests.conftest import NodeHarness, StartNode, make_config, token

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Page

CHROMIUM_ARGS = (
    "--use-fake-device-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)

# Chromium's peer connections, recorded before the page's own scripts run.
RECORD_PCS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();
"""
STEP = 15.0
"""Upper bound, in seconds, of any single wait in a browser test."""


def unavailable(reason: str) -> NoReturn:
    """Skip the test locally; fail it in CI, which never skips."""
    if os.environ.get("PARLEY_CI") == "1":
        pytest.fail(f"{reason}: browser tests must run in CI (PARLEY_CI=1)")
    pytest.skip(reason)


@asynccontextmanager
async def launch_chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        unavailable("chromium is not installed")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("playwright is not installed")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable,
                                                   args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            await browser.close()


async def loopback_node(start_node: StartNode) -> NodeHarness:
    """A node whose SFU gathers ICE candidates on 127.0.0.1 only."""
    return await start_node(make_config(sfu=SfuConfig(ice_addresses=("127.0.0.1",))))


async def wait_until(probe: Callable[[], Awaitable[Any]], what: str,
                     timeout: float = STEP) -> Any:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


READY = ("window.parley && (parley.ready"
         " || ['failed', 'removed', 'ended'].includes(parley.state))")
"""True once the page joined (and publishes, if allowed to) or gave up."""


class ParleyPage:
    """The meeting page's test API (``window.parley``), whatever drives the browser:
    a subclass provides ``evaluate``."""

    identity: str
    participant_id: str

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        raise NotImplementedError

    async def wait_ready(self) -> None:
        """Joined, and publishing when allowed to."""
        await wait_until(lambda: self.evaluate(READY), f"{self.identity} to join")
        assert await self.evaluate("parley.state") == "joined", await self.js_errors()

    async def frames(self) -> dict[str, int]:
        """framesDecoded of the video received from each remote participant."""
        result: dict[str, int] = await self.evaluate("parley.stats()")
        return result

    async def received(self) -> dict[str, dict[str, Any]]:
        """track id -> {participant, frames, width, height} of each received video."""
        result: dict[str, dict[str, Any]] = await self.evaluate("parley.received()")
        return result

    async def js_errors(self) -> list[str]:
        """Errors the page recorded itself (uncaught, server errors)."""
        result: list[str] = await self.evaluate("parley.errors")
        return result

    async def wait_decoding(self, participants: list[str]) -> None:
        """Video from each participant is being decoded: frames > 0, then more ~2 s later."""
        async def all_started() -> dict[str, int] | None:
            frames = await self.frames()
            return frames if all(frames.get(p, 0) > 0 for p in participants) else None

        first = await wait_until(all_started, f"{self.identity} to decode {participants}")
        await asyncio.sleep(2.0)
        second = await self.frames()
        for p in participants:
            assert second.get(p, 0) > first[p], (
                f"{self.identity}: video from {p} stopped at {first[p]} frames ({second})")


class MeetingPage(ParleyPage):
    """One tab on the meeting page, with every page error and console error it reported."""

    def __init__(self, page: Page, identity: str) -> None:
        self.page = page
        self.context = page.context
        self.identity = identity
        self.errors: list[str] = []
        self.participant_id = ""
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    async def evaluate(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    @classmethod
    async def open(cls, browser: Browser, url: str, identity: str, *,
                   devices: bool = True) -> MeetingPage:
        """A new tab in its own context; ``devices``: camera and microphone access granted."""
        context = await browser.new_context(
            permissions=["camera", "microphone"] if devices else [],
            viewport={"width": 1280, "height": 720})
        meeting = cls(await context.new_page(), identity)
        await meeting.page.goto(url)
        return meeting

    @classmethod
    async def join(cls, browser: Browser, node: NodeHarness | str, room: str,
                   identity: str, *, role: str = "speaker", devices: bool = True) -> MeetingPage:
        """Open the page with a fresh token; returns once it joined (and publishes, if allowed).

        ``node`` is a node, or the base URL to open the page on (a relay in front of one).
        """
        base = node if isinstance(node, str) else node.url("/")
        url = base.rstrip("/") + "/?token=" + token(room, identity, role=role)
        meeting = await cls.open(browser, url, identity, devices=devices)
        await meeting.wait_ready()
        meeting.participant_id = await meeting.page.evaluate("parley.participantId")
        return meeting

    async def wait_ready(self) -> None:
        """Joined, and publishing when allowed to."""
        await self.page.wait_for_function(READY, timeout=STEP * 1000)
        assert await self.page.evaluate("parley.state") == "joined", await self.js_errors()

    async def tiles(self) -> list[dict[str, Any]]:
        """What each tile of the grid shows (``parley.tiles()``)."""
        result: list[dict[str, Any]] = await self.page.evaluate("parley.tiles()")
        return result

    async def tile(self, participant: str, source: str = "camera") -> dict[str, Any] | None:
        return next((t for t in await self.tiles()
                     if t["participant"] == participant and t["source"] == source), None)

    async def chat_log(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.page.evaluate("parley.chatLog()")
        return result

    async def close(self) -> None:
        await self.context.close()

    async def showing(self, participant: str) -> bool:
        """Whether the participant has a tile on the page."""
        count = await self.page.locator(f'.tile[data-participant="{participant}"]').count()
        return count > 0

    async def leave(self) -> None:
        """Leave with the keyboard (Leave button), then close the tab."""
        button = self.page.get_by_role("button", name="Leave")
        await button.focus()
        await self.page.keyboard.press("Enter")
        await self.page.wait_for_function("parley.state === 'closed'", timeout=STEP * 1000)
        await self.close()


class Bot:
    """An aiortc participant (client/client.py) that publishes or decodes video."""

    def __init__(self, client: ParleyClient) -> None:
        self.client = client

    @classmethod
    async def join(cls, node: NodeHarness, room: str, identity: str, *,
                   publish: bool = False, subscribe: bool = True) -> Bot:
        client = ParleyClient(node.url("/"), token(
            room, identity, grants={"can_subscribe": subscribe}))
        await client.connect()
        if publish:
            await client.publish(VideoStreamTrack(), sources=["camera"])
        return cls(client)

    @property
    def participant_id(self) -> str:
        return self.client.participant_id

    async def video_sizes(self, participants: set[str]) -> dict[str, tuple[int, int]]:
        """Decode one frame of each participant's video; returns (width, height) by id."""
        sizes: dict[str, tuple[int, int]] = {}
        async with asyncio.timeout(STEP):
            while set(sizes) < participants:
                remote = await self.client.next_track(timeout=STEP)
                if remote.kind != "video" or remote.participant not in participants:
                    continue
                try:
                    frame = await remote.track.recv()
                except MediaStreamError:
                    continue
                sizes[remote.participant] = (frame.width, frame.height)
        return sizes

    async def leave(self) -> None:
        await self.client.leave()


class TcpRelay:
    """A TCP relay on loopback in front of a node; ``cut()`` drops every connection at once.

    Pages opened through it reach the node's HTTP and WebSocket through the relay
    (media still flows directly), so cutting it is a network failure for the
    signalling socket only: both ends see the TCP connection die without a close frame.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        loop = asyncio.get_running_loop()
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = loop.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()
            self._writers.discard(sink)

    def cut(self) -> None:
        """Abort every relayed connection, both sides, without a FIN or a close frame."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
