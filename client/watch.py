"""Watching media come back after a failure: for tests and benchmarks of fail-over.

A :class:`MediaWatch` is armed on a client (``ParleyClient(decode=False)``) when the
failure happens. It reports the moment the client, on a subscriber connection opened
after that (the client reconnected), has received ``frames`` new video frames from each
of the given publishers (participant ids, kept across a resumed session).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from client.client import ParleyClient


class MediaWatch:
    def __init__(self, client: ParleyClient, publishers: Iterable[str], *,
                 frames: int = 5, same_connection: bool = False) -> None:
        """``same_connection``: count frames on the current subscriber connection too
        (a failure the client should ride out without reconnecting)."""
        self.client = client
        self.publishers = frozenset(publishers)
        self.frames = frames
        self.armed_at = time.perf_counter()
        self._old = None if same_connection else client.subscriber
        self._base: dict[str, int] | None = None
        if same_connection:
            self._base = dict(client.frame_counts)

    def back(self) -> bool:
        """Media is flowing again from every publisher (new frames on a new connection)."""
        client = self.client
        if client.subscriber is None or client.subscriber is self._old:
            return False
        if self._base is None:  # the new connection just appeared: nothing counted on it yet
            self._base = dict(client.frame_counts)
            return False
        fresh = {r.participant for r in list(client.remote.values())
                 if r.kind == "video"
                 and client.frame_counts.get(r.mid, 0) - self._base.get(r.mid, 0) >= self.frames}
        return self.publishers <= fresh

    async def wait(self, timeout: float, poll: float = 0.02) -> float:
        """Seconds from arming to media back; ``TimeoutError`` after ``timeout``."""
        async with asyncio.timeout(timeout):
            while not self.back():  # noqa: ASYNC110 (counters, not events, to poll)
                await asyncio.sleep(poll)
        return time.perf_counter() - self.armed_at
