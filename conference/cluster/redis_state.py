"""Room state in Redis: one JSON value per room, written by the room's owner.

Saves are queued per room and written by one task (``room-state-writer``);
a later save of the same room replaces one not yet written, so the newest
state always wins and a Redis outage only delays writes. The writer rewrites
every room living on this node every quarter of the TTL (so an active room's
state never expires) and at once after the node re-registers (so a Redis that
lost its data gets it back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis

from conference.cluster.client import RedisClient
from conference.cluster.keys import state_key
from conference.cluster.state import RoomState, RoomStateHandle
from conference.cluster.waker import Waker, wait_set
from conference.errors import ConferenceError
from conference.ids import RoomName

log = logging.getLogger("parley.cluster")

_RETRY_DELAY = 0.5
_CLOSE_DEADLINE = 2.0


class RedisRoomStateStore:
    """``start()`` starts the writer; ``close()`` flushes (briefly) and stops it."""

    def __init__(self, client: RedisClient, ttl: float) -> None:
        self._client = client
        self._ttl_ms = int(ttl * 1000)
        self._refresh = max(1.0, ttl / 4)
        self._pending: dict[RoomName, RoomState] = {}
        self._live: dict[RoomName, RoomStateHandle] = {}
        self._wake = Waker()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="room-state-writer")

    async def load(self, room: RoomName) -> RoomState:
        pending = self._pending.get(room)
        if pending is not None:  # not written yet: ours is newer than Redis's
            return pending

        async def read(r: Redis) -> str | None:
            value = await r.get(state_key(room))
            return None if value is None else str(value)

        text = await self._client.call("state_load", read)
        return RoomState() if text is None else RoomState.decode(text).pruned()

    def save(self, room: RoomName, state: RoomState) -> None:
        self._pending[room] = state
        self._idle.clear()
        self._wake.wake()

    def opened(self, handle: RoomStateHandle) -> None:
        self._live[handle.room] = handle

    def closed(self, room: RoomName) -> None:
        self._live.pop(room, None)

    def drop(self, room: RoomName) -> None:
        """Another node owns the room now: write nothing more of this node's copy."""
        self._live.pop(room, None)
        self._pending.pop(room, None)

    def resync(self) -> None:
        """Rewrite the state of every room on this node (after Redis came back)."""
        self._queue_live()
        if self._pending:
            self._idle.clear()
            self._wake.wake()

    def _queue_live(self) -> None:
        for room, handle in self._live.items():
            self._pending.setdefault(room, handle.state.pruned())

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.sleep(self._refresh)
            if not self._pending:
                self._queue_live()  # the periodic refresh of the TTL
            while self._pending and not self._task_cancelled():
                room, state = next(iter(self._pending.items()))
                if not await self._write(room, state):
                    await asyncio.sleep(_RETRY_DELAY)
                    continue
                if self._pending.get(room) is state:
                    del self._pending[room]
            self._idle.set()

    @staticmethod
    def _task_cancelled() -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    async def _write(self, room: RoomName, state: RoomState) -> bool:
        async def write(r: Redis) -> object:
            if state.empty:
                return await r.delete(state_key(room))
            return await r.set(state_key(room), state.encode(), px=self._ttl_ms)

        try:
            await self._client.call("state_write", write, retry_for=0)
        except ConferenceError:
            return False
        return True

    async def flush(self, timeout: float = _CLOSE_DEADLINE) -> bool:
        """Wait until every save is written; ``False`` if ``timeout`` passed first."""
        return await wait_set(self._idle, timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            if self._pending and not await self.flush():
                log.warning("room state not written before close",
                            extra={"rooms": len(self._pending)})
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
