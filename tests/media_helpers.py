"""Helpers for tests with real aiortc peers through a real node."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiortc.mediastreams import MediaStreamError

from client.client import ParleyClient, RemoteTrack
from sfu.config import SfuConfig
from tests.conftest import NodeHarness, StartNode, make_config, token

LOOPBACK_SFU = SfuConfig(ice_addresses=("127.0.0.1",))


async def media_node(start_node: StartNode, **sections: Any) -> NodeHarness:
    sections.setdefault("sfu", LOOPBACK_SFU)
    return await start_node(make_config(**sections))


@dataclass
class Received:
    """Frames a client decoded, per (participant, kind)."""

    frames: dict[tuple[str, str], int] = field(default_factory=dict)
    sizes: dict[str, set[tuple[int, int]]] = field(default_factory=dict)
    first_frame_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def count(self, participant: str, kind: str = "video") -> int:
        return self.frames.get((participant, kind), 0)


class Peer:
    """A ParleyClient whose remote tracks are read (decoded) in background tasks."""

    def __init__(self, client: ParleyClient) -> None:
        self.client = client
        self.received = Received()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump = asyncio.get_running_loop().create_task(self._take_tracks())

    async def _take_tracks(self) -> None:
        while True:
            remote = await self.client.tracks.get()
            task = asyncio.get_running_loop().create_task(self._read(remote))
            self._tasks.add(task)

    async def _read(self, remote: RemoteTrack) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await remote.track.recv()
            except MediaStreamError:
                return
            info = self.client.remote.get(remote.mid, remote)
            key = (info.participant, remote.kind)
            self.received.frames[key] = self.received.frames.get(key, 0) + 1
            self.received.first_frame_at.setdefault(key, loop.time())
            if remote.kind == "video":
                self.received.sizes.setdefault(info.participant, set()).add(
                    (frame.width, frame.height))

    async def wait_frames(self, participant: str, n: int, kind: str = "video",
                          timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.received.count(participant, kind) < n:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._pump.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(self._pump, *self._tasks, return_exceptions=True)
        await self.client.close()


@contextlib.asynccontextmanager
async def peers(node: NodeHarness, room: str, *identities: str,
                **mint: Any) -> AsyncIterator[list[Peer]]:
    out: list[Peer] = []
    try:
        for identity in identities:
            client = ParleyClient(node.url("/"), token(room, identity, **mint))
            await client.connect()
            out.append(Peer(client))
        yield out
    finally:
        for peer in out:
            await peer.close()
