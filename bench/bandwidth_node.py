"""The bandwidth suite's node: served from the benchmark's own process, so its Router
can be reached and timed directly; and lookups of what it holds."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from bench.procs import BenchError, free_port
from conference.ids import RoomName
from sfu.bandwidth import BandwidthConfig
from sfu.config import SfuConfig
from sfu.router import Router
from signaling.app import create_app
from signaling.appkeys import NODE
from signaling.config import AuthConfig, NodeConfig
from signaling.node import Node

KEY = "bandwidth-bench"
SECRET = "bandwidth-bench-secret-0123456789abcdef"


def node_config(bandwidth: BandwidthConfig | None = None) -> NodeConfig:
    return NodeConfig(auth=AuthConfig(keys={KEY: SECRET}),
                      sfu=SfuConfig(ice_addresses=("127.0.0.1",)),
                      bandwidth=bandwidth or BandwidthConfig())


@contextlib.asynccontextmanager
async def local_node(config: NodeConfig) -> AsyncIterator[tuple[str, Node]]:
    """A node served from this process on 127.0.0.1; yields its URL and the Node."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}", app[NODE]
    finally:
        await runner.cleanup()


def room_router(node: Node, room: str) -> Router | None:
    found = node.rooms.get(RoomName(room))
    return found.media.router if found is not None and found.media is not None else None


async def until(probe: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def room_member(node: Node, room: str, identity: str) -> Any:
    found = node.rooms.get(RoomName(room))
    if found is None or found.media is None:
        return None
    return next((m for m in found.media.members.values()
                 if m.participant.identity == identity), None)
