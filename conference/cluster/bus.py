"""The bus: small JSON frames between nodes, one Redis pub/sub inbox channel per node.

Each node subscribes to ``parley:bus:{node}`` and publishes to the others'
channels. Pub/sub rather than streams: a frame is wanted within milliseconds
or not at all (a relayed message that arrives after its heartbeat timeout is
useless), pub/sub pushes with no polling and leaves nothing behind when a node
dies, whereas a stream per node would need trimming, consumer groups and
cleaning up after dead nodes. Pub/sub is at-most-once: a frame published while
the receiver is disconnected is lost. The bus does not hide that; its users
number their frames and treat a gap as the loss of the link (signaling/relay.py).

Two tasks, both owned here: ``bus-sender`` publishes queued frames in order,
in pipelined batches on one connection (so the frames from this node to any
other arrive in the order they were sent), each batch through
``RedisClient.call`` (deadline, retries with back-off; a batch that still
fails is dropped and counted); ``bus-inbox`` holds the subscription,
re-subscribing with back-off after a lost connection, and hands each frame to
the handler. ``close()`` flushes briefly, then cancels and awaits both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from conference.cluster.client import RedisClient
from conference.cluster.keys import bus_key
from conference.cluster.metrics import ClusterMetrics
from conference.cluster.waker import wait_set
from conference.errors import ConferenceError
from conference.ids import NodeId

log = logging.getLogger("parley.cluster")

Frame = dict[str, Any]
"""One bus frame: a JSON object."""
FrameHandler = Callable[[Frame], None]

_BATCH = 256
_QUEUE = 20000
_RECEIVE_WAIT = 1.0
_FIRST_DELAY = 0.05
_MAX_DELAY = 1.0
_SEND_RETRY_FOR = 1.0
_LOST = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError)


class Bus:
    """``start()`` on the running loop; ``send()`` never blocks; ``close()`` is idempotent."""

    def __init__(self, client: RedisClient, node: NodeId,
                 metrics: ClusterMetrics | None = None) -> None:
        self._client = client
        self.node = node
        self._metrics = metrics
        self._handler: FrameHandler | None = None
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue(_QUEUE)
        self._idle = asyncio.Event()
        self._idle.set()
        self.subscribed = asyncio.Event()
        """Set while the inbox subscription is live."""
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def set_handler(self, handler: FrameHandler) -> None:
        """Who receives this node's frames (called on the event loop, must not block)."""
        self._handler = handler

    def start(self) -> None:
        if self._tasks or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._receive_loop(), name="bus-inbox"),
                       loop.create_task(self._send_loop(), name="bus-sender")]

    def send(self, node: NodeId, frame: Frame) -> bool:
        """Queue one frame for ``node``; ``False`` (dropped, counted) when the queue is full
        or the bus is closed."""
        if self._closed:
            return False
        try:
            self._outbox.put_nowait((bus_key(node), json.dumps(frame, separators=(",", ":"))))
        except asyncio.QueueFull:
            self._dropped(1)
            return False
        self._idle.clear()
        return True

    def _dropped(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.bus_dropped.inc(count)

    async def _send_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < _BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())

            async def publish(r: Redis, batch: list[tuple[str, str]] = batch) -> object:
                pipe = r.pipeline(transaction=False)
                for channel, text in batch:
                    pipe.publish(channel, text)
                return await pipe.execute()

            try:
                await self._client.call("bus_publish", publish, retry_for=_SEND_RETRY_FOR)
            except ConferenceError:
                self._dropped(len(batch))
            if self._metrics is not None:
                self._metrics.bus_frames.labels(direction="out").inc(len(batch))
            if self._outbox.empty():
                self._idle.set()

    async def _receive_loop(self) -> None:
        delay = _FIRST_DELAY
        channel = bus_key(self.node)
        while not self._closed:
            pubsub = self._client.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(channel), self._client.config.timeout)
                self.subscribed.set()
                delay = _FIRST_DELAY
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=_RECEIVE_WAIT)
                    if message is not None and message.get("type") == "message":
                        self._deliver(message["data"])
            except _LOST as exc:
                if self.subscribed.is_set():
                    log.warning("bus subscription lost", extra={"error": repr(exc)})
                if self._metrics is not None:
                    self._metrics.redis_errors.labels(op="bus_receive").inc()
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    def _deliver(self, data: str | bytes) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            log.warning("bad bus frame dropped")
            return
        if not isinstance(frame, dict) or self._handler is None:
            return
        if self._metrics is not None:
            self._metrics.bus_frames.labels(direction="in").inc()
        try:
            self._handler(frame)
        except Exception:
            log.exception("bus frame handler failed", extra={"kind": frame.get("k")})

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued frame was published (or dropped)."""
        return await wait_set(self._idle, timeout)

    async def close(self) -> None:
        if self._closed:
            return
        if self._tasks:
            await self.flush(1.0)
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
