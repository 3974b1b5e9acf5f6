"""Server pings, and removal of clients that stop answering (heartbeat timeout)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.conftest import Client, NodeHarness, SignalingConfig, StartNode, token

FAST = SignalingConfig(heartbeat_interval=0.2, heartbeat_timeout=0.6, resume_window=0.5)
MEDIA = {"offer", "answer", "candidate", "active-speakers", "connection-failed"}


async def fast_node(start_node: StartNode) -> NodeHarness:
    return await start_node(signaling=FAST)


async def listen(client: Client, seconds: float) -> list[aiohttp.WSMessage]:
    """Read (and so answer pings, if autoping is on) for ``seconds``; what arrived."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen: list[aiohttp.WSMessage] = []
    while (left := deadline - loop.time()) > 0:
        try:
            # Not receive(timeout=...): aiohttp restarts that timeout after every ping.
            msg = await asyncio.wait_for(client.ws.receive(), left)
        except TimeoutError:
            break
        if msg.type == aiohttp.WSMsgType.TEXT and msg.json()["type"] in MEDIA:
            continue
        seen.append(msg)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    return seen


def texts(messages: list[aiohttp.WSMessage]) -> list[dict[str, Any]]:
    """The text messages, without the periodic ``resume-token``."""
    return [m.json() for m in messages if m.type == aiohttp.WSMsgType.TEXT
            and m.json()["type"] != "resume-token"]


async def test_silent_client_is_removed_with_heartbeat_timeout(start_node: StartNode) -> None:
    h = await fast_node(start_node)
    peer = await h.joined("r1", "peer")
    silent = await h.connect(autoping=False)
    await silent.join(token("r1", "silent"))
    # The silent client now neither reads nor answers pings; the peer keeps reading.
    started = asyncio.get_running_loop().time()
    held = await peer.expect("participant-updated", timeout=3.0)
    assert (held["participant"]["identity"], held["participant"]["reconnecting"]) == \
        ("silent", True)
    assert asyncio.get_running_loop().time() - started >= 0.5  # not before the timeout
    # held for the resume window, then it leaves
    left = await peer.expect("participant-left", timeout=3.0)
    assert (left["identity"], left["reason"]) == ("silent", "heartbeat_timeout")
    assert asyncio.get_running_loop().time() - started >= 1.0
    close = await silent.closed()
    assert close.type == aiohttp.WSMsgType.CLOSE and close.data == 4004
    assert h.node.rooms.get("r1").by_identity("silent") is None


async def test_reading_client_stays_connected_past_the_timeout(start_node: StartNode) -> None:
    h = await fast_node(start_node)
    alice = await h.joined("r1", "alice")
    bob = await h.joined("r1", "bob")
    seen_a, seen_b = await asyncio.gather(listen(alice, 1.5), listen(bob, 1.5))
    assert [m["type"] for m in texts(seen_a)] == ["participant-joined"]
    assert texts(seen_b) == []
    assert all(m.type == aiohttp.WSMsgType.TEXT for m in seen_a + seen_b)
    await bob.send(type="ping", id="p")
    assert (await bob.expect("pong"))["id"] == "p"
    assert len(h.node.rooms.get("r1")) == 2


async def test_server_sends_websocket_pings(start_node: StartNode) -> None:
    h = await fast_node(start_node)
    client = await h.connect(autoping=False)
    await client.join(token("r1", "alice"))
    pings = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5  # over twice heartbeat_timeout: answering pings keeps it alive
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await client.ws.receive(timeout=left)
        except TimeoutError:
            break
        assert msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.TEXT), msg
        if msg.type == aiohttp.WSMsgType.PING:
            pings += 1
            await client.ws.pong(msg.data)
    assert pings >= 4  # one every 0.2 s
    await client.send(type="ping", id="still-here")
    while (msg := await client.ws.receive(timeout=5)).type == aiohttp.WSMsgType.PING:
        await client.ws.pong(msg.data)
    while msg.json()["type"] in MEDIA:
        msg = await client.ws.receive(timeout=5)
    assert (msg.json()["type"], msg.json()["id"]) == ("pong", "still-here")
