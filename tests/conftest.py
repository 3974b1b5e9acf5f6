"""Shared fixtures: a real node on loopback and real WebSocket clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from conference.config import RoomConfig
from signaling.app import create_app
from signaling.appkeys import NODE
from signaling.auth import mint_token
from signaling.config import AuthConfig, NodeConfig, SignalingConfig
from signaling.node import Node

KEY, SECRET = "k1", "s1-secret-for-tests-only-000000000"


def make_config(**sections: Any) -> NodeConfig:
    """A NodeConfig for tests; keyword arguments replace whole sections or top fields."""
    config = NodeConfig(auth=AuthConfig(keys={KEY: SECRET}))
    return replace(config, **sections)


def token(room: str = "r1", identity: str = "alice", **kw: Any) -> str:
    kw.setdefault("role", "speaker")
    return mint_token(key=KEY, secret=SECRET, room=room, identity=identity, **kw)


class Client:
    """A real WebSocket client speaking the protocol, with helpers for tests."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = 0

    async def send(self, **msg: Any) -> str:
        self._ids += 1
        msg.setdefault("id", str(self._ids))
        await self.ws.send_json(msg)
        return str(msg["id"])

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"expected a text message, got {msg.type} {msg.data!r}")
        data: dict[str, Any] = msg.json()
        return data

    async def expect(self, mtype: str, timeout: float = 5.0) -> dict[str, Any]:
        """Receive until a message of ``mtype`` arrives (skipping others)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await self.recv(max(0.01, deadline - loop.time()))
            if msg["type"] == mtype:
                return msg

    async def join(self, tok: str, **extra: Any) -> dict[str, Any]:
        """Join; signalling-only (``media: false``) unless the test asks for media."""
        extra.setdefault("media", False)
        await self.send(type="join", token=tok, **extra)
        return await self.expect("joined")

    async def closed(self, timeout: float = 5.0) -> aiohttp.WSMessage:
        """Read until the socket closes; returns the close message."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), max(0.01, deadline - loop.time()))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING):
                return msg


class NodeHarness:
    def __init__(self, server: TestServer, http: aiohttp.ClientSession) -> None:
        self.server = server
        self.http = http
        self.clients: list[Client] = []

    @property
    def node(self) -> Node:
        return self.server.app[NODE]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def connect(self, path: str = "/rtc", **kw: Any) -> Client:
        ws = await self.http.ws_connect(self.url(path), **kw)
        client = Client(ws)
        self.clients.append(client)
        return client

    async def joined(self, room: str = "r1", identity: str = "alice", **kw: Any) -> Client:
        client = await self.connect()
        await client.join(token(room, identity, **kw))
        return client


StartNode = Callable[..., Awaitable[NodeHarness]]


@pytest.fixture
async def start_node() -> AsyncIterator[StartNode]:
    """Start real nodes on loopback: ``await start_node(rooms=RoomConfig(...))``."""
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []
    harnesses: list[NodeHarness] = []

    async def start(config: NodeConfig | None = None, **sections: Any) -> NodeHarness:
        server = TestServer(create_app(config or make_config(**sections)), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        http = aiohttp.ClientSession()
        sessions.append(http)
        harness = NodeHarness(server, http)
        harnesses.append(harness)
        return harness

    yield start
    for harness in harnesses:
        for client in harness.clients:
            if not client.ws.closed:
                await client.ws.close()
    for http in sessions:
        await http.close()
    for server in servers:
        await server.close()


@pytest.fixture
async def node(start_node: StartNode) -> NodeHarness:
    """One node with default test config."""
    return await start_node()


__all__ = ["KEY", "SECRET", "Client", "NodeHarness", "RoomConfig", "SignalingConfig",
           "make_config", "token"]
